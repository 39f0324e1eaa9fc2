"""Read a Lightning checkpoint, or say exactly why it cannot be used (missing, truncated, corrupt)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Optional

import torch

__all__ = ["CheckpointFileError", "local_checkpoint", "read_checkpoint"]

# ckpt_path values that name no local file (Lightning resolves them itself).
SPECIAL_CKPT_PATHS = ("best", "last", "hpc", "registry")
ZIP_MAGIC = b"PK\x03\x04"


class CheckpointFileError(RuntimeError):
    """A checkpoint file (``--ckpt_path``, a ``--checkpoints`` entry) that is missing, a directory,
    truncated, corrupt or not a Lightning checkpoint.

    Args:
        path: the checkpoint file.
        cause: what is wrong with it.
        fix: what to do about it (``None``: delete it or pass another).
        option: the option that named the file; an option ending in ``s`` holds a list, whose entry is named.
    """

    def __init__(self, path: Path, cause: str, fix: Optional[str] = None, option: str = "--ckpt_path") -> None:
        self.path = path
        self.cause = cause
        given = f"{option} entry {path}" if option.endswith("s") else f"{option}={path}"
        super().__init__(f"bad checkpoint {given}: {cause}. {fix or f'Delete it or pass another {option}'}.")


def local_checkpoint(ckpt_path: Optional[str]) -> Optional[Path]:
    """The local file a ``ckpt_path`` names, or ``None`` for none, ``best``/``last``/... and URLs."""
    if not ckpt_path or str(ckpt_path).startswith(SPECIAL_CKPT_PATHS) or "://" in str(ckpt_path):
        return None
    return Path(ckpt_path).resolve()


def _first_sentence(err: Exception) -> str:
    """``"Type: first sentence"`` of an error (torch appends advice this module's errors replace)."""
    text = next(iter(str(err).strip().splitlines()), "").split(". ")[0]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _format_problem(path: Path) -> Optional[str]:
    """Why ``path`` cannot be a ``torch.save`` file (empty, truncated zip, other format), or ``None``."""
    size = path.stat().st_size
    with path.open("rb") as file:
        head = file.read(4)
    if size == 0:
        return "truncated: the file is empty"
    if head == ZIP_MAGIC and not zipfile.is_zipfile(path):  # the end-of-archive record is missing
        return f"truncated: {size} bytes, the zip archive has no end record"
    if head != ZIP_MAGIC and head[:1] != b"\x80":  # neither torch.save's zip format nor its legacy pickle
        return f"not a PyTorch checkpoint: it starts with {head!r}"
    return None


def read_checkpoint(path: Path, weights_only: Optional[bool] = None, option: str = "--ckpt_path") -> dict[str, Any]:
    """Load a Lightning checkpoint on the CPU, or say why it cannot be used.

    Args:
        path: the checkpoint file.
        weights_only: passed to ``torch.load`` (``None``: torch's default).
        option: the option that named the file, for the message (``--checkpoints``: a list's entry).

    Returns:
        The checkpoint dictionary.

    Raises:
        CheckpointFileError: if the file is missing, a directory, truncated, corrupt or holds no ``state_dict``.
    """
    if path.is_dir():
        raise CheckpointFileError(path, "it is a directory", "Pass the path of a checkpoint file (a .ckpt)", option)
    if not path.is_file():
        raise CheckpointFileError(path, "no such file", "Pass the path of an existing checkpoint", option)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # noqa: BLE001 - every load failure is explained by the file
        problem = _format_problem(path)
        if problem is None and "Weights only load failed" in str(err):
            fix = "If you trust the file, add --weights_only=false"
            raise CheckpointFileError(path, "it holds objects that a weights-only load refuses", fix, option) from err
        raise CheckpointFileError(path, f"{problem or 'corrupt'} ({_first_sentence(err)})", option=option) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointFileError(path, "not a Lightning checkpoint: it holds no 'state_dict' entry", option=option)
    return checkpoint
