"""PartialPerturbation: perturb the gradients a client shares, on a chosen set of layers (PPP)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Optional, Union

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.utilities import move_data_to_device, rank_zero_warn
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from typing_extensions import override

from callbacks.trainer_checks import check_accumulation
from ppp_lightning.defenses.perturbation import GradientPerturbation, Mechanism, PerturbationHooks
from ppp_lightning.defenses.selection import recorded_spans
from ppp_lightning.defenses.spec import DefenseSpec, ResolvedDefense

__all__ = ["PartialPerturbation", "attached_perturbation"]


class PartialPerturbation(pl.Callback):
    """Perturb the gradients of chosen parameters of any LightningModule before they are shared.

    With a PRECODE model and ``layers="before_bottleneck"`` this is PPP; with ``layers="all"`` on a
    model without PRECODE it is the noisy-gradients (or, with ``keep_ratio``, the pruning) baseline.
    The perturbation is :class:`~ppp_lightning.defenses.perturbation.GradientPerturbation` (see there for
    clipping, pruning, ``sigma`` as the noise's standard deviation and ``relative``).

    **When.** Once per optimizer step, on the complete gradient of the step: the hooks are armed only
    for the backward pass of the last micro-batch of ``accumulate_grad_batches``, where they see the
    accumulated ``.grad``, so the noise has the configured variance whatever the accumulation.
    Under manual optimization every backward pass is perturbed.

    **DDP.** A separable perturbation (no ``clip_norm``) runs in post-accumulate-grad hooks on the
    parameter tensors, which fire before DDP's reducer reads each gradient: every rank (client)
    adds its own noise before the all-reduce, so the averaged noise has std ``sigma / sqrt(world)``.
    Ranks draw from generators seeded ``seed + global_rank``. Joint-norm clipping needs the whole
    selected set at once, which per-tensor hooks cannot see before DDP starts reducing buckets;
    with ``clip_norm`` under multi-process DDP the callback therefore turns off DDP's overlapped
    gradient sync, perturbs each rank's complete gradient after ``backward`` and all-reduces
    (averages) all gradients itself. Correct per-client semantics, at the cost of losing the
    overlap of communication with ``backward`` (and, as DDP without ``find_unused_parameters``,
    every rank must produce the same set of gradients). In one process nothing reads the gradients
    during ``backward``, so every perturbation runs on the whole set at once in ``on_after_backward``
    (one pass costs less than a hook per tensor).

    **Precision.** Under fp16 loss scaling the gradients carry the loss scale during ``backward``;
    noise and ``clip_norm`` are multiplied by it, so after unscaling they are in unscaled units.
    bf16 needs no scaling.

    **Order.** backward (perturbation) -> unscale (fp16) -> ``on_before_optimizer_step`` (logging) ->
    Trainer ``gradient_clip_val`` -> optimizer step. Trainer clipping thus acts on the *noisy*
    gradient and shrinks the noise with it; a warning says so at setup. Use ``clip_norm`` to clip
    the clean gradient before the noise, as DP-SGD does.

    **Logs** per step, on the Trainer's logging steps (``log_every_n_steps``; rank 0's values):
    ``perturbation/num_tensors``, ``perturbation/num_elements``, ``perturbation/clean_norm``,
    ``perturbation/noise_norm`` and ``perturbation/snr`` (their ratio) of the selected set.

    **Reuse.** :attr:`spec` (a :class:`~ppp_lightning.defenses.spec.DefenseSpec`) holds the settings;
    code that perturbs a gradient of its own resolves it on its model (``spec.resolve(model,
    example)``) and draws from :meth:`noise_generator`, a copy of this rank's current noise stream.
    Positions are traced on ``pl_module.example_input_array``, else on a zero input of the
    datamodule's ``input_shape``; without either, the forward order is recorded during the first
    real training step (so a LightningModule without ``forward`` works too) and the selection is
    resolved before that step's backward pass.

    The generator state of every rank is saved in checkpoints (gathered across ranks, so
    ``state_dict`` must be called on all ranks, as Lightning does), and a resumed run continues the
    same noise stream. Hooks are removed on teardown; a parameter can carry hooks of one callback
    only (a second one selecting it is refused); if the model's parameter objects are replaced
    during training the hooks are moved to the new objects of the same names.

    Args:
        layers: ``before_bottleneck``, ``bottleneck``, ``after_bottleneck``, ``all``, or parameter-name
            glob patterns (see :func:`~ppp_lightning.defenses.selection.select_parameters`).
        include_encoder: whether the PRECODE encoder is perturbed with a positional selection
            (default ``True``: an unperturbed encoder gradient reveals the features).
        mechanism: ``gaussian``, ``laplace`` or ``none`` (clipping and pruning only).
        sigma: standard deviation of the noise per gradient entry.
        relative: scale ``sigma`` by each parameter tensor's gradient RMS.
        clip_norm: clip the selected gradients' joint L2 norm to this before the noise.
        keep_ratio: keep this fraction of each tensor's largest-magnitude entries (pruning).
        seed: seed of the noise generator (rank ``r`` uses ``seed + r``).

    Raises:
        ValueError: on an invalid option, naming the value and what is allowed.
    """

    def __init__(
        self,
        layers: Union[str, list[str]] = "before_bottleneck",
        include_encoder: bool = True,
        mechanism: Mechanism = "gaussian",
        sigma: float = 0.0,
        relative: bool = False,
        clip_norm: Optional[float] = None,
        keep_ratio: Optional[float] = None,
        seed: int = 0,
    ) -> None:
        self.spec = DefenseSpec(layers if isinstance(layers, str) else tuple(layers), include_encoder, mechanism, sigma, relative, clip_norm, keep_ratio)
        self.seed = int(seed)
        self.resolved: Optional[ResolvedDefense] = None
        self.generator: Optional[torch.Generator] = None
        self._hooks: Optional[PerturbationHooks] = None
        self._stats: Optional[dict[str, Tensor]] = None
        self._saved: Optional[dict[str, Any]] = None
        self._ddp: Optional[DistributedDataParallel] = None
        self._recording: Optional[ExitStack] = None
        self._spans: dict[str, list[int]] = {}
        self._rank = 0
        self._distributed = False
        self._batch_idx = 0

    @property
    def perturbation(self) -> GradientPerturbation:
        """The perturbation the spec applies."""
        return self.spec.perturbation

    @property
    def parameter_names(self) -> list[str]:
        """The perturbed parameters' names, once resolved (empty before)."""
        return [] if self.resolved is None else list(self.resolved.parameter_names)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=self.spec.layers, seed=self.seed)

    def noise_generator(self) -> Optional[torch.Generator]:
        """A copy of this rank's noise generator in its current state (``None`` before setup).

        Code that recomputes a shared gradient (the attack callback) draws from the copy, so the
        training run's noise stream is left alone.
        """
        if self.generator is None:
            return None
        copy = torch.Generator(self.generator.device)
        copy.set_state(self.generator.get_state())
        return copy

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        check_accumulation(trainer)
        self._cleanup()
        self.resolved = None
        self.spec.check(pl_module)
        device = trainer.strategy.root_device
        self._rank = trainer.global_rank
        self._distributed = trainer.world_size > 1
        self.generator = torch.Generator(device=device).manual_seed(self.seed + self._rank)
        self._restore()
        example = self._example_input(trainer, pl_module)
        if not self.spec.needs_example_input or example is not None:
            self.resolved = self.spec.resolve(pl_module, example)
        if trainer.gradient_clip_val:
            rank_zero_warn(
                f"PartialPerturbation: Trainer gradient clipping (gradient_clip_val={trainer.gradient_clip_val}) runs "
                "after the perturbation and rescales the noise with the gradient; use clip_norm to clip before it."
            )

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch_idx = batch_idx
        if self.resolved is None and self._recording is None:
            # No example input: record the forward order of this real training step instead.
            self._recording = ExitStack()
            self._spans = self._recording.enter_context(recorded_spans(pl_module))
        elif self.resolved is not None:
            self._attach(pl_module)
        if not self.perturbation.separable and isinstance(trainer.strategy.model, DistributedDataParallel):
            self._ddp = trainer.strategy.model
            self._ddp.require_backward_grad_sync = False  # on_after_backward all-reduces after perturbing

    @override
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        if self._recording is not None:
            self._recording.close()
            self._recording = None
            self.resolved = self.spec.resolve(pl_module, spans=self._spans)
            self._attach(pl_module)
        if self._hooks is None or (pl_module.automatic_optimization and self._accumulating(trainer)):
            return
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self._hooks.arm(scaler.get_scale() if scaler is not None and scaler.is_enabled() else 1.0)

    def _refuse_non_finite(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Stop the run: a perturbation must never share a non-finite gradient, nor hide it in noise."""
        params = dict(pl_module.named_parameters())
        name = next(n for n in self.parameter_names if params[n].grad is not None and not torch.isfinite(params[n].grad).all())
        raise FloatingPointError(
            f"PartialPerturbation: the gradient of {name!r} is non-finite at global step {trainer.global_step}; "
            "nothing is shared or applied (check the data and the learning rate)"
        )

    def _accumulating(self, trainer: pl.Trainer) -> bool:
        """Whether this backward pass is not the last micro-batch of an optimizer step."""
        done = (self._batch_idx + 1) % trainer.accumulate_grad_batches == 0
        return not (done or self._batch_idx + 1 >= trainer.num_training_batches)

    @override
    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stats = self._hooks.finish() if self._hooks is not None else None
        if stats is None:
            return
        if self._hooks.scale == 1.0 and not torch.isfinite(stats["clean_norm"]):
            # (Under fp16 loss scaling an inf gradient is the scaler's signal to skip the step.)
            self._refuse_non_finite(trainer, pl_module)
        self._stats = stats
        if self._ddp is not None:
            _all_reduce_mean([p.grad for p in pl_module.parameters() if p.grad is not None])

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        stats, self._stats = self._stats, None
        # Only on steps that reach the logger (the global step is incremented after this hook):
        # logging costs more than perturbing a small model.
        every = trainer.log_every_n_steps
        if stats is None or every < 1 or (trainer.global_step + 1) % every:
            return
        metrics = {f"perturbation/{key}": value.float() for key, value in stats.items()}
        metrics["perturbation/snr"] = stats["clean_norm"] / stats["noise_norm"].clamp_min(1e-12)
        pl_module.log_dict(metrics, on_step=True, on_epoch=False)

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._cleanup()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._cleanup()

    @override
    def state_dict(self) -> dict[str, Any]:
        if self.generator is None:
            return {"seed": self.seed}
        states = [self.generator.get_state()]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, self.generator.get_state())
        return {"seed": self.seed, "generator_states": states}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved = state_dict
        if self.generator is not None:
            self._restore()

    def _restore(self) -> None:
        """Continue this rank's saved noise stream (if a checkpoint was loaded)."""
        if self._saved is None:
            return
        states = self._saved.get("generator_states", [])
        try:
            self.generator.set_state(states[self._rank].cpu())
        except (IndexError, RuntimeError) as error:
            rank_zero_warn(f"PartialPerturbation: no usable saved noise state for rank {self._rank} ({error}); reseeded.")
        self._saved = None

    def _attach(self, pl_module: pl.LightningModule) -> None:
        """Install the hooks, or move them if the model's parameter objects were replaced."""
        if self._hooks is not None and self._hooks.matches(pl_module):
            return
        if self._hooks is not None:
            self._hooks.remove()
        # Tensor hooks only where other processes read gradients during backward (DDP's reducer).
        self._hooks = PerturbationHooks(
            pl_module, self.parameter_names, self.perturbation, self.generator, during_backward=self._distributed
        )

    @staticmethod
    def _example_input(trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
        example = pl_module.example_input_array
        shape = getattr(trainer.datamodule, "input_shape", None)
        if example is None and shape is not None:
            example = torch.zeros(1, *shape)
        return None if example is None else move_data_to_device(example, pl_module.device)

    def _cleanup(self) -> None:
        if self._recording is not None:
            self._recording.close()
        if self._hooks is not None:
            self._hooks.remove()
        if self._ddp is not None:
            self._ddp.require_backward_grad_sync = True
        self._hooks, self._ddp, self._stats, self._recording = None, None, None, None


def attached_perturbation(trainer: pl.Trainer) -> Optional[PartialPerturbation]:
    """The ``PartialPerturbation`` attached to ``trainer`` (the defense audits and attacks take), or ``None``."""
    return next((callback for callback in trainer.callbacks if isinstance(callback, PartialPerturbation)), None)


def _all_reduce_mean(grads: list[Tensor]) -> None:
    """Average ``grads`` over all ranks in place with one all-reduce."""
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for grad, chunk in zip(grads, flat.split([g.numel() for g in grads])):
        grad.copy_(chunk.view_as(grad))
