"""Report a gradient-inversion attack: PNG grid and JSON in a folder, images, table and scalars to loggers.

One place for the attack callback and the federated server's attack, so both log the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger
from torch import Tensor
from torchvision.utils import make_grid, save_image

from ppp_lightning.metrics import to_unit_interval

__all__ = ["report_reconstruction", "run_directory"]

_SCORES = ("psnr", "ssim", "ncc")


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


def report_reconstruction(
    loggers: Sequence[Logger],
    folder: Path,
    image_name: str,
    truth: Optional[Tensor],
    reconstruction: Tensor,
    record: dict[str, Any],
    records: list[dict[str, Any]],
    mean: Sequence[float],
    std: Sequence[float],
    step: int,
    prefix: str = "attack",
) -> None:
    """Save and log one attack: the images (ground truth above reconstruction) and its scores.

    Writes ``folder/image_name`` (a PNG grid, one column per victim) and ``folder/metrics.json``
    (``records`` after appending ``record`` to it). With ``WandbLogger`` also the grid as
    ``<prefix>/reconstruction``, a table ``<prefix>/victims`` (one row per victim) and the scalars;
    with TensorBoard the grid and the scalars; with any other logger the scalars. The scalars are
    ``<prefix>/psnr``, ``/ssim``, ``/ncc``, ``/success_rate`` and ``/floor_psnr`` when the record
    holds scores (:class:`~ppp_lightning.metrics.ReconstructionMetrics`' output), else
    ``<prefix>/matching_loss`` when it holds that.

    Args:
        loggers: where to log.
        folder: where to write the PNG and the JSON (created if missing).
        image_name: file name of the PNG; stored in ``record["image"]``.
        truth: ``(N, C, H, W)`` normalised ground truth, or ``None`` when unknown (then the grid
            shows the reconstructions alone and the record holds no scores).
        reconstruction: ``(N, C, H, W)`` normalised reconstructions, in the order of ``truth``.
        record: the attack's JSON-able description: at least ``attack``, ``settings``,
            ``defense`` and ``labels`` (per victim, or ``None``), plus the scores if any.
        records: the attacks reported so far (appended to).
        mean: the data's normalisation mean.
        std: the data's normalisation standard deviation.
        step: the logging step.
        prefix: the key prefix of everything logged.
    """
    rec01 = to_unit_interval(reconstruction, mean, std).cpu()
    truth01 = None if truth is None else to_unit_interval(truth, mean, std).cpu()
    shown = rec01 if truth01 is None else torch.cat([truth01, rec01])
    grid = make_grid(shown, nrow=len(rec01), padding=2, pad_value=1.0)
    folder.mkdir(parents=True, exist_ok=True)
    record["image"] = image_name
    save_image(grid, folder / image_name)
    records.append(record)
    (folder / "metrics.json").write_text(json.dumps(records, indent=1))
    if "mean" in record:
        scalars = {f"{prefix}/{k}": record["mean"][k] for k in _SCORES}
        scalars.update({f"{prefix}/success_rate": record["success_rate"], f"{prefix}/floor_psnr": record["floor"]["psnr"]})
    else:
        scalars = {f"{prefix}/matching_loss": record["matching_loss"]} if record.get("matching_loss") is not None else {}
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            _log_wandb(logger, grid, truth01, rec01, record, step, prefix)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(f"{prefix}/reconstruction", grid, step)
        if scalars:
            logger.log_metrics(scalars, step=step)


def _log_wandb(
    logger: WandbLogger,
    grid: Tensor,
    truth: Optional[Tensor],
    rec: Tensor,
    record: dict[str, Any],
    step: int,
    prefix: str,
) -> None:
    import wandb

    shown = f"{record['attack']} reconstruction" if truth is None else f"ground truth (top), {record['attack']} reconstruction (bottom)"
    logger.log_image(f"{prefix}/reconstruction", [grid], step=step, caption=[f"step {step}: {shown}"])
    columns = ["step", "victim", "label", "ground_truth", "reconstruction", *_SCORES, "attack", "defense"]
    settings, defense = json.dumps(record["settings"]), json.dumps(record["defense"])
    labels, per_image = record["labels"], record.get("per_image")
    rows = [
        [step, i, None if labels is None else labels[i], None if truth is None else wandb.Image(truth[i]),
         wandb.Image(rec[i]), *(None if per_image is None else per_image[k][i] for k in _SCORES),
         f"{record['attack']} {settings}", defense]
        for i in range(len(rec))
    ]  # fmt: skip
    logger.log_table(f"{prefix}/victims", columns=columns, data=rows, step=step)
