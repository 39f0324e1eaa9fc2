"""What a grid cell has cost over all its runs, kept across interruptions.

A cell that is killed (a session's end, a crash) and resumed later would otherwise count only its
last run. While a cell runs, a thread rewrites the cell's ledger file every
:data:`HEARTBEAT_SECONDS` with the wall-clock and CPU seconds spent on it over every run so far; the
next run starts from there. An interruption loses at most the time since its last heartbeat.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

__all__ = ["HEARTBEAT_SECONDS", "CellClock", "Spent"]

HEARTBEAT_SECONDS = 30.0


@dataclass(frozen=True)
class Spent:
    """Time spent on a cell.

    Args:
        seconds: wall clock, over every run.
        cpu_seconds: the processes' CPU time (all their threads), over every run.
        runs: how many runs worked on it (1: never interrupted).
    """

    seconds: float = 0.0
    cpu_seconds: float = 0.0
    runs: int = 0


class CellClock:
    """Times one cell over all its runs (a context manager around one run; see the module doc).

    Args:
        path: the cell's ledger file (read at the start, rewritten at every heartbeat and at the end).
        every: seconds between heartbeats (> 0).

    Raises:
        ValueError: if ``every`` is not positive.
    """

    def __init__(self, path: Path, every: float = HEARTBEAT_SECONDS) -> None:
        if not every > 0:
            raise ValueError(f"every={every}; allowed: seconds > 0")
        self.path, self.every = Path(path), every
        self.before = Spent()
        self._start = (0.0, 0.0)
        self._final: Optional[Spent] = None  # set when the run ends: the record and the ledger then agree
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> CellClock:
        self.before = Spent(**json.loads(self.path.read_text())) if self.path.exists() else Spent()
        self._start, self._final = (time.perf_counter(), time.process_time()), None
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat_until_stopped, name="cell-clock", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._final = self.spent()
        self.beat()

    def spent(self) -> Spent:
        """The time spent on the cell so far, this run included (after the run: up to its end)."""
        if self._final is not None:
            return self._final
        wall, cpu = time.perf_counter() - self._start[0], time.process_time() - self._start[1]
        return Spent(self.before.seconds + wall, self.before.cpu_seconds + cpu, self.before.runs + 1)

    def beat(self) -> None:
        """Write :meth:`spent` to the ledger (atomically: a kill while writing leaves the previous one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        unfinished = self.path.with_suffix(".part")
        unfinished.write_text(json.dumps(asdict(self.spent())))
        unfinished.replace(self.path)

    def forget(self) -> None:
        """Delete the ledger (once the cell's record holds its time)."""
        self.path.unlink(missing_ok=True)

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()
