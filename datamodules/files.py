"""Checks of dataset files on disk, so a bad file is named with its path, the cause and the fix.

They run only after torchvision failed to load a dataset: torchvision stays the loader, these
functions explain its failure (truncated file, bad magic number, checksum mismatch).
"""

from __future__ import annotations

import math
import pickle
import struct
from pathlib import Path
from typing import Callable, Optional, Sequence

from torchvision.datasets.utils import calculate_md5

__all__ = ["DOWNLOAD_FIX", "DataFileError", "checksum_problem", "idx_file_problem", "pickle_file_problem"]

DOWNLOAD_FIX = "download: true (CLI: --data.init_args.download=true)"
# The idx type code of unsigned bytes, the only type of MNIST's files (torchvision requires it).
_IDX_UBYTE = 0x08
_SHOWN_PROBLEMS = 3


class DataFileError(RuntimeError):
    """One or more dataset files exist but are corrupt, truncated or in the wrong format.

    Args:
        dataset: the dataset's name, e.g. ``"MNIST"``.
        problems: ``(path, cause)`` of every bad file.
    """

    def __init__(self, dataset: str, problems: Sequence[tuple[Path, str]]) -> None:
        self.dataset = dataset
        self.problems = list(problems)
        listed = "; ".join(f"{path}: {cause}" for path, cause in self.problems[:_SHOWN_PROBLEMS])
        more = len(self.problems) - _SHOWN_PROBLEMS
        listed += f"; and {more} more file(s)" if more > 0 else ""
        them = "it" if len(self.problems) == 1 else "them"
        super().__init__(
            f"bad {dataset} file {listed}. Delete {them} and run again with {DOWNLOAD_FIX} to fetch a fresh copy."
        )


def idx_file_problem(path: Path, ndim: int) -> Optional[str]:
    """Say what is wrong with an idx file of unsigned bytes (MNIST's format), or ``None``.

    Args:
        path: the file.
        ndim: the number of dimensions the file must have (3 for images, 1 for labels).

    Returns:
        The cause (bad magic number, truncated, trailing data), or ``None`` for a sound file.
    """
    size = path.stat().st_size
    with path.open("rb") as file:
        header = file.read(4 * (ndim + 1))
    expected_magic = _IDX_UBYTE << 8 | ndim
    if len(header) < 4:
        return f"truncated: {size} bytes, shorter than the 4-byte magic number"
    magic = int.from_bytes(header[:4], "big")
    if magic != expected_magic:
        return f"bad magic number {magic:#010x}, expected {expected_magic:#010x} (an idx{ndim} ubyte file)"
    if len(header) < 4 * (ndim + 1):
        return f"truncated: {size} bytes, shorter than its {4 * (ndim + 1)}-byte header"
    expected_size = len(header) + math.prod(struct.unpack(f">{ndim}I", header[4:]))
    if size < expected_size:
        return f"truncated: {size} bytes where its header promises {expected_size}"
    if size > expected_size:
        return f"wrong format: {size} bytes where its header promises {expected_size}"
    return None


def pickle_file_problem(path: Path, key: str, kind: str) -> Optional[str]:
    """Say why a file is not a complete pickled dict holding ``key``, or ``None``.

    Args:
        path: the file.
        key: the entry the dict must hold (``"data"`` for a CIFAR-10 batch).
        kind: what the file should be, for the message (``"CIFAR-10 batch"``).

    Returns:
        The cause (truncated, not a pickle, no ``key`` entry), or ``None`` for a sound file.
    """
    try:
        with path.open("rb") as file:
            content = pickle.load(file, encoding="latin1")
    except EOFError as err:
        return f"truncated ({err or 'ran out of input'})"
    except Exception as err:  # noqa: BLE001 - any failure of unpickling is the file's fault here
        cause = "truncated" if "truncated" in str(err) else f"not a {kind} pickle"
        return f"{cause} ({type(err).__name__}: {err})"
    if not isinstance(content, dict) or key not in content:
        return f"not a {kind}: it holds no {key!r} entry"
    return None


def checksum_problem(path: Path, md5: str, check: Callable[[str, str], bool]) -> Optional[str]:
    """Say whether a file fails the dataset's own checksum test, or ``None``.

    Args:
        path: the file.
        md5: the expected MD5 digest.
        check: the integrity test the dataset's loader runs (torchvision's ``check_integrity``).

    Returns:
        ``"checksum mismatch (...)"`` naming both digests, or ``None`` when ``check`` passes.
    """
    if check(str(path), md5):
        return None
    return f"checksum mismatch (md5 {calculate_md5(str(path))}, expected {md5})"
