"""CIFAR-10."""

from __future__ import annotations

from torchvision.datasets import CIFAR10

from datamodules.downloadable import DownloadableDataModule

__all__ = ["CIFAR10DataModule"]


class CIFAR10DataModule(DownloadableDataModule):
    """torchvision's CIFAR-10 with the standard per-channel normalisation, no augmentation.

    Args:
        data_dir: directory holding ``cifar-10-batches-py`` (torchvision's layout).
        download: fetch the files when they are missing.
        **kwargs: ``batch_size``, ``num_workers``, ``val_size``, ``seed``.
    """

    dataset_class = CIFAR10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
