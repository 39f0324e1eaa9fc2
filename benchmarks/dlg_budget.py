"""What DLG's L-BFGS iterations buy on the mlp: findings and cost per budget, with the stopping rule.

DLG (L-BFGS, up to 20 function evaluations per step) attacks the same victims of the mlp-1024 at
initialisation, undefended or with PRECODE (``--precode``: its sampling on, as DLG meets it in the
PRECODE audit), at several budgets, with the stopping rule on (each problem stops when
its objective stalls) and off (``patience=0``: every step of the budget runs). For each: victims
reconstructed and identified (the audit's scoring: the calibrated pixel rule, 100 candidates),
median NCC, the steps the problems ran and how they stopped, wall and CPU seconds. Torch on one
thread; each run is appended to ``dlg_budget.jsonl`` as it finishes and skipped on a rerun.

    python -m benchmarks.dlg_budget [--budgets 10 25 50 100] [--victims 4] [--width 1024] [--precode]

Writes ``benchmarks/results/dlg_budget.jsonl`` and ``dlg_budget.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import torch

from datamodules import OfflineMNISTDataModule
from ppp_lightning.assessment.assess import assess
from ppp_lightning.assessment.metrics import ReconstructionMetrics
from ppp_lightning.assessment.record import Convergence
from ppp_lightning.assessment.reidentification import Reidentifier
from ppp_lightning.assessment.reporting import append_record, markdown_table, read_records
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.gradients import client_gradient
from ppp_lightning.models import build_network
from ppp_lightning.victims import draw_victims, floor_image

__all__ = ["main", "measure"]

RESULTS = Path(__file__).resolve().parent / "results"
PRECODE = {"latent_dim": 256, "beta": 0.001}  # as in the evidence grid


def measure(data: Any, width: int, victims: int, budget: int, stopping: bool, precode: bool) -> dict[str, Any]:
    """DLG at ``budget`` steps on the mlp's victims (with PRECODE or without), scored as the audit scores."""
    torch.manual_seed(0)
    model = build_network("mlp", 10, (3, 32, 32), PRECODE if precode else None, width=width).train()
    images, labels = draw_victims(data.train_set, victims, 0, stratified=True)
    gradients = [client_gradient(model, images[i : i + 1], labels[i : i + 1]) for i in range(victims)]
    settings = {"iterations": budget, "progress": False, "tie_channels": True, **({} if stopping else {"patience": 0})}
    attack = AttackSpec("dlg", settings).build(data.mean, data.std)
    wall, cpu = time.perf_counter(), time.process_time()
    results = attack.run(model, gradients, list(labels.split(1)), (1, *images.shape[1:]))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    metrics = ReconstructionMetrics(data.mean, data.std, one_channel=True)
    reidentifier = Reidentifier(data.train_set, data.mean, data.std, True)
    reconstructions = torch.cat([result.images for result in results])
    found = assess(metrics, reconstructions, images, labels, floor_image(data.train_set), reidentifier,
                   convergence=Convergence.of(results)).attack  # fmt: skip
    steps = [count for per_gradient in found.convergence.iterations for count in per_gradient]
    return {"reconstructed": sum(found.reconstructed), "identified": sum(found.identified or []),
            "median_ncc": round(statistics.median(found.scores["per_image"]["ncc"]), 3),
            "median_steps": statistics.median(steps), "stopped_by_budget": found.convergence.budget_share,
            "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}  # fmt: skip


def _table(rows: list[dict[str, Any]]) -> str:
    columns = ("model", "budget", "stopping rule", "reconstructed", "identified", "median NCC", "median steps run",
               "stopped by the budget", "wall s", "CPU s")  # fmt: skip
    cells = [["PRECODE" if r.get("precode") else "undefended", str(r["budget"]), "on" if r["stopping"] else "off", f"{r['reconstructed']}/{r['victims']}",
              f"{r['identified']}/{r['victims']}", f"{r['median_ncc']:.3f}", f"{r['median_steps']:g}",
              f"{r['stopped_by_budget']:.0%}", f"{r['wall_s']:.0f}", f"{r['cpu_s']:.0f}"]
             for r in sorted(rows, key=lambda r: (r.get("precode", False), r["budget"], not r["stopping"]))]  # fmt: skip
    return markdown_table(columns, cells)


def main(argv: Optional[list[str]] = None) -> None:
    """Run (or resume) every budget, with and without the stopping rule, and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", nargs="+", type=int, default=[10, 25, 50, 100])
    parser.add_argument("--victims", type=int, default=4)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--precode", action="store_true", help="attack the mlp with PRECODE (sampling on)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    data = OfflineMNISTDataModule()
    data.setup("fit")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "dlg_budget.jsonl"
    rows = read_records(path)
    for budget in args.budgets:
        for stopping in (True, False):
            key = {"budget": budget, "stopping": stopping, "victims": args.victims, "width": args.width,
                   "precode": args.precode}  # fmt: skip
            if any(all(row.get(k, False) == v for k, v in key.items()) for row in rows):
                continue
            row = {**key, **measure(data, args.width, args.victims, budget, stopping, args.precode)}
            rows.append(row)
            append_record(path, row)
            title = "# DLG's budget on the mlp\n\n" + __doc__.split("\n\n")[1] + "\n\n"
            (args.out / "dlg_budget.md").write_text(title + _table(rows) + "\n")


if __name__ == "__main__":
    main()
