"""Capture the gradient an optimizer step really uses: after the defense's noise, before clipping and the step.

Used by :class:`~callbacks.GradientInversionAttack` with ``source="captured"``; ``docs/sources.md``
explains the order of a step and why the capture sits where it does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.amp import GradScaler
from torch.nn.parallel import DistributedDataParallel
from torch.utils.hooks import RemovableHandle

from callbacks.partial_perturbation import PartialPerturbation
from ppp_lightning.gradients import client_gradient

__all__ = ["CapturedStep", "GradientCapture", "MicroBatch", "check_capturable"]


@dataclass(frozen=True)
class MicroBatch:
    """One training batch of a captured step and the RNG state its forward pass starts from.

    Attributes:
        images: ``(n, C, H, W)``, a copy.
        labels: ``(n,)``, a copy.
        rng_state: torch's CPU RNG state and, on CUDA, the device's (``None`` elsewhere).
    """

    images: Tensor
    labels: Tensor
    rng_state: tuple[Tensor, Optional[Tensor]]

    @classmethod
    def of(cls, batch: Any, device: torch.device) -> MicroBatch:
        """Copy a ``(images, labels, ...)`` batch at the start of its training step (reads, never draws, RNG)."""
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(batch[0].detach().clone(), batch[1].detach().clone(), (torch.get_rng_state(), cuda))

    def replay_rng(self, device: torch.device) -> None:
        """Set torch's RNG to this batch's starting state, so a forward pass draws what training drew."""
        cpu, cuda = self.rng_state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


@dataclass(frozen=True)
class CapturedStep:
    """One optimizer step as the client shares it.

    Attributes:
        step: the global step of the update (optimizer steps before it).
        micro_batches: the batches accumulated into the gradient, in order.
        accumulate: the Trainer's ``accumulate_grad_batches`` (Lightning divides each loss by it).
        weights: every parameter before the update, by name (copies).
        gradient: the shared gradient by parameter name, bit for bit what the optimizer step receives
            before the Trainer's gradient clipping; under DDP this rank's own gradient before the all-reduce.
    """

    step: int
    micro_batches: list[MicroBatch]
    accumulate: int
    weights: dict[str, Tensor]
    gradient: dict[str, Tensor]

    @property
    def images(self) -> Tensor:
        """Every captured image, ``(N, C, H, W)``: the victims."""
        return torch.cat([batch.images for batch in self.micro_batches])

    @property
    def labels(self) -> Tensor:
        """Every captured label, ``(N,)``."""
        return torch.cat([batch.labels for batch in self.micro_batches])

    @property
    def sizes(self) -> list[int]:
        """The micro-batches' sizes."""
        return [len(batch.labels) for batch in self.micro_batches]

    @property
    def uniform(self) -> bool:
        """Whether all micro-batches hold as many images (then the attack's model of the loss is exact)."""
        return len(set(self.sizes)) == 1

    def batch_gradient(self) -> dict[str, Tensor]:
        """The captured gradient as the gradient of the mean loss over all captured images.

        Lightning divides each micro-batch's (mean) loss by ``accumulate``, so ``m`` micro-batches of
        equal size accumulate ``m / accumulate`` times the gradient of the mean loss over their
        concatenation, which is what an attack on the whole batch matches. ``m < accumulate`` only
        at an epoch's last step; otherwise this is :attr:`gradient` itself.
        """
        factor = self.accumulate / len(self.micro_batches)
        return self.gradient if factor == 1 else {name: grad * factor for name, grad in self.gradient.items()}

    def load_weights(self, model: nn.Module) -> nn.Module:
        """Give ``model`` (a copy of the trained module) the weights the gradient was computed at."""
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(self.weights[name])
        return model

    def clean_gradient(self, model: nn.Module) -> dict[str, Tensor]:
        """The step's gradient without the defense's perturbation, in :meth:`batch_gradient`'s form.

        Every micro-batch's clean gradient at ``model``'s weights, recomputed from the RNG state its
        training step started from (so PRECODE draws the sample training drew, as long as nothing
        draws random numbers between ``on_train_batch_start`` and the forward pass), averaged.
        Sets torch's RNG state: call under :func:`torch.random.fork_rng`.

        Args:
            model: the module at the captured weights (:meth:`load_weights`), in training mode.
        """
        device = next(model.parameters()).device
        total: dict[str, Tensor] = {}
        for batch in self.micro_batches:
            batch.replay_rng(device)
            for name, grad in client_gradient(model, batch.images, batch.labels).items():
                total[name] = total[name] + grad if name in total else grad
        return {name: grad / len(self.micro_batches) for name, grad in total.items()}


class _LocalGradients:
    """Copies of the gradients the moment ``backward`` has accumulated them, before DDP's reducer reads them."""

    def __init__(self) -> None:
        self.grads: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def install(self, model: nn.Module) -> None:
        """Hook every trainable parameter (hooks of a tensor run in registration order: after the earlier ones)."""
        params = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self._handles = [p.register_post_accumulate_grad_hook(self._keeper(name)) for name, p in params]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def _keeper(self, name: str) -> Callable[[Tensor], None]:
        def keep(param: Tensor) -> None:
            self.grads[name] = param.grad.detach().clone()  # a later micro-batch overwrites: the accumulated one

        return keep


class GradientCapture:
    """Record one optimizer step's micro-batches, weights and shared gradient; training is untouched.

    In one process the gradient is copied in ``on_before_optimizer_step`` (:meth:`finish`): after
    ``backward`` (and a ``PartialPerturbation``'s noise), accumulation and fp16 unscaling, before the
    Trainer's gradient clipping and the step. Under DDP ``.grad`` holds the average by then, so
    :meth:`watch_local` copies each gradient in a post-accumulate-grad hook, which runs before DDP's
    reducer reads it; the hooks are installed when ``backward`` starts, after every callback's
    ``on_before_backward``, so they run after a ``PartialPerturbation``'s hooks on the same tensors
    whatever the callbacks' order.
    """

    def __init__(self) -> None:
        self._batches: Optional[list[MicroBatch]] = None
        self._local: Optional[_LocalGradients] = None

    @property
    def active(self) -> bool:
        """Whether a step is being captured (between :meth:`start` and :meth:`finish`)."""
        return self._batches is not None

    def start(self) -> None:
        """Capture the step that starts now (drops an unfinished one)."""
        self.cancel()
        self._batches = []

    def add(self, batch: Any, device: torch.device) -> None:
        """Record a micro-batch of the step, at its ``on_train_batch_start``."""
        self._batches.append(MicroBatch.of(batch, device))

    def watch_local(self, loss: Tensor, model: nn.Module) -> None:
        """Under DDP: copy this rank's gradients before the all-reduce (call in ``on_before_backward``)."""
        if self._local is None:
            local = self._local = _LocalGradients()
            loss.register_hook(lambda _: local.install(model))

    def finish(self, trainer: pl.Trainer, model: nn.Module) -> Optional[CapturedStep]:
        """The captured step; ``None`` if the fp16 scaler skips the step.

        Call in ``on_before_optimizer_step`` while :attr:`active`.
        """
        scaler = _scaler(trainer)
        if self._local is None:
            gradient = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}
        elif scaler is None:
            gradient = self._local.grads
        else:  # the local copies still carry the fp16 loss scale (a power of two: unscaling is exact)
            gradient = {name: grad / scaler.get_scale() for name, grad in self._local.grads.items()}
        weights = {name: p.detach().clone() for name, p in model.named_parameters()}
        captured = CapturedStep(trainer.global_step, self._batches, trainer.accumulate_grad_batches, weights, gradient)
        self.cancel()
        if scaler is not None and not all(torch.isfinite(grad).all() for grad in gradient.values()):
            return None  # the scaler skips this step: nothing is applied or shared
        return captured

    def cancel(self) -> None:
        """Stop capturing and remove the hooks."""
        if self._local is not None:
            self._local.remove()
        self._batches, self._local = None, None


def check_capturable(trainer: pl.Trainer, defense: Optional[PartialPerturbation]) -> None:
    """Refuse set-ups in which the shared gradient cannot be captured, before any step.

    Raises:
        ValueError: under manual optimization, a multi-process strategy other than DDP, or
            ``PartialPerturbation(clip_norm=...)`` under multi-process DDP.
    """
    if not trainer.lightning_module.automatic_optimization:
        raise ValueError(
            "source='captured' pairs each optimizer step with its batches and needs automatic optimization; "
            "use source='recomputed'"
        )
    if trainer.world_size == 1:
        return
    if not isinstance(trainer.strategy.model, DistributedDataParallel):
        raise ValueError(
            f"source='captured' captures in one process or under DDP, not {type(trainer.strategy).__name__}; "
            "use a DDP strategy or source='recomputed'"
        )
    if defense is not None and not defense.perturbation.separable:
        raise ValueError(
            "source='captured' under DDP cannot see a rank's gradient with PartialPerturbation(clip_norm=...): "
            "the callback perturbs and averages it in one step; use source='recomputed' or clip_norm=None"
        )


def _scaler(trainer: pl.Trainer) -> Optional[GradScaler]:
    """The enabled fp16 loss scaler, if any."""
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    return scaler if scaler is not None and scaler.is_enabled() else None
