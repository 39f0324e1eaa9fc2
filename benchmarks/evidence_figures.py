"""The evidence grid's figures: per architecture, leak rate and accuracy against sigma.

:func:`draw_figures` writes ``leak_vs_sigma_<arch>.png`` (each noise family's union reconstruction
rate per sigma with its 95% Clopper-Pearson band, one panel per state; a filled marker where the
union leaked by the verdicts' rule, reconstruction or identification above chance, a hollow one
where it did not) and ``accuracy_vs_sigma_<arch>.png``
(test accuracy at each family's protective sigma, baselines as bands). They are drawn on
:class:`matplotlib.figure.Figure` objects: no global pyplot state, no backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from benchmarks.evidence_records import (
    FAMILIES,
    MISSING,
    NOISE_FAMILIES,
    Evidence,
    calibration_findings,
    num,
    outcome_text,
    position,
)

__all__ = ["draw_figures"]


def draw_figures(evidence: Evidence, accuracy: list[dict[str, Any]], out: Path) -> list[Path]:
    """Per architecture: leak rate against sigma (one panel per state) and accuracy against sigma."""
    paths = []
    for arch in evidence.grid:
        paths.append(_save(_leak_figure(evidence, arch), out / f"leak_vs_sigma_{arch}.png"))
        paths.append(_save(_accuracy_figure([r for r in accuracy if r["arch"] == arch], arch),
                           out / f"accuracy_vs_sigma_{arch}.png"))  # fmt: skip
    return paths


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def _leak_figure(evidence: Evidence, arch: str) -> Figure:
    states = evidence.grid[arch].states or ["(no state)"]
    calibrations = {(f, s): evidence.calibration(arch, f, s) for f in NOISE_FAMILIES for s in states}
    positive = [float(k) for c in calibrations.values() if c for k in c["unions"] if float(k) > 0]
    origin = min(positive, default=1.0) / 4  # where sigma 0 is drawn on the log axis
    figure = Figure(figsize=(5 * len(states), 4))
    for ax, state in zip(figure.subplots(1, len(states), squeeze=False)[0], states):
        for index, family in enumerate(NOISE_FAMILIES):
            if calibrations[(family, state)]:
                _leak_curve(ax, calibrations[(family, state)], origin * 1.15**index)
        ax.axvline(origin * 2, color="grey", linestyle=":", linewidth=1)
        ax.text(origin, 1.08, "no\nnoise", ha="center", va="bottom", fontsize=7)
        ax.set(xscale="log", ylim=(-0.05, 1.2), title=f"{arch}, {state}", ylabel="victims reconstructed (any attack)",
               xlabel="relative sigma (log); left of the dotted line: no noise; filled: leaked")  # fmt: skip
        _legend_or_note(ax)
    return figure


def _leak_curve(ax: Any, calibration: dict[str, Any], origin: float) -> None:
    """One family's reconstruction rate per sigma with its 95% Clopper-Pearson band; sigma 0 drawn at
    ``origin``. Filled markers where the union leaked (either finding), hollow where it did not."""
    color = _color(calibration["family"])
    sigmas = sorted((float(key) for key in calibration["unions"] if float(key) > 0))
    found = [calibration_findings(calibration, f"{sigma:.6g}") for sigma in sigmas]
    rates = [f.reconstructed for f in found]
    bands = np.array([r.interval for r in rates]).reshape(-1, 2)
    label = f"{calibration['family']} ({outcome_text(calibration).split(':')[0]}"
    label += f", sigma {num(calibration['search']['sigma'])})" if calibration["outcome"] == "calibrated" else ")"
    ax.plot(sigmas, [r.rate for r in rates], "-", color=color, label=label)
    for sigma, finding in zip(sigmas, found):
        ax.plot([sigma], [finding.reconstructed.rate], "o", color=color, mfc=color if finding.leaked else "none")
    ax.fill_between(sigmas, bands[:, 0], bands[:, 1], color=color, alpha=0.15)
    zero = calibration_findings(calibration, "0")
    low, high = zero.reconstructed.interval
    rate = zero.reconstructed.rate
    ax.errorbar([origin], [rate], yerr=[[rate - low], [high - rate]], fmt="s", color=color, capsize=3,
                mfc=color if zero.leaked else "none")  # fmt: skip


def _accuracy_figure(rows: list[dict[str, Any]], arch: str) -> Figure:
    """Mean test accuracy at each noise family's sigma (bars: seeds' min-max), baselines as bands."""
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    for row in (r for r in rows if "test_acc" in r):
        color = _color(row["family"])
        for key, marker, name in (("test_acc", "o", "sampled"), ("test_acc_mean", "D", "z = mu")):
            stats = row.get(key)
            name = f" ({name})" if row["test_acc_mean"] else ""
            if stats and row["sigma"] is not None:
                bars = [[stats["mean"] - stats["min"]], [stats["max"] - stats["mean"]]]
                ax.errorbar([row["sigma"]], [stats["mean"]], yerr=bars, fmt=marker, color=color, capsize=3,
                            mfc="none" if key == "test_acc_mean" else color, label=f"{row['family']}{name}")
            elif stats:
                ax.axhline(stats["mean"], color=color, linestyle="--" if key == "test_acc" else ":",
                           label=f"{row['family']}, no noise{name}")  # fmt: skip
                ax.axhspan(stats["min"], stats["max"], color=color, alpha=0.1)
    ax.set(xscale="log", title=f"{arch}: accuracy at the protective sigma", xlabel="relative sigma (log)",
           ylabel="test accuracy (mean; bars: min-max over seeds)")  # fmt: skip
    _legend_or_note(ax)
    return figure


def _color(family: str) -> str:
    """The same colour for a family in every figure."""
    return f"C{position(family, FAMILIES)[0]}"


def _legend_or_note(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, MISSING, ha="center", va="center", transform=ax.transAxes)

