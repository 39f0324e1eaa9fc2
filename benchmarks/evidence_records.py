"""The evidence grid's records: every folder's ``evidence.jsonl`` by cell, and the grid they should fill.

:func:`load` reads the results files of :mod:`benchmarks.evidence` into an :class:`Evidence` (a later
record of a cell replaces an earlier one, a line that is not JSON is counted and skipped) and expects
every cell the records show plus every cell of the named presets; the helpers at the end put a record
in the words that the tables, claims and figures share.

Verdicts are derived from the records, never read from their stored ``outcome`` or ``verdict``: an
audit record's is :attr:`~ppp_lightning.assessment.record.AttackRecord.verdict` (records of earlier versions
included), a union's is :func:`~ppp_lightning.assessment.verdicts.judge` of the attacks' united findings, and
a calibration's rows are judged from its ``unions`` (reconstructed) and, where it recorded them, its
``identified`` and how its attacks stopped from its ``budget_shares`` (recorded from v3 on; before, the
budget share of its findings is unknown).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from benchmarks.evidence import AUDITED, CALIBRATED, PRESETS, RESULTS, STATES, cell_folder
from ppp_lightning.assessment.record import AttackRecord, union_findings
from ppp_lightning.assessment.reidentification import POOL_SIZE
from ppp_lightning.assessment.reporting import markdown_table, read_records_counting_unreadable
from ppp_lightning.assessment.verdicts import Findings, Identification, LeakRate, Verdict, judge, union_over_attacks
from ppp_lightning.auditing.noise_search import HELD_OUT
from ppp_lightning.auditing.report import audit_records

__all__ = [
    "FAMILIES",
    "MISSING",
    "NOISE_FAMILIES",
    "ArchGrid",
    "Evidence",
    "calibration_findings",
    "control_text",
    "identification_scored",
    "load",
    "num",
    "outcome_text",
    "position",
    "reported_sigma",
    "table_lines",
    "union_verdict",
    "verdict_of",
    "verdict_text",
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
        repeats: ``(arch, family, state)`` -> seed offset -> the calibration repeated on a second draw.
        folders: ``(arch, family, state)`` -> the results folder a calibration record came from (its
            per-sigma audits lie under it: :meth:`sigma_records`).
        grid: architecture -> the cells expected.
        sources: the files read.
        unreadable: lines that were not JSON (e.g. a line being written).
        replaced: records that replaced an earlier record of the same cell (e.g. two folders with one
            architecture name).
    """

    audits: dict[tuple[str, str, str, int], dict[str, Any]] = field(default_factory=dict)
    calibrations: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    accuracies: dict[tuple[str, str], dict[int, dict[str, Any]]] = field(default_factory=dict)
    repeats: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = field(default_factory=dict)
    folders: dict[tuple[str, str, str], Path] = field(default_factory=dict)
    grid: dict[str, ArchGrid] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    unreadable: int = 0
    replaced: int = 0

    def add(self, record: dict[str, Any], folder: Optional[Path] = None) -> None:
        """File one record under its cell (a later record of the same cell replaces an earlier one).

        Args:
            record: a line of ``evidence.jsonl``.
            folder: the results folder it came from.
        """
        arch, family = record["arch"], record["family"]
        if record["kind"] == "audit":
            cells, key = self.audits, (arch, family, record["state"], record.get("batch_size", 1))
        elif record["kind"] == "calibration":
            cells, key = self.calibrations, (arch, family, record["state"])
            if folder is not None:
                self.folders[key] = Path(folder)
        elif record["kind"] == "repeat":
            cells, key = self.repeats.setdefault((arch, family, record["state"]), {}), record["seed"]
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

    def sigma_records(self, arch: str, family: str, state: str) -> dict[float, list[AttackRecord]]:
        """A calibration's per-attack records at every sigma it audited, its victims' and held-out victims'
        together (empty where its folder is unknown or gone)."""
        audits = self.sigma_audits(arch, family, state)
        return {sigma: [*victims, *held_out] for sigma, (victims, held_out) in audits.items()}

    def sigma_audits(
        self, arch: str, family: str, state: str
    ) -> dict[float, tuple[list[AttackRecord], list[AttackRecord]]]:
        """A calibration's per-attack records at every sigma it audited: its victims' and its held-out victims'
        (empty where none were audited there), by sigma in increasing order (empty where its folder is
        unknown or gone)."""
        folder = self.folders.get((arch, family, state))
        if folder is None:
            return {}
        audits = cell_folder(folder, self.calibrations[(arch, family, state)]).glob("sigma=*")
        by_sigma = {float(where.name.removeprefix("sigma=")): where for where in audits}
        return {sigma: (audit_records(where), audit_records(where / HELD_OUT))
                for sigma, where in sorted(by_sigma.items())}  # fmt: skip

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
            evidence.add(record, Path(folder))
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


def verdict_of(record: dict[str, Any]) -> Verdict:
    """An audit's attack record's verdict, derived from its findings and its control's (see the module doc)."""
    return AttackRecord.from_dict(record).verdict


def verdict_text(verdict: Verdict) -> str:
    """A verdict's outcome, with the reason where it is inconclusive."""
    return verdict.outcome + (f" ({verdict.reason})" if verdict.reason else "")


def control_text(record: dict[str, Any]) -> str:
    """An attack record's control findings (``none ran``: no control)."""
    control = verdict_of(record).control
    return "none ran" if control is None else str(control)


def union_verdict(records: Sequence[dict[str, Any]]) -> Verdict:
    """The verdict on the union of an audit's attack records; its control is the union of the controls
    (where every attack has one)."""
    typed = [AttackRecord.from_dict(record) for record in records]
    controls = [record.control for record in typed if record.control is not None]
    control = union_findings(controls) if controls and len(controls) == len(typed) else None
    return judge(union_findings([record.attack for record in typed]), control)


def identification_scored(calibration: dict[str, Any]) -> bool:
    """Whether a calibration recorded who each attack identified (records of earlier versions did not)."""
    return bool(calibration.get("identified"))


def calibration_findings(
    calibration: dict[str, Any], key: str, attacks: Optional[Sequence[str]] = None
) -> Findings:
    """A calibration's findings at one sigma (as text; ``"0"``: without noise): the union over its attacks.

    Reconstructed: its ``unions``. Identified: the union of its attacks' ``identified`` there, each
    attack one more guess (``None`` where not recorded). How the attacks stopped: its
    ``budget_shares`` there (unknown where not recorded).

    Args:
        calibration: The calibration record.
        key: The sigma, as its records name it.
        attacks: Count only these attacks' identification (default: every attack recorded there). Used
            without noise for the attacks that leaked there, the control of the noise; ``unions`` holds only
            their reconstructions already, since an attack that reconstructed a victim leaked.
    """
    recorded: Mapping[str, Any] = calibration.get("identified", {}).get(key) or {}
    per_attack = {name: found for name, found in recorded.items() if attacks is None or name in attacks}
    identified = None
    if per_attack and all(values is not None for values in per_attack.values()):
        united = union_over_attacks(per_attack)
        identified = Identification.of(united, calibration.get("pool_size", POOL_SIZE), attempts=len(per_attack))
    budget_share = calibration.get("budget_shares", {}).get(key)
    return Findings(LeakRate.of(calibration["unions"][key]), identified, budget_share)


def reported_sigma(calibration: dict[str, Any]) -> Optional[float]:
    """The protective sigma, or where none was found the largest tried (``None``: no search ran)."""
    if calibration["outcome"] == "calibrated":
        return calibration["search"]["sigma"]
    return max((sigma for sigma, _ in calibration["search"]["evaluations"]), default=None)


def outcome_text(calibration: dict[str, Any]) -> str:
    """A calibration's outcome in words, with why where it is not calibrated."""
    if calibration["outcome"] == "calibrated":
        if identification_scored(calibration):
            return "calibrated"
        return "calibrated by reconstruction alone: identification was not scored"
    if calibration["outcome"] == "inconclusive":
        return "inconclusive: no attack leaked without noise, so no protection can be claimed"
    largest = reported_sigma(calibration)
    return f"not found: the attacks still leaked at the largest sigma tried ({num(largest)})"


def table_lines(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A markdown table as ``summary.md``'s lines, a blank line after it."""
    return [*markdown_table(header, [[str(cell) for cell in row] for row in rows]).split("\n"), ""]
