"""Which cell of the evidence grid a process measures next, when several processes share one folder.

A process claims a cell by creating ``claims/<cell>.pid`` with its pid (exclusively: one process wins).
A cell waits only for the cells it builds on: the earlier cells of its lanes (:func:`next_ready`). In
:mod:`benchmarks.evidence` a lane is an architecture's defense family (a state trains from the state
before it, repeats and accuracies read its calibrations, a batch row shares its model) and, at
initialisation, the calibrations that share one audit without noise. So a second process measures
another family while the first holds one, and waits only where every cell left builds on a held one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import Optional, TypeVar

__all__ = ["CLAIM_POLL_SECONDS", "claim", "is_held", "next_ready"]

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


def claim(path: Path) -> bool:
    """Claim a unit by creating ``path`` with this process's pid; a claim whose process died is taken over.

    Returns:
        Whether this process holds the unit now (``False``: another live process does).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            with open(path, "x") as claimed:
                claimed.write(str(os.getpid()))
            return True
        except FileExistsError:
            if is_held(path):
                return False
            path.unlink(missing_ok=True)  # its process died (a crash or a kill): take the unit over


def is_held(path: Path) -> bool:
    """Whether a live process holds the claim at ``path``.

    Two processes taking over one dead claim at once could both hold it; each audit folder's lock
    (:func:`~ppp_lightning.auditing.folders.folder_lock`) then refuses the second.
    """
    try:
        pid = int(path.read_text())
    except FileNotFoundError:
        return False
    except ValueError:  # a claim being written
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
