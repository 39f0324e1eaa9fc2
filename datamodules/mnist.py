"""MNIST as 3x32x32 images."""

from __future__ import annotations

from typing import Callable

from torchvision import transforms
from torchvision.datasets import MNIST

from datamodules.downloadable import DownloadableDataModule

__all__ = ["MNISTDataModule", "MNIST_MEAN", "MNIST_STD"]

MNIST_MEAN = (0.1307,) * 3
MNIST_STD = (0.3081,) * 3


class MNISTDataModule(DownloadableDataModule):
    """torchvision's MNIST resized to 32x32 and repeated to 3 channels, so every model fits it.

    Args:
        data_dir: directory holding ``MNIST/raw`` (torchvision's layout).
        download: fetch the files when they are missing.
        **kwargs: ``batch_size``, ``num_workers``, ``val_size``, ``seed``.
    """

    dataset_class = MNIST
    mean = MNIST_MEAN
    std = MNIST_STD

    def pil_transforms(self) -> list[Callable]:
        return [transforms.Resize(32), transforms.Grayscale(num_output_channels=3)]
