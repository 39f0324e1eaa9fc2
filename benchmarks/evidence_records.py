"""The evidence grid's records: every folder's ``evidence.jsonl`` by cell, and the grid they should fill.

:func:`load` reads the results files of :mod:`benchmarks.evidence` into an :class:`Evidence` (a later
record of a cell replaces an earlier one, a line that is not JSON is counted and skipped) and expects
every cell the records show plus every cell of the named presets; the helpers at the end put a record
in the words that the tables, claims and figures share.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from benchmarks.evidence import AUDITED, CALIBRATED, PRESETS, RESULTS, STATES
from ppp_lightning.reporting import read_records_counting_unreadable
from ppp_lightning.verdicts import LeakRate

__all__ = [
    "FAMILIES",
    "MISSING",
    "NOISE_FAMILIES",
    "ArchGrid",
    "Evidence",
    "control_text",
    "load",
    "num",
    "outcome_text",
    "position",
    "reported_sigma",
]

MISSING = "not yet measured"
FAMILIES = (*AUDITED, *CALIBRATED)
NOISE_FAMILIES = tuple(CALIBRATED)


# --------------------------------------------------------------------------- loading


@dataclass
class ArchGrid:
    """The cells a complete run holds for one architecture.

    Args:
        states: training states, in training order.
        families: defense families.
        batch_rows: the extra rows ``(family, batch_size)``.
        seeds: the accuracy seeds.
    """

    states: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    batch_rows: list[tuple[str, int]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    def add(self, states: Iterable[str], families: Iterable[str], batch_rows: Iterable[tuple[str, int]],
            seeds: Iterable[int]) -> None:  # fmt: skip
        """Expect these cells too (kept in grid order, without duplicates)."""
        for mine, new, order in ((self.states, states, STATES), (self.families, families, FAMILIES)):
            mine[:] = sorted(set(mine) | set(new), key=lambda item, order=order: position(item, order))
        rows = set(self.batch_rows) | set(batch_rows)
        self.batch_rows[:] = sorted(rows, key=lambda row: (position(row[0], FAMILIES), row[1]))
        self.seeds[:] = sorted(set(self.seeds) | set(seeds))


@dataclass
class Evidence:
    """The records of one or more evidence runs, by cell, and the grid they should fill.

    Args:
        audits: ``(arch, family, state, batch_size)`` -> audit record.
        calibrations: ``(arch, family, state)`` -> calibration record.
        accuracies: ``(arch, family)`` -> seed -> accuracy record.
        grid: architecture -> the cells expected.
        sources: the files read.
        unreadable: lines that were not JSON (e.g. a line being written).
        replaced: records that replaced an earlier record of the same cell (e.g. two folders with one
            architecture name).
    """

    audits: dict[tuple[str, str, str, int], dict[str, Any]] = field(default_factory=dict)
    calibrations: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    accuracies: dict[tuple[str, str], dict[int, dict[str, Any]]] = field(default_factory=dict)
    grid: dict[str, ArchGrid] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    unreadable: int = 0
    replaced: int = 0

    def add(self, record: dict[str, Any]) -> None:
        """File one record under its cell (a later record of the same cell replaces an earlier one)."""
        arch, family = record["arch"], record["family"]
        if record["kind"] == "audit":
            cells, key = self.audits, (arch, family, record["state"], record.get("batch_size", 1))
        elif record["kind"] == "calibration":
            cells, key = self.calibrations, (arch, family, record["state"])
        else:
            cells, key = self.accuracies.setdefault((arch, family), {}), record["seed"]
        self.replaced += key in cells
        cells[key] = record

    def audit(self, arch: str, family: str, state: str, batch_size: int = 1) -> Optional[dict[str, Any]]:
        """The audit record of a cell (``None``: not yet measured)."""
        return self.audits.get((arch, family, state, batch_size))

    def calibration(self, arch: str, family: str, state: str) -> Optional[dict[str, Any]]:
        """The calibration record of a cell (``None``: not yet measured)."""
        return self.calibrations.get((arch, family, state))

    def accuracy(self, arch: str, family: str) -> list[dict[str, Any]]:
        """The accuracy records of a family, by seed."""
        return [record for _, record in sorted(self.accuracies.get((arch, family), {}).items())]


def load(folders: Sequence[Path], expect: Sequence[str] = ()) -> Evidence:
    """Read every folder's ``evidence.jsonl`` and the grid it should fill.

    Args:
        folders: results folders of :mod:`benchmarks.evidence` (a missing file reads as empty).
        expect: names of presets (:data:`benchmarks.evidence.PRESETS`) whose every cell is expected.

    Raises:
        KeyError: if a preset is unknown.
    """
    evidence = Evidence()
    for folder in folders:
        path = Path(folder) / RESULTS
        records, unreadable = read_records_counting_unreadable(path)
        evidence.sources.append(str(path))
        evidence.unreadable += unreadable
        for record in records:
            evidence.add(record)
        _expect_seen(evidence.grid, records)
    for name in expect:
        _expect_preset(evidence.grid, PRESETS[name])
    return evidence


def _expect_seen(grid: dict[str, ArchGrid], records: list[dict[str, Any]]) -> None:
    """Expect, for every architecture of one run, every state, family, batch row and seed that run shows."""
    states = [r["state"] for r in records if "state" in r]
    families = [r["family"] for r in records]
    batch_rows = [(r["family"], r["batch_size"]) for r in records if "batch_size" in r]
    seeds = [r["seed"] for r in records if r["kind"] == "accuracy"]
    for arch in dict.fromkeys(r["arch"] for r in records):
        grid.setdefault(arch, ArchGrid()).add(states, families, batch_rows, seeds)


def _expect_preset(grid: dict[str, ArchGrid], preset: dict[str, Any]) -> None:
    rows = preset["batch_rows"]
    for arch in preset["archs"]:
        grid.setdefault(arch, ArchGrid()).add(preset["states"], preset["families"],
                                              [(f, rows["batch_size"]) for f in rows["families"]],
                                              preset["accuracy_seeds"])  # fmt: skip


def position(item: str, order: Sequence[str]) -> tuple[int, str]:
    """A sort key: ``item``'s index in ``order`` (unknown items last, by name)."""
    return (order.index(item) if item in order else len(order), item)


# --------------------------------------------------------------------------- a record in words


def num(value: Optional[float]) -> str:
    """A number to 4 significant digits (``-``: none)."""
    return "-" if value is None else f"{value:.4g}"


def control_text(record: dict[str, Any]) -> str:
    """An attack record's control leak rate (``none ran``: no control)."""
    return str(LeakRate.of(record["control"]["successes"])) if "control" in record else "none ran"


def reported_sigma(calibration: dict[str, Any]) -> Optional[float]:
    """The protective sigma, or where none was found the largest tried (``None``: no search ran)."""
    if calibration["outcome"] == "calibrated":
        return calibration["search"]["sigma"]
    return max((sigma for sigma, _ in calibration["search"]["evaluations"]), default=None)


def outcome_text(calibration: dict[str, Any]) -> str:
    """A calibration's outcome in words, with why where it is not calibrated."""
    if calibration["outcome"] == "calibrated":
        return "calibrated"
    if calibration["outcome"] == "inconclusive":
        return "inconclusive: no attack leaked without noise, so no protection can be claimed"
    largest = reported_sigma(calibration)
    return f"not found: the attacks still leaked at the largest sigma tried ({num(largest)})"
