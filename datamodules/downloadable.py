"""Datamodules over torchvision's downloadable datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from torch.utils.data import Dataset
from torchvision import transforms
from typing_extensions import override

from datamodules.base import ImageDataModule
from datamodules.files import DOWNLOAD_FIX, DataFileError

__all__ = ["DownloadableDataModule"]


class DownloadableDataModule(ImageDataModule):
    """An :class:`ImageDataModule` over a torchvision dataset class on disk.

    Subclasses set ``dataset_class`` (e.g. ``torchvision.datasets.MNIST``) and may extend
    :meth:`pil_transforms` (applied before ``ToTensor``). torchvision loads the files; when it
    fails, :meth:`data_files` and :meth:`file_problem` name the missing or bad file and the cause.

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

    @override
    def pil_transforms(self) -> list[Callable]:
        return []

    @override
    def prepare_data(self) -> None:
        if self.download:
            for train in (True, False):
                self.dataset_class(self.data_dir, train=train, download=True)

    @override
    def data_files(self) -> list[Path]:
        """The files torchvision reads from ``data_dir``; ``[]`` when unknown (no diagnosis)."""
        return []

    @override
    def file_problem(self, path: Path) -> Optional[str]:
        """Say what is wrong with one of :meth:`data_files`, or ``None`` when it looks sound."""
        return None

    @override
    def load(self, train: bool) -> Dataset:
        """Load a split with torchvision; explain a failure by the files on disk.

        Raises:
            FileNotFoundError: if a file of the dataset is missing.
            DataFileError: if a file is corrupt, truncated or in the wrong format (its path, the
                cause and the fix are in the message).
        """
        transform = transforms.Compose(
            [*self.pil_transforms(), transforms.ToTensor(), transforms.Normalize(self.mean, self.std)]
        )
        try:
            return self.dataset_class(self.data_dir, train=train, transform=transform)
        except Exception as err:
            explained = self.file_error()
            if explained is None:
                raise
            raise explained from err

    def file_error(self) -> Optional[Exception]:
        """The error that explains a failed load by the files on disk, or ``None`` if none does."""
        files = [path.resolve() for path in self.data_files()]
        missing = [path for path in files if not path.is_file()]
        if missing:
            return self._missing_error(missing)
        problems = [(path, cause) for path in files if (cause := self.file_problem(path))]
        return DataFileError(self.dataset_class.__name__, problems) if problems else None

    def _missing_error(self, missing: list[Path]) -> FileNotFoundError:
        name = self.dataset_class.__name__
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        return FileNotFoundError(
            f"{name} files not found in data_dir={str(Path(self.data_dir).resolve())!r} (missing: {missing[0]}{more}) "
            f"and download={self.download}. Set {DOWNLOAD_FIX} or point data_dir at a folder holding {name}'s files."
        )
