"""MNIST as 3x32x32 images."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Optional

from torchvision import transforms
from torchvision.datasets import MNIST
from typing_extensions import override

from datamodules.downloadable import DownloadableDataModule
from datamodules.files import idx_file_problem

__all__ = ["MNISTDataModule", "MNIST_MEAN", "MNIST_STD"]

MNIST_MEAN = (0.1307,) * 3
MNIST_STD = (0.3081,) * 3


class MNISTDataModule(DownloadableDataModule):
    """torchvision's MNIST resized to 32x32 and repeated to 3 channels, so every model fits it.

    Args:
        data_dir: directory holding ``MNIST/raw`` (torchvision's layout).
        download: fetch the files when they are missing.
        **kwargs: ``batch_size``, ``num_workers``, ``val_size``, ``seed``.

    Raises:
        FileNotFoundError: in ``setup``, if an idx file is missing.
        DataFileError: in ``setup``, if an idx file is truncated or has a bad magic number.
    """

    dataset_class = MNIST
    mean = MNIST_MEAN
    std = MNIST_STD
    one_channel = True

    @override
    def pil_transforms(self) -> list[Callable]:
        return [transforms.Resize(32), transforms.Grayscale(num_output_channels=3)]

    @override
    def data_files(self) -> list[Path]:
        """The raw idx files of torchvision's layout (``<data_dir>/MNIST/raw/train-images-idx3-ubyte``, ...)."""
        raw = Path(self.data_dir, self.dataset_class.__name__, "raw")
        return [raw / Path(archive).stem for archive, _ in self.dataset_class.resources]

    @override
    def file_problem(self, path: Path) -> Optional[str]:
        """Check an idx file's magic number and length (``idx3``: images, ``idx1``: labels)."""
        match = re.search(r"idx(\d)", path.name)
        return idx_file_problem(path, ndim=int(match.group(1))) if match else None
