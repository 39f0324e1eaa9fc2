"""Step-time overhead of PartialPerturbation: training with the callback vs the same training without.

PPP (PRECODE model, Gaussian noise before the bottleneck, encoder included) on random 3x32x32
batches; only the training step is timed (``on_train_batch_start`` to ``on_train_batch_end``, wall
clock and process CPU time), after warm-up steps. Runs with and without the callback alternate (their
order reversed every other repeat) so that drifting machine load hits both alike; a ratio is taken
per repeat from that repeat's median step times and reported as the median with its range.

    python -m benchmarks.perturbation_overhead [--archs resnet18 cnn] [--steps 4] [--repeats 2] [--threads 1]
                                               [--note TEXT]

Writes ``benchmarks/results/perturbation_overhead.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset
from typing_extensions import override

from callbacks import PartialPerturbation
from ppp_lightning import ImageClassifier

__all__ = ["StepTimer", "overhead", "step_times"]

RESULTS = Path(__file__).resolve().parent / "results"


class StepTimer(pl.Callback):
    """Wall and process CPU time of each training step (forward, backward, perturbation, optimizer step)."""

    def __init__(self) -> None:
        self.times: list[tuple[float, float]] = []

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._start = time.perf_counter(), time.process_time()

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.times.append((time.perf_counter() - self._start[0], time.process_time() - self._start[1]))


def step_times(arch: str, perturbed: bool, steps: int, warmup: int, batch_size: int, sigma: float) -> list[tuple[float, float]]:
    """(wall, CPU) times of ``steps`` timed steps after ``warmup`` untimed ones."""
    pl.seed_everything(0, verbose=False)
    model = ImageClassifier(arch, precode={})
    data = TensorDataset(torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,)))
    timer = StepTimer()
    callbacks = [timer, PartialPerturbation(sigma=sigma)] if perturbed else [timer]
    trainer = pl.Trainer(
        max_steps=warmup + steps,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, DataLoader(data, batch_size=batch_size))
    return timer.times[warmup:]


def overhead(arch: str, args: argparse.Namespace) -> dict[str, Any]:
    """Median step times with and without the callback, and the per-repeat ratios, over ``args.repeats`` alternations."""
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    for repeat in range(args.repeats):
        run = {
            perturbed: step_times(arch, perturbed, args.steps, args.warmup, args.batch_size, args.sigma)
            for perturbed in ((False, True) if repeat % 2 == 0 else (True, False))
        }
        for i, clock in enumerate(("wall", "cpu")):
            ratios[clock].append(_median(run[True], i) / _median(run[False], i))
        for perturbed, steps in run.items():
            times[perturbed] += steps
    result: dict[str, Any] = {"timed_steps_each": len(times[True])}
    for i, clock in enumerate(("wall", "cpu")):
        result |= {
            f"{clock}_baseline_step_s": _median(times[False], i),
            f"{clock}_ppp_step_s": _median(times[True], i),
            f"{clock}_ratio": statistics.median(ratios[clock]),
            f"{clock}_ratios": ratios[clock],
        }
    return result


def _median(steps: list[tuple[float, float]], clock: int) -> float:
    return statistics.median(step[clock] for step in steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "cnn"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per run")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per setting")
    parser.add_argument("--sigma", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadier on a shared machine)")
    parser.add_argument("--note", default="", help="a line under the table, e.g. the machine's load")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {arch: overhead(arch, args) for arch in args.archs}
    device = "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu: {platform.processor() or platform.machine()}"
    report = {
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "setting": f"PPP: PRECODE model, layers=before_bottleneck, include_encoder, gaussian sigma={args.sigma}",
        "results": results,
        "note": args.note,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "perturbation_overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = [
        f"| {arch} | {clock} | {r[f'{clock}_baseline_step_s']:.4f} | {r[f'{clock}_ppp_step_s']:.4f} | "
        f"{r[f'{clock}_ratio']:.3f} ({min(r[f'{clock}_ratios']):.3f}-{max(r[f'{clock}_ratios']):.3f}) |"
        for arch, r in results.items()
        for clock in ("wall", "cpu")
    ]
    note = f"\nNote: {args.note}\n" if args.note else ""
    (RESULTS / "perturbation_overhead.md").write_text(
        "# PartialPerturbation step-time overhead\n\n"
        f"{report['setting']}; batch {args.batch_size}; {device}, {report['torch_threads']} threads; "
        f"median of {args.repeats} x {args.steps} timed steps after {args.warmup} warm-up steps per run; the ratio "
        "is the median (min-max) over repeats of each repeat's median step time with over without.\n\n"
        "CPU is the process's CPU time per step, which other jobs on a shared machine disturb less than wall time.\n\n"
        "| arch | clock | without (s/step) | with (s/step) | ratio (min-max) |\n|---|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
        + note
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
