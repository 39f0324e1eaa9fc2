"""Adapters from Lightning loggers to :class:`~ppp_lightning.assessment.reporting.ReportSink`.

The shell side of reporting.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger
from torch import Tensor

from ppp_lightning.assessment.reporting import SCORES, ReportSink, markdown_table

__all__ = ["ScalarSink", "TensorBoardSink", "WandbSink", "report_summary", "run_directory", "sinks_for"]


class ScalarSink:
    """Any Lightning logger: the scalars only."""

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def log_reconstruction(
        self, prefix: str, grid: Tensor, truth: Optional[Tensor], reconstruction: Tensor, record: dict[str, Any], step: int
    ) -> None:
        """Nothing: this logger takes no images."""

    def log_scalars(self, scalars: dict[str, float], step: int) -> None:
        """Log the scalars at ``step``."""
        self.logger.log_metrics(scalars, step=step)

    def log_report(
        self, prefix: str, columns: Sequence[str], rows: Sequence[Sequence[str]], sheet: Tensor, step: int
    ) -> None:
        """Nothing: this logger takes no tables or images."""

    def log_summary(self, values: Mapping[str, Any]) -> None:
        """Nothing: this logger has no run summary."""

    def log_curve(self, key: str, x_name: str, x: Sequence[float], series: Mapping[str, Sequence[float]]) -> None:
        """Nothing: this logger takes no plots."""


class TensorBoardSink(ScalarSink):
    """TensorBoard: the sheet as an image and the scalars."""

    def log_reconstruction(
        self, prefix: str, grid: Tensor, truth: Optional[Tensor], reconstruction: Tensor, record: dict[str, Any], step: int
    ) -> None:
        """Add the sheet as ``<prefix>/reconstruction``."""
        self.logger.experiment.add_image(f"{prefix}/reconstruction", grid, step)

    def log_report(
        self, prefix: str, columns: Sequence[str], rows: Sequence[Sequence[str]], sheet: Tensor, step: int
    ) -> None:
        """Add the table as text ``<prefix>/report`` and the sheet as ``<prefix>/sheet``."""
        self.logger.experiment.add_text(f"{prefix}/report", markdown_table(columns, rows), step)
        self.logger.experiment.add_image(f"{prefix}/sheet", sheet, step)


class WandbSink(ScalarSink):
    """W&B: the sheet, a table with one row per victim, and the scalars."""

    def log_reconstruction(
        self, prefix: str, grid: Tensor, truth: Optional[Tensor], reconstruction: Tensor, record: dict[str, Any], step: int
    ) -> None:
        """Log the sheet as ``<prefix>/reconstruction`` and the table ``<prefix>/victims``."""
        import wandb

        shown = "reconstruction" if truth is None else "ground truth, reconstruction" + (", control" if "control" in record else "")
        caption = f"step {step}: {record['attack']} ({shown}); {record.get('verdict', 'unscored')}"
        self.logger.log_image(f"{prefix}/reconstruction", [grid], step=step, caption=[caption])
        columns = ["step", "victim", "label", "ground_truth", "reconstruction", *SCORES, "identified", "reconstructed"]
        columns += ["control_ncc", "control_identified", "control_reconstructed", "verdict", "attack", "defense"]
        labels, per_image = record["labels"], record.get("per_image")
        attack = f"{record['attack']} {json.dumps(record['settings'])}"
        control = record.get("control", {})
        rows = [
            [step, i, None if labels is None else labels[i], None if truth is None else wandb.Image(truth[i]),
             wandb.Image(reconstruction[i]), *(None if per_image is None else per_image[k][i] for k in SCORES),
             _item(record.get("identified"), i), _item(record.get("successes"), i),
             _item(control.get("per_image", {}).get("ncc"), i), _item(control.get("identified"), i),
             _item(control.get("successes"), i), record.get("verdict"), attack, json.dumps(record["defense"])]
            for i in range(len(reconstruction))
        ]  # fmt: skip
        self.logger.log_table(f"{prefix}/victims", columns=columns, data=rows, step=step)

    def log_report(
        self, prefix: str, columns: Sequence[str], rows: Sequence[Sequence[str]], sheet: Tensor, step: int
    ) -> None:
        """Log the table ``<prefix>/report`` and the sheet ``<prefix>/sheet``; each attack's findings in the summary.

        The run summary gets :func:`report_summary` of the table (``<prefix>/<attack>/outcome``,
        ``/identified``, ``/reconstructed``), so W&B's runs table can show what leaked and what was protected.
        """
        self.logger.log_table(f"{prefix}/report", columns=list(columns), data=[list(row) for row in rows], step=step)
        self.logger.log_image(f"{prefix}/sheet", [sheet], step=step)
        self.logger.experiment.summary.update(report_summary(prefix, columns, rows))

    def log_summary(self, values: Mapping[str, Any]) -> None:
        """Update the run's summary (columns of W&B's runs table)."""
        self.logger.experiment.summary.update(dict(values))

    def log_curve(self, key: str, x_name: str, x: Sequence[float], series: Mapping[str, Sequence[float]]) -> None:
        """Log the curves as one W&B line plot ``key``."""
        import wandb

        plot = wandb.plot.line_series(xs=list(x), ys=[list(y) for y in series.values()], keys=list(series),
                                      title=key, xname=x_name)  # fmt: skip
        self.logger.experiment.log({key: plot})


def report_summary(prefix: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> dict[str, str]:
    """Per attack of an audit's table: its outcome (without the reason), identified and reconstructed counts.

    Args:
        prefix: the audit's key prefix.
        columns: the table's columns; ``attack`` and ``outcome``, and those starting with ``identified``
            and ``reconstructed``, are read.
        rows: one row per attack.

    Returns:
        ``{"<prefix>/<attack>/outcome": "leaked", "<prefix>/<attack>/identified": "8/8 above chance ...", ...}``
        (``identified`` and ``reconstructed`` as the table writes them, their k/n first).
    """
    index = {
        key: next((i for i, column in enumerate(columns) if column.split(" ")[0] == key), None)
        for key in ("attack", "outcome", "identified", "reconstructed")
    }
    if index["attack"] is None:
        return {}
    summary: dict[str, str] = {}
    for row in rows:
        for key in ("outcome", "identified", "reconstructed"):
            if index[key] is not None:
                value = row[index[key]]
                summary[f"{prefix}/{row[index['attack']]}/{key}"] = value.split(" (")[0] if key == "outcome" else value
    return summary


def _item(values: Optional[Sequence[Any]], index: int) -> Any:
    return None if values is None else values[index]


def sinks_for(loggers: Sequence[Logger]) -> list[ReportSink]:
    """One sink per logger: W&B and TensorBoard with images, any other with scalars."""
    kinds = ((WandbLogger, WandbSink), (TensorBoardLogger, TensorBoardSink))
    return [next((sink for kind, sink in kinds if isinstance(logger, kind)), ScalarSink)(logger) for logger in loggers]


def run_directory(loggers: Sequence[Logger], default: Path) -> Path:
    """Where a run keeps its files: the W&B run's files folder (synced with it), else ``default``.

    Args:
        loggers: the run's loggers.
        default: the folder to use without a W&B run (e.g. the Trainer's ``log_dir``).
    """
    for logger in loggers:
        if isinstance(logger, WandbLogger) and getattr(logger.experiment, "dir", None):
            return Path(logger.experiment.dir)
    return Path(default)
