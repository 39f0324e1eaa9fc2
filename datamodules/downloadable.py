"""Datamodules over torchvision's downloadable datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from torch.utils.data import Dataset
from torchvision import transforms

from datamodules.base import ImageDataModule

__all__ = ["DownloadableDataModule"]


class DownloadableDataModule(ImageDataModule):
    """An :class:`ImageDataModule` over a torchvision dataset class on disk.

    Subclasses set ``dataset_class`` (e.g. ``torchvision.datasets.MNIST``) and may extend
    :meth:`pil_transforms` (applied before ``ToTensor``).

    Args:
        data_dir: the directory that holds (or will hold) the dataset's files.
        download: fetch the files with torchvision when they are missing.
        **kwargs: :class:`ImageDataModule` arguments.
    """

    dataset_class: Callable[..., Dataset]

    def __init__(self, data_dir: str = "data", download: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data_dir = str(data_dir)
        self.download = download

    def pil_transforms(self) -> list[Callable]:
        return []

    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                self.dataset_class(self.data_dir, train=train, download=True)

    def load(self, train: bool) -> Dataset:
        transform = transforms.Compose(
            [*self.pil_transforms(), transforms.ToTensor(), transforms.Normalize(self.mean, self.std)]
        )
        try:
            return self.dataset_class(self.data_dir, train=train, transform=transform)
        except RuntimeError as err:
            name = self.dataset_class.__name__
            raise FileNotFoundError(
                f"{name} files not found in data_dir={str(Path(self.data_dir).resolve())!r} and download=False. "
                f"Set download: true (CLI: --data.init_args.download=true) or point data_dir at a folder "
                f"holding {name}'s files."
            ) from err
