"""Shared machinery of the image datamodules: splits, loaders and normalisation."""

from __future__ import annotations

from typing import Optional

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, random_split
from typing_extensions import override

__all__ = ["ImageDataModule"]


class ImageDataModule(pl.LightningDataModule):
    """Base class: subclasses provide :meth:`load`, ``mean`` and ``std``.

    Every image is a normalised ``3x32x32`` tensor. The normalisation constants are exposed as
    :attr:`mean` and :attr:`std` and inverted by :meth:`denormalize` (attacks score images in
    ``[0, 1]``).

    Args:
        batch_size: images per batch.
        num_workers: data loader worker processes.
        val_size: images held out of the training set for validation.
        seed: seed of the train/validation split.

    Raises:
        ValueError: if a size is not positive or ``num_workers`` is negative.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # One true channel repeated to three (MNIST): scores use the channel mean, attacks may tie channels.
    one_channel = False
    num_classes = 10
    input_shape = (3, 32, 32)

    def __init__(self, batch_size: int = 64, num_workers: int = 0, val_size: int = 5000, seed: int = 0) -> None:
        super().__init__()
        if batch_size < 1 or val_size < 1:
            raise ValueError(f"batch_size and val_size must be >= 1, got {batch_size} and {val_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.seed = seed
        self.train_set: Optional[Dataset] = None
        self.val_set: Optional[Dataset] = None
        self.test_set: Optional[Dataset] = None

    def load(self, train: bool) -> Dataset:
        """Return the full training (``train=True``) or the test set as normalised tensors."""
        raise NotImplementedError

    @override
    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is None:
            full = self.load(train=True)
            if self.val_size >= len(full):
                raise ValueError(f"val_size={self.val_size} leaves no training images out of {len(full)}")
            split = torch.Generator().manual_seed(self.seed)
            self.train_set, self.val_set = random_split(full, [len(full) - self.val_size, self.val_size], split)
        if self.test_set is None and stage in (None, "test"):
            self.test_set = self.load(train=False)

    def _loader(self, dataset: Optional[Dataset], shuffle: bool = False) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    @override
    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    @override
    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)

    def denormalize(self, images: Tensor) -> Tensor:
        """Map normalised images ``(N, 3, H, W)`` back to pixel values in ``[0, 1]`` (clamped)."""
        mean = images.new_tensor(self.mean).view(-1, 1, 1)
        std = images.new_tensor(self.std).view(-1, 1, 1)
        return (images * std + mean).clamp(0, 1)
