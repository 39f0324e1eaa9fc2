"""ImageClassifier: the paper's models as one LightningModule."""

from __future__ import annotations

from typing import Any, Literal, Optional

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy
from typing_extensions import override

from ppp_lightning.losses import classification_terms
from ppp_lightning.models import Arch, build_network
from ppp_lightning.validation import check_number

__all__ = ["ImageClassifier"]

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}


class ImageClassifier(pl.LightningModule):
    """An image classifier of the PRECODE paper: ``features -> bottleneck -> head``.

    The network is ``self.network`` with the submodules ``features``, ``bottleneck``
    (:class:`~ppp_lightning.PRECODE` or identity) and ``head``. The loss is cross-entropy plus
    the bottleneck's KL term (:func:`~ppp_lightning.losses.classification_terms`).

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
        arch: Arch = "cnn",
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
        check_number("lr", lr, minimum=0, exclusive_minimum=True)
        self.save_hyperparameters()
        self.network = build_network(arch, num_classes, input_shape, precode, **(arch_kwargs or {}))
        self.accuracy = torch.nn.ModuleDict(
            {stage: MulticlassAccuracy(num_classes) for stage in ("train_", "val_", "test_")}
        )

    @override
    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    def _step(self, batch: tuple[Tensor, Tensor], batch_idx: int, stage: str) -> Tensor:
        x, y = batch
        terms = classification_terms(lambda: self(x), y)
        if not torch.isfinite(terms.loss):
            # Stop here: a non-finite loss would train, log and checkpoint NaN weights silently.
            bad = "the batch holds non-finite values" if not torch.isfinite(x).all() else "the model's output is non-finite"
            raise FloatingPointError(
                f"{stage} loss is {terms.loss.item()} at global step {self.global_step}, batch {batch_idx} "
                f"(cross-entropy {terms.ce.item()}, KL {terms.kl.item()}): {bad}"
            )
        accuracy = self.accuracy[f"{stage}_"]
        accuracy(terms.logits, y)
        on_step = stage == "train"
        self.log_dict(
            {f"{stage}/loss": terms.loss, f"{stage}/ce": terms.ce, f"{stage}/kl": terms.kl},
            on_step=on_step,
            on_epoch=True,
            batch_size=len(y),
        )
        self.log(f"{stage}/acc", accuracy, on_step=on_step, on_epoch=True, prog_bar=stage != "train")
        return terms.loss

    @override
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, batch_idx, "train")

    @override
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, batch_idx, "val")

    @override
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, batch_idx, "test")

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return OPTIMIZERS[self.hparams.optimizer](self.parameters(), lr=self.hparams.lr)
