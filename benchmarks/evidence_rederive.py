"""Rewrite the derived fields of committed evidence records under today's verdict rule.

    python -m benchmarks.evidence_rederive benchmarks/results/evidence benchmarks/results/evidence_reduced

An audit record keeps what its attack found per victim (``successes``, ``identified``, how it
stopped, the control's findings) and, for a reader of the file, what was derived from it:
``findings``, ``leaked``, ``verdict`` and ``outcome``. The report always derives verdicts afresh
(:mod:`benchmarks.evidence_records`), but a record written under an earlier rule still *reads*
that rule's outcome, e.g. "protected" where 6 of 16 victims were identified among 100. This rewrites
every audit record of a results folder, the audit folders' ``results.jsonl`` and the compact
copies in ``evidence.jsonl``, from its findings (records of earlier versions included: their
``reidentified`` becomes ``identified``), and prints how many outcomes changed. Nothing measured
changes, and a second run rewrites nothing (run it on a folder no grid process is writing: it replaces
whole files). Calibration records are left as they are: their search
itself followed the rule of its day (the report says which findings each one scored).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

from benchmarks.evidence import RESULTS, compact_record
from ppp_lightning.assessment.record import AttackRecord
from ppp_lightning.assessment.reporting import read_records
from ppp_lightning.auditing.report import RESULTS as AUDIT_RESULTS

__all__ = ["main", "rederive"]


def rederive(folder: Path) -> Counter:
    """Rewrite the derived fields of every audit record under ``folder``; count the outcomes that changed.

    Args:
        folder: a results folder of :mod:`benchmarks.evidence`.

    Returns:
        ``(old outcome, new outcome)`` -> how many records changed so (unchanged ones are not counted).
    """
    changed: Counter = Counter()
    for path in sorted(Path(folder).rglob(AUDIT_RESULTS)):
        _rewrite(path, lambda record: _full(record, changed))
    summary = Path(folder) / RESULTS
    if summary.exists():
        _rewrite(summary, lambda record: _cell(record, changed))
    return changed


def _full(record: dict[str, Any], changed: Counter) -> dict[str, Any]:
    """An audit folder's record, its derived fields recomputed."""
    fresh = AttackRecord.from_dict(record).to_dict()
    _count(record, fresh, changed)
    return fresh


def _cell(record: dict[str, Any], changed: Counter) -> dict[str, Any]:
    """A line of ``evidence.jsonl``: an audit's compact records recomputed (other kinds as they are)."""
    if record["kind"] != "audit":
        return record
    fresh = []
    for attack in record["records"]:
        fresh.append(compact_record(AttackRecord.from_dict(attack)))
        _count(attack, fresh[-1], changed)
    return {**record, "records": fresh}


def _count(old: dict[str, Any], new: dict[str, Any], changed: Counter) -> None:
    if old.get("outcome") != new["outcome"]:
        changed[(old.get("outcome"), new["outcome"])] += 1


def _rewrite(path: Path, fresh: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Replace ``path``'s records by their fresh versions (whole: a file half rewritten is never left), where
    one differs in more than the order of its keys."""
    records = read_records(path)
    rewritten = [fresh(record) for record in records]
    if rewritten == records:
        return
    lines = "".join(json.dumps(record) + "\n" for record in rewritten)
    unfinished = path.with_suffix(".part")
    unfinished.write_text(lines)
    unfinished.replace(path)


def main(argv: Optional[list[str]] = None) -> None:
    """Rederive the folders named on the command line and say what changed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="results folders of benchmarks.evidence")
    args = parser.parse_args(argv)
    absent = [str(folder) for folder in args.folders if not folder.is_dir()]
    if absent:
        parser.error(f"no such folder: {', '.join(absent)}")
    for folder in args.folders:
        changed = rederive(folder)
        moves = ", ".join(f"{old} -> {new}: {count}" for (old, new), count in sorted(changed.items(), key=str))
        print(f"{folder}: {sum(changed.values())} outcome(s) changed" + (f" ({moves})" if moves else ""))


if __name__ == "__main__":
    main()
