"""CIFAR-10."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from torchvision.datasets import CIFAR10, cifar
from typing_extensions import override

from datamodules.downloadable import DownloadableDataModule
from datamodules.files import checksum_problem, pickle_file_problem

__all__ = ["CIFAR10DataModule"]


class CIFAR10DataModule(DownloadableDataModule):
    """torchvision's CIFAR-10 with the standard per-channel normalisation, no augmentation.

    Args:
        data_dir: directory holding ``cifar-10-batches-py`` (torchvision's layout).
        download: fetch the files when they are missing.
        **kwargs: ``batch_size``, ``num_workers``, ``val_size``, ``seed``.

    Raises:
        FileNotFoundError: in ``setup``, if a batch file is missing.
        DataFileError: in ``setup``, if a batch file is truncated, not a batch pickle or fails
            torchvision's MD5 check.
    """

    dataset_class = CIFAR10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def _checksums(self) -> dict[str, str]:
        """File name -> MD5 digest, as torchvision lists them."""
        dataset = self.dataset_class
        return {**dict(dataset.train_list + dataset.test_list), dataset.meta["filename"]: dataset.meta["md5"]}

    @override
    def data_files(self) -> list[Path]:
        """The batch pickles and ``batches.meta`` under ``<data_dir>/cifar-10-batches-py``."""
        folder = Path(self.data_dir, self.dataset_class.base_folder)
        return [folder / name for name in self._checksums()]

    @override
    def file_problem(self, path: Path) -> Optional[str]:
        """Unpickle a file, then run torchvision's own MD5 check on it."""
        meta = self.dataset_class.meta
        key = meta["key"] if path.name == meta["filename"] else "data"
        problem = pickle_file_problem(path, key, kind="CIFAR batch")
        # cifar.check_integrity is looked up at call time: the very check torchvision's loader runs.
        return problem or checksum_problem(path, self._checksums()[path.name], check=cifar.check_integrity)
