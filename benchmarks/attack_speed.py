"""Gradient inversion speed: seconds per attack iteration, and batched restarts against sequential ones.

Inverting Gradients on one 3x32x32 image of an untrained model in training mode (no defense). An
iteration's cost is the time difference between a long and a short attack divided by their
difference in iterations, so the fixed set-up (tracing, label handling) cancels. For ``restarts``
restarts it is measured batched (``torch.func.vmap`` over restarts, the default) and sequential
(``batched=False``: one restart after another in each iteration, the cost of running the restarts
one after another); the speed-up is their ratio. Wall clock and process CPU time (less disturbed by
other jobs on a shared machine) are both reported, as medians over ``repeats`` alternating runs.

    python -m benchmarks.attack_speed [--archs cnn resnet18 resnet18-group] [--restarts 4] [--repeats 3]

Writes ``benchmarks/results/attack_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from ppp_lightning.attacks import AttackSpec
from ppp_lightning.gradients import client_gradient
from ppp_lightning.models import build_network

__all__ = ["attack_time", "measure", "per_iteration"]

RESULTS = Path(__file__).resolve().parent / "results"
ARCHS = {"cnn": ("cnn", {}), "resnet18": ("resnet18", {}), "resnet18-group": ("resnet18", {"norm": "group"})}


def attack_time(
    model: torch.nn.Module, shared: dict, labels: torch.Tensor, iterations: int, **settings: Any
) -> tuple[float, float]:
    """(wall, CPU) seconds of one Inverting Gradients attack with further ``settings`` (e.g. ``restarts``)."""
    attack = AttackSpec("inverting", {"iterations": iterations, "progress": False, **settings}).build()
    wall, cpu = time.perf_counter(), time.process_time()
    attack(model, shared, labels, (1, 3, 32, 32))
    if labels.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def per_iteration(
    model: torch.nn.Module, shared: dict, labels: torch.Tensor, short: int, long: int, **settings: Any
) -> tuple[float, float]:
    """(wall, CPU) seconds per iteration from a short and a long attack."""
    first = attack_time(model, shared, labels, short, **settings)
    second = attack_time(model, shared, labels, long, **settings)
    return tuple((b - a) / (long - short) for a, b in zip(first, second))


def measure(name: str, restarts: int, short: int, long: int, repeats: int, device: torch.device) -> dict:
    """Per-iteration times of one architecture: one restart, and ``restarts`` batched and sequential."""
    arch, kwargs = ARCHS[name]
    torch.manual_seed(0)
    model = build_network(arch, 10, (3, 32, 32), None, **kwargs).to(device).train()
    images, labels = torch.randn(1, 3, 32, 32, device=device), torch.tensor([3], device=device)
    shared = client_gradient(model, images, labels)
    settings = {"single": {}, "batched": {"restarts": restarts}, "sequential": {"restarts": restarts, "batched": False}}
    attack_time(model, shared, labels, 1, restarts=restarts)  # warm-up
    samples = {key: [] for key in settings}
    for _ in range(repeats):  # alternate so that drifting machine load hits every setting alike
        for key, extra in settings.items():
            samples[key].append(per_iteration(model, shared, labels, short, long, **extra))
    result = {"arch": name, "restarts": restarts}
    for key, values in samples.items():
        result[f"{key}_wall_s"] = statistics.median(wall for wall, _ in values)
        result[f"{key}_cpu_s"] = statistics.median(cpu for _, cpu in values)
    for clock in ("wall", "cpu"):
        result[f"speedup_{clock}"] = result[f"sequential_{clock}_s"] / result[f"batched_{clock}_s"]
    return result


def write(results: list[dict], meta: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "attack_speed.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    lines = [
        "# Attack speed",
        "",
        f"Inverting Gradients, one 3x32x32 image, untrained model in training mode; {meta['device']}, "
        f"{meta['threads']} threads, torch {meta['torch']}. Seconds per iteration from attacks of "
        f"{meta['short']} and {meta['long']} iterations, median of {meta['repeats']} runs. CPU is the "
        "process's CPU time (all threads), less disturbed by other jobs than wall time.",
        "",
        "Speed-up: sequential restarts (one after another) / batched restarts (`torch.func.vmap`).",
        "",
        "| arch | clock | 1 restart (s/it) | R batched (s/it) | R sequential (s/it) | R | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for clock in ("wall", "cpu"):
            lines.append(
                f"| {r['arch']} | {clock} | {r[f'single_{clock}_s']:.4f} | {r[f'batched_{clock}_s']:.4f} | "
                f"{r[f'sequential_{clock}_s']:.4f} | {r['restarts']} | {r[f'speedup_{clock}']:.2f} |"
            )
    (out / "attack_speed.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--iterations", type=int, nargs=2, default=(3, 11), metavar=("SHORT", "LONG"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="1: no spinning threads on a shared machine")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    short, long = args.iterations
    meta = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else f"cpu: {platform.machine()}",
        "threads": args.threads,
        "torch": torch.__version__,
        "short": short,
        "long": long,
        "repeats": args.repeats,
    }
    results = []
    for name in args.archs:
        results.append(measure(name, args.restarts, short, long, args.repeats, device))
        print(json.dumps(results[-1]), flush=True)
    write(results, meta, args.out)


if __name__ == "__main__":
    main()
