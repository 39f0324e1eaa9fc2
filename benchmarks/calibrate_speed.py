"""Calibration by sweep vs by bisection: the same sigma, and what each costs, in one run.

For each architecture at initialisation (PRECODE model, the PPP family: relative Gaussian noise
before the bottleneck), ``calibrate`` runs with the full attack suite (DLG aside, as in the
evidence grid) on the same victims, once by sweep and once by bisection, in the order sweep,
bisection, bisection, sweep over the architectures (so that drifting machine load hits both
alike); then one audit with its control at the sweep's answer, the unit the goal is stated in. Wall and process CPU time of each; torch pinned to one
thread. Each run is appended to ``calibrate_speed.jsonl`` as it finishes and skipped on a rerun (a
run cut short starts over: its time is only kept whole).

    python -m benchmarks.calibrate_speed [--archs cnn mlp] [--victims 8] [--held-out 16] [--keep DIR] [--note TEXT]

``--keep DIR`` keeps every run's audit folders (``DIR/<arch>_<method>``) to compare the searches'
records sigma by sigma; without it they go to a temporary folder that is deleted.

Writes ``benchmarks/results/calibrate_speed.jsonl`` and ``calibrate_speed.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch

from datamodules import OfflineMNISTDataModule
from ppp_lightning import ImageClassifier
from ppp_lightning.assessment.reporting import append_record, markdown_table, read_records
from ppp_lightning.attacks.suite import attack_suite
from ppp_lightning.auditing.audit import audit
from ppp_lightning.auditing.noise_search import calibrate
from ppp_lightning.defenses.spec import DefenseSpec

__all__ = ["main", "measure"]

RESULTS = Path(__file__).resolve().parent / "results"
ARCHS = {"cnn": {}, "mlp": {"width": 1024}}
FAMILY = DefenseSpec(layers="before_bottleneck", sigma=1.0, relative=True)
PRECODE = {"latent_dim": 256, "beta": 0.001}


def _timed(work: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return result, round(time.perf_counter() - wall, 1), round(time.process_time() - cpu, 1)


def measure(
    arch: str, method: str, data: Any, victims: int, held_out: int, sigma: Optional[float], keep: Optional[Path] = None
) -> dict[str, Any]:
    """One timed run: ``calibrate`` by ``method``, or (``method="audit"``) one audit with its control at ``sigma``.

    Args:
        arch: the architecture.
        method: ``sweep``, ``bisection`` or ``audit``.
        data: the datamodule, set up.
        victims: victims per audit.
        held_out: held-out victims.
        sigma: the audit's sigma (``method="audit"``).
        keep: where the audit folders stay (``None``: a temporary folder, deleted).
    """
    pl.seed_everything(0, verbose=False)
    model = ImageClassifier(arch, precode=PRECODE, arch_kwargs=ARCHS[arch])
    example = data.train_set[0][0][None]
    # as in the evidence grid, DLG runs against no noise family: its L-BFGS on an mlp-1024 costs minutes per victim
    suite = {label: spec for label, spec in attack_suite(model, example, FAMILY, tie_channels=True).items()
             if spec.name != "dlg"}  # fmt: skip
    if keep is None:
        folder = Path(tempfile.mkdtemp(prefix=f"calibrate_speed_{arch}_{method}_"))
    else:
        folder = keep / f"{arch}_{method}"
        shutil.rmtree(folder, ignore_errors=True)  # a run cut short starts over (its time is only kept whole)
    common = {"mean": data.mean, "std": data.std, "one_channel": True, "victims": victims, "progress": False}
    try:
        if method == "audit":
            defense = replace(FAMILY, sigma=sigma)
            records, wall, cpu = _timed(lambda: audit(model, data.train_set, suite, folder, defense, **common))
            return {"sigma": sigma, "leaked": [r.context["label"] for r in records if r.attack.findings().leaked],
                    "wall_s": wall, "cpu_s": cpu}  # fmt: skip
        found, wall, cpu = _timed(lambda: calibrate(model, data.train_set, suite, FAMILY, folder, held_out=held_out,
                                                    search=method, **common))  # fmt: skip
        audits = sum(1 for _ in folder.rglob("results.jsonl"))
        return {"sigma": found.search.sigma, "leaking_sigma": found.search.leaking, "outcome": found.outcome,
                "reconstruction_sigma": found.reconstruction.sigma, "sigmas_tried": len(found.search.evaluations),
                "audit_folders": audits, "wall_s": wall, "cpu_s": cpu, "suite": list(suite)}  # fmt: skip
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def _order(archs: list[str]) -> Iterator[tuple[str, str]]:
    """Sweep and bisection alternating across architectures (ABBA), then each audit at the answer."""
    for index, arch in enumerate(archs):
        methods = ("sweep", "bisection") if index % 2 == 0 else ("bisection", "sweep")
        yield from ((arch, method) for method in methods)
    yield from ((arch, "audit") for arch in archs)


def _table(rows: list[dict[str, Any]]) -> str:
    by = {(row["arch"], row["method"]): row for row in rows}
    lines = []
    for arch in dict.fromkeys(row["arch"] for row in rows):
        sweep, bisection, one = (by.get((arch, method)) for method in ("sweep", "bisection", "audit"))
        if not (sweep and bisection):
            continue
        sigmas = f"{_sigma(sweep['sigma'])} / {_sigma(bisection['sigma'])}"
        # times compare only where both found an answer: a search that stops at its cap did less
        both = bool(sweep["sigma"] and bisection["sigma"])
        cells = [arch, sigmas, f"{sweep['wall_s']:.0f} / {bisection['wall_s']:.0f}",
                 _ratio(bisection["wall_s"], sweep["wall_s"]) if both else "- (answers differ)",
                 _ratio(bisection["cpu_s"], sweep["cpu_s"]) if both else "- (answers differ)",
                 _ratio(sweep["wall_s"], one["wall_s"]) if one else "-"]  # fmt: skip
        lines.append(cells)
    columns = ("arch", "sigma (sweep / bisection)", "wall s (sweep / bisection)", "bisection / sweep, wall",
               "bisection / sweep, CPU", "sweep / one audit at the answer, wall")  # fmt: skip
    return markdown_table(columns, lines)


def _sigma(value: Optional[float]) -> str:
    return "none" if value is None else f"{value:.4g}"


def _ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}x" if denominator > 0 else "-"


def main(argv: Optional[list[str]] = None) -> None:
    """Run (or resume) the comparison and write its JSON lines and table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--victims", type=int, default=8)
    parser.add_argument("--held-out", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", type=Path, default=None, help="keep the audit folders here")
    parser.add_argument("--note", default="", help="a paragraph under the table, e.g. why two answers differ")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = OfflineMNISTDataModule()
    data.setup("fit")
    path = args.out / "calibrate_speed.jsonl"
    args.out.mkdir(parents=True, exist_ok=True)
    rows = read_records(path)
    for arch, method in _order(args.archs):
        if any(row["arch"] == arch and row["method"] == method for row in rows):
            continue
        answer = next((row["sigma"] for row in rows if row["arch"] == arch and row["method"] == "sweep"), None)
        if method == "audit" and answer is None:
            continue
        row = {"arch": arch, "method": method, "victims": args.victims, "held_out": args.held_out,
               **measure(arch, method, data, args.victims, args.held_out, answer, args.keep),
               "device": f"cpu: {platform.machine()}, torch threads 1"}  # fmt: skip
        rows.append(row)
        append_record(path, row)
        print(json.dumps(row), flush=True)
        _write_table(args.out, rows, args.note)  # after every run: a partial comparison is readable too
    _write_table(args.out, rows, args.note)


def _write_table(out: Path, rows: list[dict[str, Any]], note: str = "") -> None:
    title = "# Calibration: sweep vs bisection\n\n" + __doc__.split("\n\n")[1] + "\n\n"
    (out / "calibrate_speed.md").write_text(title + _table(rows) + "\n" + (f"\n{note}\n" if note else ""))


if __name__ == "__main__":
    main()
