"""Progress output that suits where it goes: live bars in a terminal, plain lines in a file or CI.

The one place that decides: :func:`interactive` reads whether the stream is a terminal when a bar
is made (never at import), and :func:`progress_bar` makes a ``tqdm`` bar there, or else either
nothing (per-iteration bars) or one line per finished item with the time elapsed and left
(``lines=True``, e.g. the audit over its attacks).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable, Optional, TextIO

from tqdm.auto import tqdm

__all__ = ["LineProgress", "interactive", "progress_bar"]


def interactive(stream: Optional[TextIO] = None) -> bool:
    """Whether ``stream`` (default: the current ``sys.stderr``) is a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (ValueError, OSError):  # a closed or detached stream
        return False


def progress_bar(
    iterable: Optional[Iterable[Any]] = None,
    *,
    total: Optional[int] = None,
    desc: str = "",
    unit: str = "it",
    enabled: bool = True,
    lines: bool = False,
    leave: bool = True,
    name: Optional[Callable[[Any], str]] = None,
    stream: Optional[TextIO] = None,
) -> Any:
    """A progress bar for ``stream`` (default: ``sys.stderr``): live in a terminal, plain lines or nothing elsewhere.

    Args:
        iterable: what to iterate over (``None``: advance with ``update``).
        total: the number of items (``None``: ``len(iterable)`` where it has one).
        desc: the bar's label.
        unit: what one item is (``"attack"``).
        enabled: ``False``: no output anywhere.
        lines: outside a terminal, print one line per finished item (with the time elapsed and
            left) instead of nothing.
        leave: in a terminal, keep the finished bar on screen.
        name: the item's name in its line (e.g. an attack's label); ``None``: no name.
        stream: where the output goes.

    Returns:
        A ``tqdm`` bar (disabled where nothing is shown) or a :class:`LineProgress`; both iterate,
        ``update``, ``reset``, ``close`` and work as context managers.
    """
    if enabled and interactive(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=stream)
    if enabled and lines:
        return LineProgress(iterable, total=total, desc=desc, unit=unit, name=name, stream=stream)
    return tqdm(iterable, total=total, disable=True)


class LineProgress:
    """One plain line per finished item: ``audit: 2/5 attacks (inverting), 12s elapsed, about 18s left``.

    Args:
        iterable: what to iterate over (``None``: advance with :meth:`update`).
        total: the number of items (``None``: ``len(iterable)`` where it has one).
        desc: the label each line starts with.
        unit: what one item is (pluralised with ``s``).
        name: the item's name in its line.
        stream: where the lines go (default: ``sys.stderr`` when a line is written).
    """

    def __init__(
        self,
        iterable: Optional[Iterable[Any]] = None,
        total: Optional[int] = None,
        desc: str = "",
        unit: str = "it",
        name: Optional[Callable[[Any], str]] = None,
        stream: Optional[TextIO] = None,
    ) -> None:
        self.iterable = iterable
        self.total = total if total is not None or iterable is None else _length(iterable)
        self.desc = desc
        self.unit = unit
        self.name = name
        self.stream = stream
        self.n = 0
        self.started = time.perf_counter()

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(item=item)

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1, item: Any = None) -> None:
        """Count ``n`` more finished items and print their line."""
        self.n += n
        (self.stream or sys.stderr).write(self.line(time.perf_counter() - self.started, item) + "\n")
        (self.stream or sys.stderr).flush()

    def line(self, elapsed: float, item: Any = None) -> str:
        """The line after ``elapsed`` seconds, ``item`` the one just finished."""
        count = f"{self.n}/{self.total}" if self.total else str(self.n)
        named = f" ({self.name(item)})" if self.name is not None and item is not None else ""
        text = f"{self.desc + ': ' if self.desc else ''}{count} {self.unit}s{named}, {_duration(elapsed)} elapsed"
        if self.total and self.n:
            left = elapsed / self.n * max(self.total - self.n, 0)
            text += f", about {_duration(left)} left"
        return text

    def reset(self, total: Optional[int] = None) -> None:
        """Start counting again (``total``: a new number of items)."""
        self.n, self.started = 0, time.perf_counter()
        if total is not None:
            self.total = total

    def close(self) -> None:
        """Nothing to clear: every line is final."""


def _length(iterable: Iterable[Any]) -> Optional[int]:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def _duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``1h02m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
