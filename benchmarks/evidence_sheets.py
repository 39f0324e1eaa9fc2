"""Reconstruction sheets of the evidence grid: per architecture and state, what each defense lets through.

    python -m benchmarks.evidence_sheets benchmarks/results/evidence
    python -m benchmarks.evidence_sheets benchmarks/results/evidence_reduced --shown 4
    python -m benchmarks.evidence_sheets benchmarks/results/evidence_cifar10 --cifar10 data

Writes ``sheet_<arch>_<state>.png`` into the folder. Under the victims, one row per attack of each
audited defense (none, PRECODE, pruning), then, for each noise family, the attacks that leaked just
below the protective sigma, at that sigma and at the protective one (for a family with no
protective sigma: at the largest sigma tried), each followed by its control and each
reconstruction row by its contrast-stretched copy. Every image is captioned with its scores and findings. The
images are the ones the audits kept (``reconstructions/``: the raw tensors, or their 8-bit packed
copies); rows whose images are absent are left out.

``--pack`` saves the images these sheets draw (every audit's, and each noise family's at its two
reported sigmas) as compressed 8-bit copies beside the raw tensors: those copies are committed with
the records, so a clone redraws every sheet.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from torchvision.utils import save_image

from benchmarks.evidence import AUDITED, CALIBRATED, RESULTS, cell_folder, datamodule
from ppp_lightning.assessment.metrics import to_unit_interval
from ppp_lightning.assessment.reporting import read_records
from ppp_lightning.assessment.sheets import SheetRow, draw_sheet
from ppp_lightning.auditing.noise_search import sigma_folder
from ppp_lightning.auditing.report import audit_records, pack_reconstructions, sheet_rows
from ppp_lightning.victims import VictimPool, draw_victims, victim_pool

__all__ = ["defense_rows", "main", "noise_rows", "pack_sheet_images", "write_sheets"]

def defense_rows(folder: Path, family: str, pool: VictimPool) -> list[SheetRow]:
    """Every attack of an audited defense's folder (``audits/<arch>/<family>/<state>``)."""
    return sheet_rows(folder, audit_records(folder), pool.mean, pool.std, prefix=f"{family}: ")


def noise_rows(folder: Path, family: str, calibration: dict[str, Any], pool: VictimPool) -> list[SheetRow]:
    """A noise family's leaking attacks just below its protective sigma and at it.

    Args:
        folder: the calibration's folder (``calibrations/<arch>/<family>/<state>``).
        family: the family's name, put before every row's name.
        calibration: its record in ``evidence.jsonl``.
        pool: the victims' pool (for the normalisation).
    """
    sigmas = _noise_sigmas(calibration)
    if not sigmas:
        return []
    below = sigmas[0]
    held_out = calibration.get("held_out", {}).get(f"{below:.6g}", {}).get("leaking", [])  # leaked on held-out victims
    labels = {r.context["label"] for r in audit_records(sigma_folder(folder, below)) if r.attack.findings().leaked}
    labels |= set(held_out)
    rows = []
    for sigma, name in zip(sigmas, ("leaks", "protective")):
        at = sigma_folder(folder, sigma)
        records = [r for r in audit_records(at) if r.context["label"] in labels]
        rows += sheet_rows(at, records, pool.mean, pool.std, prefix=f"{family} sigma {sigma:.3g} ({name}): ")
    return rows


def _noise_sigmas(calibration: dict[str, Any]) -> list[float]:
    """The sigmas a noise family's rows show: just below the protective sigma, and at it."""
    search = calibration.get("search") or {}
    return [] if search.get("leaking") is None else [s for s in (search["leaking"], search.get("sigma")) if s]


def _sheet_folders(folder: Path, records: Sequence[dict[str, Any]]) -> list[Path]:
    """Every audit folder the sheets of ``folder`` draw from."""
    folders = []
    for r in records:
        cell = cell_folder(folder, r)
        if r["kind"] == "audit":
            folders.append(cell)
        else:
            folders += [sigma_folder(cell, sigma) for sigma in _noise_sigmas(r)]
    return folders


def _sheet_records(folder: Path) -> list[dict[str, Any]]:
    """The records the sheets show: audits of one victim per batch, and calibrations."""
    return [r for r in read_records(folder / RESULTS)
            if r["kind"] in ("audit", "calibration") and r.get("batch_size", 1) == 1]  # fmt: skip


def pack_sheet_images(folder: Path, data: Optional[dict[str, Any]] = None, seed: int = 0) -> list[Path]:
    """Save the images the sheets of ``folder`` draw as compressed 8-bit copies; return the files written.

    Args:
        folder: a results folder of :mod:`benchmarks.evidence`.
        data: the grid's datamodule options (its normalisation).
        seed: the grid's seed.
    """
    source = datamodule(data or {}, seed)
    source.setup("fit")
    pool = victim_pool(source, "the evidence sheets")
    return [path for where in _sheet_folders(folder, _sheet_records(folder))
            for path in pack_reconstructions(where, pool.mean, pool.std)]  # fmt: skip


def write_sheets(
    folder: Path, shown: Optional[int] = None, seed: int = 0, data: Optional[dict[str, Any]] = None
) -> list[Path]:
    """Draw one sheet per architecture and state found in ``folder``; return their paths.

    Args:
        folder: a results folder of :mod:`benchmarks.evidence`.
        shown: how many of the victims to show (the first ones: one per class; ``None``: every victim).
        seed: the grid's seed, which drew the victims (every preset's is 0).
        data: the grid's datamodule options (``{"data_dir": ...}`` for CIFAR-10; default: the offline digits).

    Raises:
        ValueError: if ``shown`` is below 1.
    """
    if shown is not None and shown < 1:
        raise ValueError(f"shown={shown}; allowed: an integer >= 1, or None for every victim")
    records = _sheet_records(folder)
    source = datamodule(data or {}, seed)
    source.setup("fit")
    pool = victim_pool(source, "the evidence sheets")
    paths = []
    for arch, state in dict.fromkeys((r["arch"], r["state"]) for r in records):
        rows = _rows(folder, [r for r in records if (r["arch"], r["state"]) == (arch, state)], pool)
        if not rows:
            continue
        victims, _ = draw_victims(pool.train_set, len(rows[0].images), seed, stratified=True)
        truth = SheetRow("victims", to_unit_interval(victims, pool.mean, pool.std))
        shown_rows = [SheetRow(r.name, r.images[:shown], list(r.captions)[:shown]) for r in [truth, *rows]]
        count = len(victims) if shown is None else min(shown, len(victims))
        title = (f"{arch}, {state}: {count} of {len(victims)} victims and their reconstructions per defense and "
                 "attack, each with its control and a contrast-stretched copy (captions: NCC, PSNR, identified, "
                 "reconstructed)")  # fmt: skip
        path = folder / f"sheet_{arch}_{state}.png"
        save_image(draw_sheet(title, shown_rows), path)
        paths.append(path)
    return paths


def _rows(folder: Path, records: Sequence[dict[str, Any]], pool: VictimPool) -> list[SheetRow]:
    """One architecture and state's rows: its audited defenses, then its noise families (grid order)."""
    by_family = {r["family"]: r for r in records}
    rows = []
    for family in AUDITED:
        if family in by_family:
            rows += defense_rows(cell_folder(folder, by_family[family]), family, pool)
    for family in CALIBRATED:
        if family in by_family:
            rows += noise_rows(cell_folder(folder, by_family[family]), family, by_family[family], pool)
    return rows


def main(argv: Optional[list[str]] = None) -> None:
    """Draw the sheets of the results folder named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a results folder of benchmarks.evidence")
    parser.add_argument("--shown", type=int, default=None, help="victims shown per row (default: every victim)")
    parser.add_argument("--cifar10", type=Path, default=None, help="the CIFAR-10 folder the grid ran on")
    parser.add_argument("--pack", action="store_true", help="also save the sheets' images as 8-bit copies to commit")
    args = parser.parse_args(argv)
    if not (args.folder / RESULTS).is_file():
        parser.error(f"no {RESULTS} in {args.folder}")
    data = None if args.cifar10 is None else {"data_dir": str(args.cifar10)}
    if args.pack:
        print(f"packed: {len(pack_sheet_images(args.folder, data))} files")
    for path in write_sheets(args.folder, args.shown, data=data):
        print(f"sheet: {path}")


if __name__ == "__main__":
    main()
