"""GradientInversionAttack: periodically invert the gradient a client would share, score and log it."""

from __future__ import annotations

import copy
import time
from typing import Any, Literal, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

from callbacks.partial_perturbation import PartialPerturbation
from ppp_lightning.attacks import ATTACKS, TARGETS, build_attack
from ppp_lightning.gradients import client_gradient
from ppp_lightning.metrics import ReconstructionMetrics
from ppp_lightning.precode import PRECODE
from ppp_lightning.reporting import report_reconstruction, run_directory
from ppp_lightning.selection import select_parameters

__all__ = ["GradientInversionAttack"]

VICTIMS = ("batch", "fixed")
BOXED = ("inverting", "adaptive")  # attacks that take the data's normalisation for their box
FLOOR_IMAGES = 1000  # training images averaged into the trivial reconstruction
SMOKE_ITERATIONS = 2  # under fast_dev_run, as Lightning runs one batch of everything


class GradientInversionAttack(pl.Callback):
    """Attack the gradient a client would share during training and log the reconstruction.

    **When.** Every ``every_n_steps`` optimizer steps (at the start of the batch, i.e. on the
    gradient of that batch at the current weights), at the end of every ``every_n_epochs``-th
    epoch, once before training (first batch) and once at its end; never twice at the same step.

    **Victims.** ``num_images`` images of the current training batch (``victims="batch"``; batches
    are ``(images, labels, ...)``; epoch-end and end-of-training attacks reuse the last batch seen),
    or a fixed set drawn once with ``victim_seed`` from the datamodule's ``train_set``.

    **Gradient.** :func:`~ppp_lightning.gradients.client_gradient` on a copy of the LightningModule
    (its ``forward`` gives the logits; loss cross-entropy + PRECODE's KL) in the model's training
    mode: PRECODE samples as in training and an attached ``PartialPerturbation`` perturbs the same
    parameters with the same code, drawing from a copy of its generator.

    **Training is unchanged**: the attack runs on the copy, under ``torch.random.fork_rng``, so
    weights, gradients, BatchNorm statistics, modes, RNG streams and the optimizer are untouched and
    a run's weights are bit-identical with and without the callback. Only global rank zero attacks.

    **Logs** under ``name`` (default ``attack``; give several attack callbacks distinct names).
    Scores: :class:`~ppp_lightning.metrics.ReconstructionMetrics` with the datamodule's
    ``mean``/``std`` and the mean of up to 1,000 training images as the trivial floor. Always a PNG
    grid (ground truth above reconstruction) per attack and ``metrics.json`` (every attack so far)
    in ``<run dir>/<name>``, where the run dir is the W&B run's files folder (synced with it), the
    logger's ``log_dir`` or the Trainer's ``default_root_dir``. With ``WandbLogger`` also the grid
    as ``<name>/reconstruction``, a table ``<name>/victims`` (one row per victim) and the scalars
    ``<name>/psnr``, ``/ssim``, ``/ncc``, ``/success_rate`` and ``/floor_psnr`` at the global step;
    with TensorBoard the grid and the scalars; with any other logger the scalars. Under
    ``fast_dev_run`` attacks run 2 iterations (a smoke test).

    Args:
        attack: a registered attack: ``inverting``, ``dlg``, ``adaptive`` or ``analytic``.
        iterations: optimisation steps of the attack.
        lr: the attack's learning rate; ``None`` for its default (0.1 for Adam, 1 for L-BFGS).
        tv_weight: total-variation weight (``inverting``, ``adaptive``).
        restarts: restarts of the attack (best by matching loss).
        include: glob patterns of the gradients to match (``None``: all shared).
        ignore: glob patterns of gradients not to match.
        target: targeted preset against PRECODE: ``before_bottleneck`` or ``before_decoder``.
        attack_kwargs: further init arguments of the attack (e.g. ``{"optimize_labels": true}``).
        every_n_steps: attack every this many optimizer steps; ``None`` to not.
        every_n_epochs: attack at the end of every this many epochs; ``None`` to not.
        before_training: attack once at the first training batch.
        after_training: attack once when training ends.
        num_images: victims per attack (the batch size the attacked gradient is computed on).
        victims: ``batch`` (from the current training batch) or ``fixed`` (a fixed training set).
        victim_seed: seed that draws the fixed victims.
        known_labels: give the attack the victims' labels; ``False`` recovers them from the gradient.
        success_metric: metric that decides success: ``psnr``, ``ssim``, ``mse`` or ``ncc``.
        success_threshold: the value at which a reconstruction succeeds.
        progress: show the attack's own progress bar.
        name: prefix of the logged keys and folder in the run directory for PNGs and JSON.

    Raises:
        ValueError: on an unknown attack, target, victim source or metric, a non-positive count,
            ``analytic`` with more than one image, or attack settings the attack refuses.
    """

    def __init__(
        self,
        attack: Literal["inverting", "dlg", "adaptive", "analytic"] = "inverting",
        iterations: int = 200,
        lr: Optional[float] = None,
        tv_weight: float = 1e-2,
        restarts: int = 1,
        include: Optional[list[str]] = None,
        ignore: Optional[list[str]] = None,
        target: Optional[Literal["before_bottleneck", "before_decoder"]] = None,
        attack_kwargs: Optional[dict[str, Any]] = None,
        every_n_steps: Optional[int] = None,
        every_n_epochs: Optional[int] = None,
        before_training: bool = True,
        after_training: bool = True,
        num_images: int = 1,
        victims: Literal["batch", "fixed"] = "batch",
        victim_seed: int = 0,
        known_labels: bool = True,
        success_metric: Literal["psnr", "ssim", "mse", "ncc"] = "ncc",
        success_threshold: float = 0.85,
        progress: bool = False,
        name: str = "attack",
    ) -> None:
        if attack not in ATTACKS:
            raise ValueError(f"attack={attack!r}; allowed: {', '.join(ATTACKS)}")
        if target is not None and target not in TARGETS:
            raise ValueError(f"target={target!r}; allowed: None, {', '.join(TARGETS)}")
        if victims not in VICTIMS:
            raise ValueError(f"victims={victims!r}; allowed: {', '.join(VICTIMS)}")
        for option, value in (("every_n_steps", every_n_steps), ("every_n_epochs", every_n_epochs)):
            if value is not None and value < 1:
                raise ValueError(f"{option}={value}; allowed: None or >= 1")
        if num_images < 1 or (attack == "analytic" and num_images != 1):
            raise ValueError(f"num_images={num_images}; allowed: >= 1 (exactly 1 for attack='analytic')")
        settings: dict[str, Any] = {}
        if attack != "analytic":  # the analytic attack has no optimisation settings
            settings = {"iterations": iterations, "restarts": restarts, "include": include, "ignore": ignore}
            settings.update(target=target, progress=progress, **({} if lr is None else {"lr": lr}))
            settings.update({"tv_weight": tv_weight} if attack in BOXED else {})
        self.attack_name = attack
        self.settings = {**settings, **(attack_kwargs or {})}
        build_attack(attack, **self.settings)  # fail at construction, not mid-training
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.before_training = before_training
        self.after_training = after_training
        self.num_images = num_images
        self.victims = victims
        self.victim_seed = victim_seed
        self.known_labels = known_labels
        self.success_metric = success_metric
        self.success_threshold = success_threshold
        self.mean, self.std = (0.0,), (1.0,)  # the datamodule's, once set up
        self.metrics = ReconstructionMetrics(self.mean, self.std, success_metric, success_threshold)
        self.name = name
        self.records: list[dict[str, Any]] = []
        self._victims: Optional[tuple[Tensor, Tensor]] = None
        self._floor: Optional[Tensor] = None
        self._last_step: Optional[int] = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(name=self.name)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        data = trainer.datamodule
        self.mean, self.std = getattr(data, "mean", (0.0,)), getattr(data, "std", (1.0,))
        self.metrics = ReconstructionMetrics(self.mean, self.std, self.success_metric, self.success_threshold)
        self.records, self._last_step, self._floor = [], None, None
        train_set = getattr(data, "train_set", None)  # the datamodule is set up before callbacks
        if self.victims == "fixed" and train_set is None:
            raise ValueError("victims='fixed' needs a datamodule with a train_set; use victims='batch'")
        if train_set is not None:  # indexing a dataset draws no random numbers
            count = min(FLOOR_IMAGES, len(train_set))
            self._floor = torch.stack([train_set[i][0] for i in range(count)]).mean(0)
        if self.victims == "fixed":
            order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(self.victim_seed))
            images, labels = zip(*(train_set[int(i)][:2] for i in order[: self.num_images]))
            self._victims = torch.stack(images), torch.as_tensor(labels)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.victims == "batch":
            self._victims = batch[0][: self.num_images].detach().clone(), batch[1][: self.num_images].detach().clone()
        step = trainer.global_step
        first = self.before_training and self._last_step is None
        if first or (self.every_n_steps and step > 0 and step % self.every_n_steps == 0):
            self._attack(trainer, pl_module, "before_training" if first else "step")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self._attack(trainer, pl_module, "epoch")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.after_training:
            self._attack(trainer, pl_module, "after_training")

    @rank_zero_only
    def _attack(self, trainer: pl.Trainer, pl_module: pl.LightningModule, event: str) -> None:
        if self._victims is None or self._last_step == trainer.global_step:
            return
        self._last_step = trainer.global_step
        images, labels = (t.to(pl_module.device) for t in self._victims)
        started = time.perf_counter()
        cuda = [pl_module.device.index or 0] if pl_module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.inference_mode(False), torch.enable_grad():
            model = copy.deepcopy(pl_module, memo={id(trainer): None})  # the copy holds no Trainer
            perturbation, names, generator = self._defense(trainer, model, images)
            shared = client_gradient(model, images, labels, perturbation, names, noise_generator=generator)
            attack = build_attack(self.attack_name, **self._attack_settings(trainer))
            result = attack(model, shared, labels if self.known_labels else None, tuple(images.shape))
        scores = self.metrics(result.images, images, None if self._floor is None else self._floor.to(images))
        record = {
            "global_step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "event": event,
            "attack": self.attack_name,
            "settings": {k: v for k, v in self.settings.items() if k != "progress"},
            "defense": self._defense_settings(trainer, pl_module),
            "labels": labels.tolist(),
            "attack_labels": result.labels.tolist(),
            "matching_loss": result.loss,
            "seconds": time.perf_counter() - started,
            **scores,
        }
        self._log(trainer, images, result.images[scores["order"]], record)

    def _attack_settings(self, trainer: pl.Trainer) -> dict[str, Any]:
        settings = {**({"mean": self.mean, "std": self.std} if self.attack_name in BOXED else {}), **self.settings}
        if trainer.fast_dev_run and "iterations" in settings:
            settings["iterations"] = min(settings["iterations"], SMOKE_ITERATIONS)
        return settings

    @staticmethod
    def _partial_perturbation(trainer: pl.Trainer) -> Optional[PartialPerturbation]:
        found = [c for c in trainer.callbacks if isinstance(c, PartialPerturbation)]
        return found[0] if found else None

    def _defense(self, trainer: pl.Trainer, model: pl.LightningModule, images: Tensor) -> tuple[Any, Any, Any]:
        """An attached PartialPerturbation's perturbation, parameter names and a copy of its generator."""
        defense = self._partial_perturbation(trainer)
        if defense is None or defense.generator is None:
            return None, None, None
        # Before its first step the callback may not have resolved its selection yet.
        names = defense.parameter_names or select_parameters(model, defense.layers, defense.include_encoder, images)
        generator = torch.Generator(defense.generator.device)
        generator.set_state(defense.generator.get_state())
        return defense.perturbation, names, generator

    def _defense_settings(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        precode = [m.extra_repr() for m in pl_module.modules() if isinstance(m, PRECODE)]
        defense = self._partial_perturbation(trainer)
        perturbation = None if defense is None else {"layers": defense.layers, **vars(defense.perturbation)}
        return {"precode": precode, "partial_perturbation": perturbation}

    def _log(self, trainer: pl.Trainer, truth: Tensor, reconstruction: Tensor, record: dict[str, Any]) -> None:
        folder = run_directory(trainer.loggers, trainer.log_dir or trainer.default_root_dir) / self.name
        step = trainer.global_step
        report_reconstruction(
            trainer.loggers, folder, f"step{step:07d}.png", truth, reconstruction, record, self.records,
            self.mean, self.std, step, prefix=self.name,
        )  # fmt: skip
