"""Which cell of the evidence grid a process measures next, when several processes share one folder.

A process claims a cell by locking ``claims/<cell>.pid`` (:func:`claimed`; one process wins, and a dead one
lets go).
A cell waits only for the cells it builds on: the earlier cells of its lanes (:func:`next_ready`). In
:mod:`benchmarks.evidence` a lane is an architecture's defense family (a state trains from the state
before it, repeats and accuracies read its calibrations, a batch row shares its model) and, at
initialisation, the calibrations that share one audit without noise. So a second process measures
another family while the first holds one, and waits only where every cell left builds on a held one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, TextIO, TypeVar

from ppp_lightning.auditing.folders import stamp_pid, try_lock

__all__ = ["CLAIM_POLL_SECONDS", "claimed", "is_held", "next_ready"]

CLAIM_POLL_SECONDS = 30.0  # how often a process with nothing ready looks again
Unit = TypeVar("Unit")


def next_ready(
    pending: Sequence[Unit], lanes: Callable[[Unit], Iterable[Hashable]], held: Callable[[Unit], bool]
) -> Optional[Unit]:
    """The first pending unit that no other process holds and that shares no lane with an earlier pending one.

    Args:
        pending: the units not yet finished, in the grid's order (an earlier unit of a lane comes first).
        lanes: what a unit builds on: it waits for every earlier pending unit with a lane in common.
        held: whether a live process holds a unit (this one lets its claims go, so: another).

    Returns:
        The unit to measure now; ``None`` when every pending unit is held or waits for a held one.
    """
    blocked: set[Hashable] = set()
    for unit in pending:
        its_lanes = set(lanes(unit))
        if its_lanes & blocked or held(unit):
            blocked |= its_lanes
            continue
        return unit
    return None


@contextmanager
def claimed(path: Path) -> Iterator[bool]:
    """Hold the claim at ``path`` for the block, unless a live process holds it.

    The claim is an exclusive OS lock on ``path`` (which names this process's pid, for people). The lock
    goes with its process however that ends, so a dead process's claim is free to take, and of two
    processes claiming one cell at once exactly one wins. The block's end removes the file.

    Yields:
        Whether this process holds the claim (``False``: another live process does; the block should skip it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = _lock(path)
    try:
        yield handle is not None
    finally:
        if handle is not None:
            path.unlink(missing_ok=True)  # before letting go, so a late locker of this file sees it gone
            handle.close()


def _lock(path: Path) -> Optional[TextIO]:
    """The locked, pid-stamped claim file at ``path``; ``None`` if a live process holds it."""
    while True:
        handle = path.open("a+")
        if not try_lock(handle):
            handle.close()
            return None
        if _names(path, handle):
            stamp_pid(handle)
            return handle
        handle.close()  # its holder let it go (removed it) between our open and our lock: claim afresh


def _names(path: Path, handle: TextIO) -> bool:
    """Whether ``path`` still names the file ``handle`` has open."""
    try:
        return path.stat().st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def is_held(path: Path) -> bool:
    """Whether a live process holds the claim at ``path`` (this one too, through another handle)."""
    try:
        with path.open() as handle:
            return not try_lock(handle)  # closing the handle lets a lock taken here go at once
    except FileNotFoundError:
        return False
