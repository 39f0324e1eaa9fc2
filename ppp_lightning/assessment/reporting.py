"""Report gradient-inversion attacks: one :class:`Reporter` per attack name and run folder.

The reporter owns its records: each attack's record is appended to ``metrics.jsonl`` at once (one
line per attack, never rewritten), its sheet is written as a PNG, and both go to any number of
:class:`ReportSink` adapters (W&B, TensorBoard, scalar loggers; see
:mod:`ppp_lightning.lightning.logger_sinks` for the Lightning loggers). Used by the attack callback and the
federated server, so both report the same way. No Lightning import here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Protocol

from torch import Tensor
from torchvision.utils import save_image

from ppp_lightning.assessment.metrics import to_unit_interval
from ppp_lightning.assessment.record import Scored
from ppp_lightning.assessment.sheets import SheetRow, draw_sheet, with_stretched

__all__ = [
    "RECORDS_FILE",
    "ReportSink",
    "Reporter",
    "append_record",
    "captions",
    "markdown_table",
    "read_records",
    "read_records_counting_unreadable",
]

RECORDS_FILE = "metrics.jsonl"
SCORES = ("psnr", "ssim", "ncc")


class ReportSink(Protocol):
    """Where a reporter sends an attack besides its folder (a logger adapter)."""

    def log_reconstruction(
        self,
        prefix: str,
        grid: Tensor,
        truth: Optional[Tensor],
        reconstruction: Tensor,
        record: dict[str, Any],
        step: int,
    ) -> None:
        """Log the sheet (``grid``, in ``[0, 1]``) and per-victim images of one attack."""

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Log the attack's scalar summary."""

    def log_report(
        self, prefix: str, columns: Sequence[str], rows: Sequence[Sequence[str]], sheet: Tensor, step: int
    ) -> None:
        """Log an audit's report: its table (one row per attack) and its sheet (``(3, H, W)`` in ``[0, 1]``)."""

    def log_summary(self, values: Mapping[str, Any]) -> None:
        """Put values in the run's summary (e.g. a calibration's sigmas)."""

    def log_curve(self, key: str, x_name: str, x: Sequence[float], series: Mapping[str, Sequence[float]]) -> None:
        """Log curves over a shared x (e.g. leak rates over sigma)."""


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table."""
    lines = [f"| {' | '.join(columns)} |", f"|{'---|' * len(columns)}"]
    return "\n".join(lines + [f"| {' | '.join(row)} |" for row in rows])


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (empty if it does not exist).

    A line cut short (a run killed while appending; :func:`append_record` starts a new line after
    it) is dropped: its attack runs again.
    """
    return read_records_counting_unreadable(path)[0]


def read_records_counting_unreadable(path: Path) -> tuple[list[dict[str, Any]], int]:
    """:func:`read_records`, and how many non-blank lines were not JSON (cut short, or being written)."""
    if not path.exists():
        return [], 0
    records, unreadable = [], 0
    for line in filter(str.strip, path.read_text().splitlines()):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            unreadable += 1
    return records, unreadable


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one record as a line of ``path`` at once (after the cut-short line of a killed run, if any)."""
    with path.open("a+b") as handle:  # reads only the last byte; writes always go to the end
        end = handle.seek(0, os.SEEK_END)
        handle.seek(max(end - 1, 0))
        cut_short = end > 0 and handle.read(1) != b"\n"
        handle.write((("\n" if cut_short else "") + json.dumps(record) + "\n").encode())


class Reporter:
    """Write and log the attacks of one name in one run folder.

    Args:
        folder: where the PNG sheets and ``metrics.jsonl`` go (created on the first report).
        prefix: the key prefix of everything logged (the attack callback's ``name``).
        mean: the data's normalisation mean (to show images in ``[0, 1]``).
        std: the data's normalisation standard deviation.
        sinks: logger adapters the attacks also go to.
        records_file: the name of the JSON-lines file of records in ``folder``.
    """

    def __init__(
        self,
        folder: Path,
        prefix: str = "attack",
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        sinks: Sequence[ReportSink] = (),
        records_file: str = RECORDS_FILE,
    ) -> None:
        self.folder = Path(folder)
        self.records_file = records_file
        self.prefix = prefix
        self.mean, self.std = tuple(mean), tuple(std)
        self.sinks = list(sinks)

    @property
    def records_path(self) -> Path:
        """The JSON-lines file of this reporter's records."""
        return self.folder / self.records_file

    def records(self) -> list[dict[str, Any]]:
        """Every record written so far (read back from :attr:`records_path`)."""
        return read_records(self.records_path)

    def report(
        self,
        image_name: str,
        truth: Optional[Tensor],
        reconstruction: Tensor,
        record: dict[str, Any],
        step: int,
        prefix: Optional[str] = None,
        control: Optional[Tensor] = None,
    ) -> dict[str, Any]:
        """Save and log one attack: its sheet (ground truth, reconstruction, control) and its record.

        Args:
            image_name: file name of the PNG sheet in the folder.
            truth: ``(N, C, H, W)`` normalised ground truth, or ``None`` when unknown.
            reconstruction: ``(N, C, H, W)`` normalised reconstructions, in the order of ``truth``.
            record: the attack's JSON-able description (``attack``, ``settings``, ``defense``,
                ``labels`` and the scores of :class:`~ppp_lightning.assessment.metrics.ReconstructionMetrics`
                if any); it is not modified.
            step: the logging step.
            prefix: the key prefix for this attack (default: the reporter's).
            control: ``(N, C, H, W)`` normalised reconstructions of the control (the same attack
                without the defense), in the order of ``truth``; scored under ``record["control"]``.

        Returns:
            The record as written (with the sheet's file name under ``image``).
        """
        prefix = prefix or self.prefix
        rec01 = to_unit_interval(reconstruction, self.mean, self.std).cpu()
        truth01 = None if truth is None else to_unit_interval(truth, self.mean, self.std).cpu()
        grid = draw_sheet(_title(record, step), self._rows(truth01, rec01, record, control))
        self.folder.mkdir(parents=True, exist_ok=True)
        save_image(grid, self.folder / image_name)
        written = {**record, "image": image_name}
        append_record(self.records_path, written)
        scalars = _scalars(written, prefix)
        for sink in self.sinks:
            sink.log_reconstruction(prefix, grid, truth01, rec01, written, step)
            if scalars:
                sink.log_scalars(scalars, step)
        return written

    def _rows(
        self, truth01: Optional[Tensor], rec01: Tensor, record: dict[str, Any], control: Optional[Tensor]
    ) -> list[SheetRow]:
        rows = [] if truth01 is None else [SheetRow("truth", truth01)]
        scored = "successes" in record  # an unscored attack (no ground truth) has no findings to caption
        rows += with_stretched(SheetRow("attack", rec01, captions(Scored.from_dict(record)) if scored else ()))
        if control is not None:
            control01 = to_unit_interval(control, self.mean, self.std).cpu()
            rows += with_stretched(SheetRow("control", control01, captions(Scored.from_dict(record["control"]))))
        return rows


def _title(record: dict[str, Any], step: int) -> str:
    """The attack, its target, the step and the verdict."""
    target = record.get("settings", {}).get("target")
    name = record["attack"] + (f"/{target}" if target else "")
    verdict = record.get("verdict")
    return f"{name}, step {step}" + (f"\n{verdict}" if verdict else "")


def captions(scored: Scored) -> list[str]:
    """Per image: correlation, PSNR and both findings (identified where candidates were scored; reconstructed)."""
    per_image = scored.scores["per_image"]
    identified = scored.identified or [None] * len(scored.reconstructed)
    return [
        f"ncc {ncc:.2f}\n{psnr:.1f} dB" + _yes_no("identified", found) + _yes_no("reconstructed", legible)
        for ncc, psnr, found, legible in zip(per_image["ncc"], per_image["psnr"], identified, scored.reconstructed)
    ]


def _yes_no(name: str, value: Optional[bool]) -> str:
    return "" if value is None else f"\n{name} {'yes' if value else 'no'}"


def _scalars(record: dict[str, Any], prefix: str) -> dict[str, float]:
    """The scores' means, both findings' rates, the budget share and floor PSNR (unscored: the matching loss)."""
    if "mean" not in record:
        loss = record.get("matching_loss")
        return {} if loss is None else {f"{prefix}/matching_loss": loss}
    scalars = {f"{prefix}/{k}": record["mean"][k] for k in SCORES}
    scalars[f"{prefix}/floor_psnr"] = record["floor"]["psnr"]
    for side, findings in (("", record["findings"]), ("control_", record.get("control", {}).get("findings"))):
        if findings is None:
            continue
        scalars[f"{prefix}/{side}reconstructed_rate"] = findings["reconstructed"]["rate"]
        scalars[f"{prefix}/{side}leaked"] = float(findings["leaked"])
        if findings["identified"] is not None:
            scalars[f"{prefix}/{side}identified_rate"] = findings["identified"]["rate"]
            scalars[f"{prefix}/{side}identification_p_value"] = findings["identified"]["p_value"]
    scalars[f"{prefix}/budget_share"] = record["findings"]["budget_share"]
    return scalars
