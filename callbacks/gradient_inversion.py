"""GradientInversionAttack: periodically invert the gradient a client would share, score and log it."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Optional, get_args

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from typing_extensions import override

from callbacks.gradient_capture import CapturedStep, GradientCapture, check_capturable
from callbacks.isolation import for_this_run, isolated
from callbacks.partial_perturbation import PartialPerturbation, attached_perturbation
from callbacks.trainer_checks import check_accumulation
from ppp_lightning.assessment.assess import assess
from ppp_lightning.assessment.metrics import LEGIBLE_NCC, ReconstructionMetrics
from ppp_lightning.assessment.record import Convergence
from ppp_lightning.assessment.reidentification import POOL_SIZE, Reidentifier, check_pool_size
from ppp_lightning.assessment.reporting import Reporter
from ppp_lightning.attacks import AttackName, AttackSpec, Target
from ppp_lightning.defenses.precode import PRECODE
from ppp_lightning.gradients import client_gradient
from ppp_lightning.lightning.logger_sinks import run_directory, sinks_for
from ppp_lightning.victims import draw_victims, floor_image

__all__ = ["GradientInversionAttack"]

Victims = Literal["batch", "fixed"]
Source = Literal["recomputed", "captured"]
VICTIMS, SOURCES = get_args(Victims), get_args(Source)


@dataclass(frozen=True)
class _Victims:
    """What one attack inverts: the model at the gradient's weights (a copy), the victims and their gradients."""

    model: nn.Module
    images: Tensor
    labels: Tensor
    shared: dict[str, Tensor]
    clean: Optional[dict[str, Tensor]]  # the control's gradient (``None``: not needed)


class GradientInversionAttack(pl.Callback):
    """Attack the gradient a client shares during training and log the reconstruction.

    **Source.** ``source="recomputed"`` (default) recomputes the gradient a client would share for
    ``num_images`` victims: the conservative question, could an individual image leak?
    ``source="captured"`` attacks the gradient an optimizer step of this run really used, on the
    whole batch it came from: the realistic question, what leaks from this run's updates at its
    batch size? ``docs/sources.md`` says when to use which.

    **When.** Every ``every_n_steps`` optimizer steps, at the end of every ``every_n_epochs``-th
    epoch, once before training (first batch) and once at its end; never twice at the same step.
    Recomputed: at the start of the batch (on the gradient of that batch at the current weights);
    epoch-end and end-of-training attacks reuse the last batch seen. Captured: on the scheduled
    step's update, once it is applied; epoch-end and end-of-training attacks take the last update,
    so with them on every step's gradient and weights are copied (twice the model's size).

    **Recomputed victims and gradient.** ``num_images`` images of the current training batch
    (``victims="batch"``; batches are ``(images, labels, ...)``), or a fixed set drawn once with
    ``victim_seed`` from the datamodule's ``train_set`` (:func:`~ppp_lightning.victims.draw_victims`).
    The gradient is :func:`~ppp_lightning.gradients.client_gradient` on a copy of the LightningModule
    (its ``forward`` gives the logits; loss cross-entropy + PRECODE's KL) in the model's training
    mode: PRECODE samples as in training and an attached ``PartialPerturbation``'s
    :class:`~ppp_lightning.defenses.spec.DefenseSpec` perturbs the same parameters with the same code,
    drawing from a copy of its noise generator.

    **Captured victims and gradient** (:class:`~callbacks.gradient_capture.GradientCapture`). The
    gradient the step's optimizer receives, copied bit for bit with the weights it was computed at
    and its batches. A step's order: ``backward`` (an attached ``PartialPerturbation`` adds its
    noise) -> accumulation -> fp16 unscaling -> **capture** (``on_before_optimizer_step``) ->
    Trainer ``gradient_clip_val`` -> optimizer step: the server never sees the Trainer's clipping.
    Under DDP the capture is rank zero's own gradient before the all-reduce (what that client
    sends). The victims are all images of the step's ``accumulate_grad_batches`` micro-batches:
    Lightning divides each micro-batch's loss by ``accumulate_grad_batches``, so the accumulated
    gradient is the mean-loss gradient of their concatenation when the micro-batches are equally
    large (a step with unequal ones is skipped with a warning) and the model has no BatchNorm
    (whose statistics are per micro-batch). The control recomputes each micro-batch's gradient at
    the captured weights from the RNG state its step started with (the same PRECODE sample),
    without the defense's noise. Needs automatic optimization and one process or DDP.

    **Training is unchanged**: the attack runs on copies, under ``torch.random.fork_rng``, so
    weights, gradients, BatchNorm statistics, modes, RNG streams and the optimizer are untouched and
    a run's weights are bit-identical with and without the callback. Only global rank zero attacks.

    **Logs** under ``name`` (default ``attack``; give several attack callbacks distinct names)
    through a :class:`~ppp_lightning.assessment.reporting.Reporter`. Scores:
    :class:`~ppp_lightning.assessment.metrics.ReconstructionMetrics` with the datamodule's ``mean``/``std`` and
    the mean training image (:func:`~ppp_lightning.victims.floor_image`) as the trivial floor.
    Always a PNG sheet (ground truth above reconstruction) per attack and one line per attack in
    ``metrics.jsonl`` in ``<run dir>/<name>``, where the run dir is the W&B run's files folder
    (synced with it), the logger's ``log_dir`` or the Trainer's ``default_root_dir``. With
    ``WandbLogger`` also the sheet as ``<name>/reconstruction``, a table ``<name>/victims`` (one row
    per victim) and the scalars ``<name>/psnr``, ``/ssim``, ``/ncc``, ``/success_rate`` and
    ``/floor_psnr`` at the global step; with TensorBoard the sheet and the scalars; with any other
    logger the scalars. Under ``fast_dev_run`` attacks run 2 iterations (a smoke test), and the
    record says so. The callback's state (the last attacked step) is checkpointed, so a resumed
    run neither repeats nor loses attacks.

    Args:
        attack: a registered attack (:data:`~ppp_lightning.attacks.ATTACKS`; ``docs/architecture.md``
            tables what each can do and needs); an attack that needs a clean gradient
            (``clean_layer``) without a ``defense`` in ``attack_kwargs`` takes the attached
            ``PartialPerturbation``'s.
        iterations: optimisation steps of the attack; ``None`` for its default.
        lr: the attack's learning rate; ``None`` for its default (0.1 for Adam, 1 for L-BFGS).
        tv_weight: total-variation weight (the attacks but ``dlg`` and ``analytic``); ``None`` for the default.
        restarts: restarts of the attack (best by matching loss); ``None`` for the default (1).
        include: glob patterns of the gradients to match (``None``: all shared).
        ignore: glob patterns of gradients not to match.
        target: targeted preset against PRECODE: ``before_bottleneck`` or ``before_decoder``.
        attack_kwargs: further options of the attack (e.g. ``{"optimize_labels": true}``).
        every_n_steps: attack every this many optimizer steps; ``None`` to not.
        every_n_epochs: attack at the end of every this many epochs; ``None`` to not.
        before_training: attack once at the first training batch.
        after_training: attack once when training ends.
        num_images: victims per recomputed attack (the batch size the attacked gradient is computed on).
        victims: recomputed from ``batch`` (the current training batch) or ``fixed`` (a fixed training set).
        victim_seed: seed that draws the fixed victims.
        source: ``recomputed`` (a gradient recomputed for ``num_images`` victims) or ``captured``
            (the gradient an optimizer step used, on its whole batch).
        known_labels: give the attack the victims' labels; ``False`` recovers them from the gradient.
        success_metric: metric that decides success: ``psnr``, ``ssim``, ``mse`` or ``ncc``.
        success_threshold: the value at which a reconstruction succeeds (the default, channel-aware
            ``ncc >= 0.26``, is calibrated: ``docs/calibration.md``); with ``pool_size`` the victim
            must also be identified for its reconstruction to count as reconstructed.
        control: also attack, at the same step and with the same budget, the same victims' gradient
            without the attached ``PartialPerturbation``'s noise (the positive control; captured: the
            step's clean gradient, recomputed); logs ``<name>/control_reconstructed_rate`` (and
            ``control_identified_rate``), adds a control row to the sheet, and a verdict of
            "protected" needs it to leak (else "inconclusive").
        pool_size: identify each victim among this many candidates, itself and same-class training
            images (``K``, chance ``1/K``; logs ``<name>/identified_rate`` and its binomial p-value;
            identification above chance is a leak); ``None`` to skip, and then no verdict reads
            "protected".
        progress: show the attack's own progress bar (optimisation attacks).
        name: prefix of the logged keys and folder in the run directory for PNGs and JSON.

    Raises:
        ValueError: on an unknown attack, target, victim source, gradient source or metric, a
            non-positive count, an option the chosen attack does not take (e.g. ``iterations`` with
            ``analytic``), ``analytic`` or ``feature_inversion`` with more than one image, attack
            settings the attack refuses, an attack that picks among candidates (``linkage``: the
            audit's), or ``num_images``/``victims`` changed with ``captured``; at
            setup, ``clean_layer`` with neither a ``defense`` nor an attached ``PartialPerturbation``;
            when training starts, a captured set-up that cannot be captured
            (:func:`~callbacks.gradient_capture.check_capturable`); ``num_images`` above the batch
            size with ``victims='batch'``: at setup from the datamodule's ``batch_size``, else at the
            first batch (a plain ``DataLoader``).
    """

    def __init__(
        self,
        attack: AttackName = "inverting",
        iterations: Optional[int] = None,
        lr: Optional[float] = None,
        tv_weight: Optional[float] = None,
        restarts: Optional[int] = None,
        include: Optional[list[str]] = None,
        ignore: Optional[list[str]] = None,
        target: Optional[Target] = None,
        attack_kwargs: Optional[dict[str, Any]] = None,
        every_n_steps: Optional[int] = None,
        every_n_epochs: Optional[int] = None,
        before_training: bool = True,
        after_training: bool = True,
        num_images: int = 1,
        victims: Victims = "batch",
        victim_seed: int = 0,
        source: Source = "recomputed",
        known_labels: bool = True,
        success_metric: Literal["psnr", "ssim", "mse", "ncc"] = "ncc",
        success_threshold: float = LEGIBLE_NCC,
        control: bool = False,
        pool_size: Optional[int] = POOL_SIZE,
        progress: bool = False,
        name: str = "attack",
    ) -> None:
        if victims not in VICTIMS:
            raise ValueError(f"victims={victims!r}; allowed: {', '.join(VICTIMS)}")
        if source not in SOURCES:
            raise ValueError(f"source={source!r}; allowed: {', '.join(SOURCES)}")
        if source == "captured" and (num_images != 1 or victims != "batch"):
            raise ValueError(
                f"num_images={num_images}, victims={victims!r} with source='captured', which attacks the whole "
                "captured batch; allowed: the defaults (1, 'batch'), or source='recomputed'"
            )
        for option, value in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if value is not None and value < 1:
                raise ValueError(f"{option}={value}; allowed: None or >= 1")
        if pool_size is not None:
            check_pool_size(pool_size, "pool_size")
        given = {"iterations": iterations, "lr": lr, "tv_weight": tv_weight, "restarts": restarts}
        given.update(include=include, ignore=ignore, target=target, progress=progress or None)
        settings = {key: value for key, value in given.items() if value is not None}
        self.spec = AttackSpec(attack, {**settings, **(attack_kwargs or {})})
        self.spec.refuse_candidates("GradientInversionAttack")
        if num_images < 1 or (self.spec.capabilities.one_image and num_images != 1):
            raise ValueError(f"num_images={num_images}; allowed: >= 1 (exactly 1 for attack={attack!r})")
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.before_training = before_training
        self.after_training = after_training
        self.num_images = num_images
        self.victims = victims
        self.victim_seed = victim_seed
        self.source = source
        self.known_labels = known_labels
        self.metrics = ReconstructionMetrics(success_metric=success_metric, success_threshold=success_threshold)
        self.control = control
        self.pool_size = pool_size
        self.reidentifier: Optional[Reidentifier] = None
        self.name = name
        self.reporter: Optional[Reporter] = None
        self.last_step: Optional[int] = None
        self._victims: Optional[tuple[Tensor, Tensor]] = None
        self._floor: Optional[Tensor] = None
        self._batch_unchecked = False  # num_images is checked at the first batch when the datamodule gives no size
        self._capture = GradientCapture()
        self._captured: Optional[CapturedStep] = None
        self._event: Optional[str] = None  # the scheduled attack on the step being captured

    @property
    def last_capture(self) -> Optional[CapturedStep]:
        """The latest captured step (``source="captured"``, global rank zero; ``None`` before one)."""
        return self._captured

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        check_accumulation(trainer)
        self._know_the_defense(trainer)
        data = trainer.datamodule
        mean, std = getattr(data, "mean", (0.0,)), getattr(data, "std", (1.0,))
        one_channel = getattr(data, "one_channel", False)
        rule = self.metrics.success_metric, self.metrics.success_threshold
        self.metrics = ReconstructionMetrics(mean, std, *rule, one_channel=one_channel)
        self._check_batch_size(data, trainer.accumulate_grad_batches)
        train_set = getattr(data, "train_set", None)  # the datamodule is set up before callbacks
        if train_set is not None and self.pool_size is not None:
            self.reidentifier = Reidentifier(train_set, mean, std, one_channel, self.pool_size, self.victim_seed)
        if self.victims == "fixed" and train_set is None:
            raise ValueError("victims='fixed' needs a datamodule with a train_set; use victims='batch'")
        self._floor = None if train_set is None else floor_image(train_set)
        if self.victims == "fixed":
            self._victims = draw_victims(train_set, self.num_images, self.victim_seed)

    def _know_the_defense(self, trainer: pl.Trainer) -> None:
        """Give an attack that needs a clean gradient the attached defense's settings unless it was given one."""
        if not self.spec.capabilities.needs_clean_gradient or self.spec.settings.get("defense") is not None:
            return
        defense = attached_perturbation(trainer)
        if defense is None:
            raise ValueError(
                f"attack={self.spec.name!r} needs the defense it attacks: attach a PartialPerturbation callback or "
                "pass attack_kwargs={'defense': {...}} (DefenseSpec's options, e.g. {'layers': 'before_bottleneck'})"
            )
        self.spec = self.spec.replace(defense=defense.spec.to_dict())

    def _check_batch_size(self, data: Any, accumulate: int) -> None:
        batch_size = getattr(data, "batch_size", None)
        self._batch_unchecked = batch_size is None
        if batch_size is None:
            return
        images = batch_size * accumulate
        if self.source == "captured" and self.spec.capabilities.one_image and images != 1:
            raise ValueError(
                f"attack={self.spec.name!r} recovers one image, but source='captured' attacks {images} "
                f"(batch_size={batch_size} x accumulate_grad_batches={accumulate}); allowed: batch_size=1 and "
                "accumulate_grad_batches=1, or source='recomputed'"
            )
        self._check_num_images(batch_size)

    def _check_num_images(self, batch_size: int) -> None:
        """Refuse more recomputed victims from the batch than a training batch holds (never attack fewer)."""
        if self.source == "recomputed" and self.victims == "batch" and self.num_images > batch_size:
            raise ValueError(
                f"num_images={self.num_images} but the training batches hold {batch_size} images; "
                f"allowed: num_images <= batch_size, or victims='fixed'"
            )

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.source == "captured":
            check_capturable(trainer, attached_perturbation(trainer))
        folder = run_directory(trainer.loggers, trainer.log_dir or trainer.default_root_dir) / self.name
        self.reporter = Reporter(folder, self.name, self.metrics.mean, self.metrics.std, sinks_for(trainer.loggers))

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.source == "captured":
            self._capture_batch(trainer, pl_module, batch, batch_idx)
            return
        if self._batch_unchecked:  # a plain DataLoader: its first batch gives the size
            self._batch_unchecked = False
            self._check_num_images(len(batch[0]))
        if self.victims == "batch":
            self._victims = batch[0][: self.num_images].detach().clone(), batch[1][: self.num_images].detach().clone()
        event = self._scheduled(trainer)
        if event is not None:
            self._attack(trainer, pl_module, event)

    def _scheduled(self, trainer: pl.Trainer) -> Optional[str]:
        """The event of a step attack due at the current step, if any."""
        step = trainer.global_step
        if self.before_training and self.last_step is None:
            return "before_training"
        if self.every_n_steps and step > 0 and step % self.every_n_steps == 0:
            return "step"
        return None

    def _capture_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if not trainer.is_global_zero:
            return
        if batch_idx % trainer.accumulate_grad_batches == 0:  # a step's first micro-batch (as Lightning zeroes)
            self._event = self._scheduled(trainer)
            if self._event is not None or self.every_n_epochs or self.after_training:
                self._capture.start()
            else:
                self._capture.cancel()
        if self._capture.active:
            self._capture.add(batch, pl_module.device)

    @override
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        if self._capture.active and isinstance(trainer.strategy.model, DistributedDataParallel):
            self._capture.watch_local(loss, pl_module)

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._capture.active:
            self._captured = self._capture.finish(trainer, pl_module)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._event is not None and not self._capture.active:  # the scheduled step is done
            event, self._event = self._event, None
            self._attack(trainer, pl_module, event)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._attack(trainer, pl_module, "epoch")

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.after_training:
            self._attack(trainer, pl_module, "after_training")

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._capture.cancel()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._capture.cancel()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_step = state_dict.get("last_step")

    def _attack(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: str) -> None:
        """Attack the last captured step, or the current victims' recomputed gradient."""
        if self.source == "recomputed":
            if self._victims is not None:
                victims = partial(self._recomputed, trainer, pl_module)
                self._run(trainer, pl_module, trainer.global_step, event, victims)
            return
        captured = self._captured
        if captured is None:
            return
        if not captured.uniform:
            rank_zero_warn(
                f"GradientInversionAttack: step {captured.step} is not attacked: its micro-batches hold "
                f"{captured.sizes} images, and only equal ones accumulate the mean loss of their concatenation"
            )
            return
        self._run(trainer, pl_module, captured.step, event, partial(self._from_capture, trainer, pl_module, captured))

    def _recomputed(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> _Victims:
        images, labels = (t.to(pl_module.device) for t in self._victims)
        model = _copy(trainer, pl_module)
        defense = attached_perturbation(trainer)
        resolved = None if defense is None else defense.spec.resolve(model, images)
        generator = None if defense is None else defense.noise_generator()
        clean = client_gradient(model, images, labels)
        shared = clean if resolved is None else resolved.apply(clean, generator)
        return _Victims(model, images, labels, shared, clean)

    def _from_capture(self, trainer: pl.Trainer, pl_module: pl.LightningModule, captured: CapturedStep) -> _Victims:
        model = captured.load_weights(_copy(trainer, pl_module))
        clean = captured.clean_gradient(model) if self.control else None
        return _Victims(model, captured.images, captured.labels, captured.batch_gradient(), clean)

    @rank_zero_only
    def _run(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int, event: str, victims: Callable[[], _Victims]
    ) -> None:
        """Attack the gradient ``victims()`` makes (on copies, under forked RNG), score, report."""
        if self.reporter is None or self.last_step == step:
            return
        self.last_step = step
        spec = for_this_run(self.spec, trainer)
        started = time.perf_counter()
        with isolated(pl_module.device):
            target = victims()
            _check_finite(target.shared, step)
            # the control: the same victims, step, PRECODE sample and attack, without the defense's noise
            gradients = [target.shared, target.clean] if self.control else [target.shared]
            attack = spec.build(self.metrics.mean, self.metrics.std)
            known = [target.labels] * len(gradients) if self.known_labels else None
            results = attack.run(target.model, gradients, known, tuple(target.images.shape))
        images, labels = target.images, target.labels
        control = results[1] if self.control else None
        floor = None if self._floor is None else self._floor.to(images)
        assessed = assess(self.metrics, results[0].images, images, labels, floor, self.reidentifier,
                          None if control is None else control.images, None, Convergence.of(results[:1]),
                          None if control is None else Convergence.of([control]))  # fmt: skip
        context = {
            "global_step": step,
            "epoch": trainer.current_epoch,
            "event": event,
            "source": self.source,
            "attack": spec.name,
            "settings": {k: v for k, v in spec.settings.items() if k != "progress"},
            "defense": _defense_settings(pl_module, attached_perturbation(trainer)),
            "num_images": len(labels),
            "labels": labels.tolist(),
            "attack_labels": results[0].labels.tolist(),
            "matching_loss": results[0].loss,
            "seconds": time.perf_counter() - started,
        }
        sheet = f"step{step:07d}.png"
        record = assessed.record(context).to_dict()
        self.reporter.report(sheet, images, assessed.reconstructions, record, step,
                             control=assessed.control_reconstructions)  # fmt: skip


def _copy(trainer: pl.Trainer, pl_module: pl.LightningModule) -> pl.LightningModule:
    return copy.deepcopy(pl_module, memo={id(trainer): None})  # the copy holds no Trainer


def _defense_settings(pl_module: pl.LightningModule, defense: Optional[PartialPerturbation]) -> dict[str, Any]:
    precode = [m.extra_repr() for m in pl_module.modules() if isinstance(m, PRECODE)]
    return {"precode": precode, "partial_perturbation": None if defense is None else defense.spec.to_dict()}


def _check_finite(gradient: dict[str, Tensor], step: int) -> None:
    """Refuse a non-finite victim gradient with a clear message (not a SciPy error later)."""
    for name, grad in gradient.items():
        if not torch.isfinite(grad).all():
            bad = int((~torch.isfinite(grad)).sum())
            raise ValueError(
                f"GradientInversionAttack: the victims' gradient at step {step} has {bad} non-finite values in "
                f"{name!r} (of {math.prod(grad.shape)}); the model or the victims' data hold NaN or inf"
            )
