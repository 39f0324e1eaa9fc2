"""The folders audits and calibrations write: checked writable before any work, and locked while in use."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

__all__ = ["LOCK", "folder_lock", "stamp_pid", "try_lock", "writable_folder"]

# The lock file a run holds in its folder while it runs (it names the holder's pid).
LOCK = ".lock"


def writable_folder(folder: Path, option: str = "folder") -> Path:
    """Create ``folder`` (and its parents) if needed and check that a file can be written in it.

    Args:
        folder: the folder.
        option: its option's name, for the message (``--folder`` on the command line).

    Returns:
        ``folder`` as a path.

    Raises:
        ValueError: ``"<option>=<folder> ...; allowed: a folder that can be created and written"``
            when it is a file, cannot be created or cannot be written.
    """
    folder = Path(folder)
    allowed = "allowed: a folder that can be created and written; pass another one"
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option}={folder} is a file, not a folder; {allowed}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"{option}={folder} cannot be written ({err.strerror or err}); {allowed}") from None
    return folder


@contextmanager
def folder_lock(folder: Path, option: str = "folder", work: str = "audited") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (``<folder>/.lock``, with this process's pid) for the block.

    Two runs writing one folder at once would each redo every attack and write every record twice;
    the second is refused instead. The lock goes with the process, however it ends.

    Args:
        folder: the folder (created, and checked writable, by :func:`writable_folder`).
        option: its option's name, for the messages.
        work: what the holder does there, for the message (``audited``, ``calibrated``).

    Yields:
        ``folder`` as a path.

    Raises:
        ValueError: if the folder cannot be written, or another process holds its lock.
    """
    folder = writable_folder(folder, option)
    with (folder / LOCK).open("a+") as handle:
        if not try_lock(handle):
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise ValueError(
                f"{option} {folder} is being {work} by another process (pid {holder}); wait or pass another {option}"
            )
        stamp_pid(handle)
        yield folder


def try_lock(handle: TextIO) -> bool:
    """Take an exclusive OS lock on an open file without waiting; it goes when the file is closed or the
    process ends, however it ends.

    Args:
        handle: the open file.

    Returns:
        Whether this process holds the lock now (``False``: another open file, of any process, holds it).
    """
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def stamp_pid(handle: TextIO) -> None:
    """Replace a lock file's contents with this process's pid, for people who find it held.

    Args:
        handle: the lock file, open for writing.
    """
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
