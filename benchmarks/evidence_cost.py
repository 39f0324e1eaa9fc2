"""Section 5 of the evidence report: what the grid cost, per architecture, defense family and attack.

The cell tables sum what each finished cell's record says it took (wall clock and, where recorded, CPU
time). The attack table is the profile under them: it sums the seconds that every attack record under
the results folders says its attack took (its control included), over every audit of every cell, the
per-sigma audits of the noise searches and their held-out victims included, so it shows which attacks
the grid's hours go to (cells still in progress count what they have written). What a cell took beyond
its attacks is training and set-up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.evidence_records import Evidence, table_lines
from ppp_lightning.assessment.reporting import read_records

__all__ = ["KINDS", "attack_cost_rows", "cost_md", "cost_rows", "family_cost_rows"]

KINDS = ("audits", "calibrations", "repeats", "accuracies")
ATTACK_FOLDERS = ("audits", "calibrations", "repeats")  # the kinds of cell whose audits lie in folders
AUDIT_RESULTS = "results.jsonl"


def cost_rows(evidence: Evidence) -> list[dict[str, Any]]:
    """Hours each architecture's recorded cells took, by kind and in total (see :func:`_hours`): wall clock of
    the process that ran them, and its CPU time where recorded."""
    cells = _cells(evidence)
    rows = []
    for arch in evidence.grid:
        mine = [(kind, record) for kind, cell_arch, _, record in cells if cell_arch == arch]
        by_kind = {kind: _hours([record for k, record in mine if k == kind]) for kind in KINDS}
        rows.append({"arch": arch, **by_kind, "total": _hours([record for _, record in mine])})
    return rows


def family_cost_rows(evidence: Evidence) -> list[dict[str, Any]]:
    """Hours per architecture and defense family with recorded cells: its audits (batch rows included),
    calibrations, repeats and accuracies (see :func:`_hours`)."""
    cells = _cells(evidence)
    rows = [{"arch": arch, "family": family, **_hours([r for _, a, f, r in cells if (a, f) == (arch, family)])}
            for arch, grid in evidence.grid.items() for family in grid.families]  # fmt: skip
    return [row for row in rows if row["cells"]]


def attack_cost_rows(folders: Sequence[Path]) -> list[dict[str, Any]]:
    """Per architecture and attack: the wall-clock hours its audits took under ``folders``, by the records.

    Args:
        folders: results folders of :mod:`benchmarks.evidence` (their ``audits``, ``calibrations`` and
            ``repeats`` hold one folder per audit, with its ``results.jsonl``, under ``<kind>/<arch>/``).

    Returns:
        One row per architecture and attack label (each in the order first met): ``audits`` (records),
        ``victims`` (audited, controls aside), ``hours``, ``seconds_per_victim`` and ``share`` (of the
        architecture's attack hours).
    """
    tallies: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0.0])  # audits, victims, seconds
    for folder in map(Path, folders):
        for kind in ATTACK_FOLDERS:
            for results in sorted((folder / kind).rglob(AUDIT_RESULTS)):
                arch = results.relative_to(folder / kind).parts[0]
                for record in read_records(results):
                    tally = tallies[(arch, record["label"])]
                    tally[0] += 1
                    tally[1] += record.get("victims", 0)
                    tally[2] += record.get("seconds", 0.0)
    total = defaultdict(float)
    for (arch, _), (_, _, spent) in tallies.items():
        total[arch] += spent
    return [{"arch": arch, "attack": label, "audits": audits, "victims": victims, "hours": spent / 3600,
             "seconds_per_victim": spent / victims if victims else None,
             "share": spent / total[arch] if total[arch] else 0.0}
            for arch in total
            for (mine, label), (audits, victims, spent) in tallies.items() if mine == arch]  # fmt: skip


def cost_md(summary: dict[str, Any]) -> list[str]:
    """Section 5 of ``summary.md``, from the summary's ``cost``, ``family_cost`` and ``attack_cost``."""
    kinds = [*KINDS, "total"]
    header = ["arch", "cells recorded", *(f"{k} (h)" for k in kinds), *(f"{k} CPU (h)" for k in kinds)]
    rows = [[r["arch"], r["total"]["cells"], *(f"{r[k]['wall']:.2f}" for k in kinds), *(_cpu(r[k]) for k in kinds)]
            for r in summary["cost"]]  # fmt: skip
    families = [[r["arch"], r["family"], r["cells"], f"{r['wall']:.2f}", _cpu(r)] for r in summary["family_cost"]]
    attacks = [[r["arch"], r["attack"], r["audits"], r["victims"], f"{r['hours']:.2f}", f"{r['share']:.0%}",
                "-" if r["seconds_per_victim"] is None else f"{r['seconds_per_victim']:.1f}"]
               for r in summary["attack_cost"]]  # fmt: skip
    return ["## 5. What it took", "",
            "Hours of the process that ran each recorded cell: wall clock (one attack thread; it grows with the "
            "machine's load) and, where the record carries it (`cpu_seconds`), the CPU time of all its threads "
            "('-': no cell recorded it; k/n cells: only k of the n did). A cell resumed after an interruption "
            "counts every run where its record says how many ran (`runs`, recorded from v3's later cells on); "
            "an earlier record counts only its last run, so a resumed one is undercounted.", "",
            *table_lines(header, rows),
            "Per architecture and defense family (its audits, batch rows included, calibrations, repeats and "
            "accuracies):", "",
            *table_lines(["arch", "family", "cells recorded", "wall (h)", "CPU (h)"], families),
            "Per architecture and attack: the wall-clock time its attack records say it took (its control "
            "included), over every audit, the noise searches' per-sigma and held-out audits included; cells "
            "still in progress count what they have written. What a cell took beyond its attacks is training "
            "and set-up.", "",
            *table_lines(["arch", "attack", "audits", "victims", "wall (h)", "share of the arch's attack time",
                     "s per victim"], attacks)]  # fmt: skip


def _cells(evidence: Evidence) -> list[tuple[str, str, str, dict[str, Any]]]:
    """Every recorded cell as ``(kind, arch, family, record)``."""
    accuracies = [(key, record) for key, by_seed in evidence.accuracies.items() for record in by_seed.values()]
    repeats = [(key, record) for key, by_seed in evidence.repeats.items() for record in by_seed.values()]
    kinds = (("audits", evidence.audits.items()), ("calibrations", evidence.calibrations.items()),
             ("repeats", repeats), ("accuracies", accuracies))  # fmt: skip
    return [(kind, key[0], key[1], record) for kind, cells in kinds for key, record in cells]


def _hours(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Wall-clock hours (a record without ``seconds`` counts 0) and CPU hours (``None`` where no record carries
    ``cpu_seconds``; ``cpu_cells``: how many do)."""
    cpu = [record["cpu_seconds"] for record in records if "cpu_seconds" in record]
    return {"cells": len(records), "wall": sum(record.get("seconds", 0.0) for record in records) / 3600,
            "cpu": sum(cpu) / 3600 if cpu else None, "cpu_cells": len(cpu)}  # fmt: skip


def _cpu(hours: dict[str, Any]) -> str:
    """CPU hours, with how many cells recorded them where not all did."""
    if hours["cpu"] is None:
        return "-"
    partial = f" ({hours['cpu_cells']}/{hours['cells']} cells)" if hours["cpu_cells"] < hours["cells"] else ""
    return f"{hours['cpu']:.2f}{partial}"
