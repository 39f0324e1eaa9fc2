"""An audit's report: ``report.md`` (the table and the union over attacks), its sheets' rows, its records.

Every piece reads the audit's typed records (:class:`~ppp_lightning.assessment.record.AttackRecord`),
so ``report.md`` can be rewritten from ``results.jsonl`` alone (:func:`write_report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from ppp_lightning.assessment.metrics import to_unit_interval
from ppp_lightning.assessment.record import AttackRecord, union_findings
from ppp_lightning.assessment.reidentification import POOL_SIZE
from ppp_lightning.assessment.reporting import captions, markdown_table, read_records
from ppp_lightning.assessment.sheets import SheetRow, with_stretched

__all__ = [
    "LEAK_COLUMNS",
    "REPORT",
    "RESULTS",
    "SHEET",
    "audit_records",
    "file_name",
    "kept_images",
    "leak_rows",
    "pack_reconstructions",
    "reconstructions_path",
    "sheet_rows",
    "union_text",
    "write_report",
]

RESULTS, REPORT, SHEET = "results.jsonl", "report.md", "sheet.png"
RECONSTRUCTIONS = "reconstructions"


def file_name(label: str) -> str:
    """An attack label as a file name (``inverting/before_decoder`` -> ``inverting_before_decoder``)."""
    return label.replace("/", "_")


def reconstructions_path(folder: Path, label: str) -> Path:
    """Where an audit keeps an attack's reconstructions (for the combined sheet of a resumed audit)."""
    return Path(folder) / RECONSTRUCTIONS / f"{file_name(label)}.pt"


def audit_records(folder: Path) -> list[AttackRecord]:
    """The records of the audit in ``folder`` (empty when there is none), in the order they were written."""
    return [AttackRecord.from_dict(record) for record in read_records(Path(folder) / RESULTS)]


def pack_reconstructions(folder: Path, mean: Sequence[float], std: Sequence[float]) -> list[Path]:
    """Save every kept reconstruction of the audit in ``folder`` again as compressed 8-bit images.

    What a sheet shows is the unit interval at 8 bits per channel, so the packed copy (about 1/10 of
    the raw tensors) draws the same sheet: small enough to commit with the records, where the raw
    tensors are not.

    Args:
        folder: the audit's folder.
        mean: the data's normalisation mean.
        std: the data's normalisation standard deviation.

    Returns:
        The packed files written.
    """
    written = []
    for raw in sorted((Path(folder) / RECONSTRUCTIONS).glob("*.pt")):
        kept = torch.load(raw)
        images = {key: _to_bytes(to_unit_interval(value, mean, std)) for key, value in kept.items() if value is not None}
        np.savez_compressed(raw.with_suffix(".npz"), **images)
        written.append(raw.with_suffix(".npz"))
    return written


def kept_images(
    folder: Path, label: str, mean: Sequence[float], std: Sequence[float]
) -> Optional[dict[str, Optional[Tensor]]]:
    """An attack's kept reconstructions (``attack``, ``control``) in the unit interval, raw or packed.

    Returns:
        ``None`` where neither the raw tensors nor a packed copy are in the folder (e.g. a fresh clone of
        results committed without them).
    """
    raw = reconstructions_path(folder, label)
    if raw.exists():
        kept = torch.load(raw)
        return {key: None if value is None else to_unit_interval(value, mean, std) for key, value in kept.items()}
    packed = raw.with_suffix(".npz")
    if not packed.exists():
        return None
    with np.load(packed) as arrays:
        return {key: torch.from_numpy(arrays[key]).float() / 255 if key in arrays else None
                for key in ("attack", "control")}  # fmt: skip


def _to_bytes(images: Tensor) -> np.ndarray:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def write_report(folder: Path, records: Optional[Sequence[AttackRecord]] = None) -> Path:
    """Write ``report.md`` of the audit in ``folder`` from its records (``None``: read from ``results.jsonl``).

    Returns:
        The report's path.
    """
    path = Path(folder) / REPORT
    path.write_text(_report(list(audit_records(folder) if records is None else records)))
    return path


def sheet_rows(
    folder: Path,
    records: Sequence[AttackRecord],
    mean: Sequence[float],
    std: Sequence[float],
    controls: bool = True,
    prefix: str = "",
) -> list[SheetRow]:
    """Every audited attack's (and its control's) reconstructions in ``folder``, captioned with their findings.

    Every victim is shown; each reconstruction row is followed by its contrast-stretched copy.
    Attacks whose reconstructions are not in the folder (``reconstructions/``, raw or packed) are left out.

    Args:
        folder: the audit's folder.
        records: its records (:func:`audit`'s return).
        mean: the data's normalisation mean.
        std: the data's normalisation standard deviation.
        controls: include the controls' rows.
        prefix: put before every row's name.
    """
    rows = []
    for record in records:
        label = record.context["label"]
        kept = kept_images(folder, label, mean, std)
        if kept is None:  # a resumed audit whose images were not kept (e.g. a fresh clone of committed results)
            continue
        rows += with_stretched(SheetRow(f"{prefix}{label}", kept["attack"], captions(record.attack)))
        if controls and kept["control"] is not None and record.control is not None:
            rows += with_stretched(SheetRow(f"{prefix}{label} control", kept["control"], captions(record.control)))
    return rows


LEAK_COLUMNS = (
    "attack",
    "identified (95% CI; chance, p)",
    "reconstructed (95% CI)",
    "control (without the audited defense)",
    "outcome",
)


def leak_rows(records: Sequence[AttackRecord]) -> list[list[str]]:
    """One row of :data:`LEAK_COLUMNS` per audited attack."""
    return [_leak_row(_label(r), r) for r in records]


def _label(record: AttackRecord) -> str:
    """The attack's label, with its own threat model where it has one."""
    threat = record.context.get("threat_model")
    return f"{record.context['label']}: {threat}" if threat else record.context["label"]


def _leak_row(label: str, record: AttackRecord) -> list[str]:
    label = f"{label} (tuned)" if "tuning" in record.context else label  # the chosen settings: under Settings
    verdict = record.verdict
    found = verdict.defended
    control = "-" if verdict.control is None else str(verdict.control)
    outcome = verdict.outcome + (f" ({verdict.reason})" if verdict.reason else "")
    identified = "not scored" if found.identified is None else str(found.identified)
    return [label, identified, str(found.reconstructed), control, outcome]


def union_text(records: Sequence[AttackRecord]) -> str:
    """The findings of any attack per victim (each attack one more guess at identification).

    Attacks with their own threat model (an attacker who holds the candidates) are left out: they
    answer another question and are reported on their own rows.
    """
    ordinary = [r.attack for r in records if not r.context.get("threat_model")]
    return str(union_findings(ordinary)) if ordinary else "none ran besides those with their own threat model"


def _report(records: Sequence[AttackRecord]) -> str:
    lines = ["# Audit", ""]
    if not records:
        return "\n".join(lines + ["No attack ran."]) + "\n"
    first = records[0].context
    lines += [
        _audited_text(first),
        f"Model {first['model']}; {first['victims']} class-stratified victims, {_batches(first)}; "
        f"seed {first['seed']}; each identified among {records[0].attack.pool_size or POOL_SIZE} candidates.",
        "",
        markdown_table(LEAK_COLUMNS, leak_rows(records)),
    ]
    threat_models = any(r.context.get("threat_model") for r in records)
    apart = " (attacks with their own threat model apart)" if threat_models else ""
    lines += ["", f"Any attack (per victim){apart}: {union_text(records)}.", "", "Settings:", ""]
    lines += [f"- {r.context['label']}: {r.context['spec']}{_tuning_text(r.context)}" for r in records]
    return "\n".join(lines) + "\n"


def _tuning_text(context: dict[str, Any]) -> str:
    """How a tuned attack's settings were chosen (nothing where it was not tuned)."""
    tuning = context.get("tuning")
    if tuning is None:
        return ""
    chosen = ", ".join(f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}"
                       for name, value in tuning["chosen"].items())  # fmt: skip
    trials = tuning["trials"]
    return (
        f"; tuned: {chosen}, the best of {len(trials)} trials on {_tuned_on(context)} of {len(tuning['victims'])} "
        f"other victims in {tuning['seconds']:g} s (value: reconstructed + identified + mean NCC, "
        f"{max(t['value'] for t in trials):.3g}; the attack's own settings {trials[0]['value']:.3g})"
    )


def _tuned_on(context: dict[str, Any]) -> str:
    return "the control" if context["controlled"] else "the shared gradient"


def _audited_text(record: dict[str, Any]) -> str:
    if not record["controlled"]:
        return f"Audited defense: {record['audited']}, without controls: a leak needs none; protection is not claimed."
    return f"Audited defense: {record['audited']} (the control removes it). Noise settings: {record['defense']}."


def _batches(record: dict[str, Any]) -> str:
    size = record.get("batch_size", 1)
    return "each alone in its batch" if size == 1 else f"in batches of {size} (one shared gradient each)"
