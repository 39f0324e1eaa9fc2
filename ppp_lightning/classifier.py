"""ImageClassifier: the paper's models as one LightningModule."""

from __future__ import annotations

from typing import Any, Literal, Optional

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from ppp_lightning.models import build_network
from ppp_lightning.precode import bottleneck_kl

__all__ = ["ImageClassifier", "classification_loss"]

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


def classification_loss(model: torch.nn.Module, logits: Tensor, target: Tensor) -> Tensor:
    """The client's training loss: cross-entropy plus the KL of every PRECODE in ``model``.

    Args:
        model: the model that produced ``logits`` in its last forward pass.
        logits: ``(N, num_classes)`` scores.
        target: ``(N,)`` class indices.
    """
    return F.cross_entropy(logits, target) + bottleneck_kl(model).to(logits)


class ImageClassifier(pl.LightningModule):
    """An image classifier of the PRECODE paper: ``features -> bottleneck -> head``.

    The network is ``self.network`` with the submodules ``features``, ``bottleneck``
    (:class:`~ppp_lightning.PRECODE` or identity) and ``head``. The loss is cross-entropy plus
    the bottleneck's KL term.

    Args:
        arch: ``mlp``, ``cnn``, ``resnet18`` or ``vit``.
        num_classes: number of classes.
        input_shape: ``(C, H, W)`` of the images.
        precode: ``None`` for no defense, or :class:`~ppp_lightning.PRECODE` keyword arguments
            (``{}`` for the reference ``latent_dim=256, beta=1e-3``).
        arch_kwargs: options of the architecture, e.g. ``{"norm": "group"}`` for resnet18.
        optimizer: ``adam`` (reference), ``adamw`` or ``sgd``.
        lr: learning rate (reference: 1e-3).

    Raises:
        ValueError: if ``arch``, ``optimizer`` or ``lr`` is invalid.
    """

    def __init__(
        self,
        arch: Literal["mlp", "cnn", "resnet18", "vit"] = "cnn",
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        precode: Optional[dict[str, Any]] = None,
        arch_kwargs: Optional[dict[str, Any]] = None,
        optimizer: Literal["adam", "adamw", "sgd"] = "adam",
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.save_hyperparameters()
        self.network = build_network(arch, num_classes, input_shape, precode, **(arch_kwargs or {}))
        self.accuracy = torch.nn.ModuleDict(
            {stage: MulticlassAccuracy(num_classes) for stage in ("train_", "val_", "test_")}
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        logits = self(x)
        ce = F.cross_entropy(logits, y)
        kl = bottleneck_kl(self.network).to(ce)
        accuracy = self.accuracy[f"{stage}_"]
        accuracy(logits, y)
        on_step = stage == "train"
        self.log_dict(
            {f"{stage}/loss": ce + kl, f"{stage}/ce": ce, f"{stage}/kl": kl},
            on_step=on_step,
            on_epoch=True,
            batch_size=len(y),
        )
        self.log(f"{stage}/acc", accuracy, on_step=on_step, on_epoch=True, prog_bar=stage != "train")
        return ce + kl

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return OPTIMIZERS[self.hparams.optimizer](self.parameters(), lr=self.hparams.lr)
