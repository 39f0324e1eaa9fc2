"""The labelled calibration set: reconstructions across the quality range, judged by eye, and each metric's AUC.

``python -m benchmarks.calibration generate`` attacks training victims on the undefended and
noise-defended cnn and mlp with budgets from a few to hundreds of iterations (so the set spans
unrecognisable to exact), and writes the reconstructions (``set.pt``) and numbered sheets
(``sheet_*.png``) into ``benchmarks/results/calibration/``. A person looks at every sheet and
writes ``labels.json``: for each number, whether the victim is recognisable (the same digit
shape, not just a digit of its class). ``python -m benchmarks.calibration report`` then computes
each metric's ROC AUC against those labels (PSNR, SSIM, NCC on three channels, NCC on the channel
mean, re-identification) and the accuracy of threshold rules, into ``calibration.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torchvision.utils import save_image

from datamodules import OfflineMNISTDataModule
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.defense import DefenseSpec
from ppp_lightning.gradients import client_gradient
from ppp_lightning.metrics import abs_ncc, channel_view, image_scores, to_unit_interval
from ppp_lightning.models import build_network
from ppp_lightning.reidentification import Reidentifier
from ppp_lightning.seeding import seeded
from ppp_lightning.sheets import SheetRow, draw_sheet
from ppp_lightning.victims import draw_victims

__all__ = ["CELLS", "auc", "generate", "report"]

OUT = Path(__file__).resolve().parent / "results" / "calibration"
# (arch, relative noise sigma on all layers or 0, attack budgets); 8 victims per budget, 112 in all.
CELLS = [
    ("cnn", 0.0, (5, 20, 60, 200, 1000)),
    ("mlp", 0.0, (3, 10, 30)),
    ("cnn", 0.3, (60, 300)),
    ("cnn", 1.0, (300,)),
    ("mlp", 1.0, (100,)),
    ("mlp", 3.0, (100,)),
    ("mlp", 10.0, (100,)),
]
VICTIMS_PER_BUDGET = 8
PER_SHEET = 24


def generate(out: Path = OUT, seed: int = 0) -> list[dict[str, Any]]:
    """Attack, store the reconstructions with their settings, and draw numbered sheets to label."""
    data = OfflineMNISTDataModule()
    data.setup("fit")
    total = VICTIMS_PER_BUDGET * sum(len(budgets) for _, _, budgets in CELLS)
    images, labels = draw_victims(data.train_set, total, seed)
    items, count = [], 0
    for arch, sigma, budgets in CELLS:
        with seeded(seed):
            model = build_network(arch, 10, (3, 32, 32), None, **({"width": 256} if arch == "mlp" else {})).train()
        defense = DefenseSpec(layers="all", sigma=sigma, relative=True).resolve(model) if sigma else None
        for budget in budgets:
            x, y = images[count : count + VICTIMS_PER_BUDGET], labels[count : count + VICTIMS_PER_BUDGET]
            count += VICTIMS_PER_BUDGET
            noise = torch.Generator().manual_seed(seed + count)
            shared = [client_gradient(model, v[None], t[None], defense, noise_generator=noise) for v, t in zip(x, y)]
            spec = AttackSpec("inverting", {"iterations": budget, "patience": 0, "progress": False})
            results = spec.build(data.mean, data.std).run(model, shared, list(y[:, None]), (1, 3, 32, 32))
            for victim, label, result in zip(x, y, results):
                items.append({"arch": arch, "sigma": sigma, "iterations": budget, "truth": victim, "label": int(label),
                              "reconstruction": result.images[0]})  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    torch.save(items, out / "set.pt")
    _sheets(items, data, out)
    return items


def _sheets(items: list[dict[str, Any]], data: Any, out: Path) -> None:
    for start in range(0, len(items), PER_SHEET):
        chunk = items[start : start + PER_SHEET]
        truth = to_unit_interval(torch.stack([i["truth"] for i in chunk]), data.mean, data.std)
        recon = to_unit_interval(torch.stack([i["reconstruction"] for i in chunk]), data.mean, data.std)
        numbers = [str(start + k) for k in range(len(chunk))]
        for half in (slice(0, PER_SHEET // 2), slice(PER_SHEET // 2, PER_SHEET)):
            if not numbers[half]:
                continue
            rows = [SheetRow("truth", truth[half], numbers[half]), SheetRow("attack", recon[half])]
            sheet = draw_sheet(f"calibration items {numbers[half][0]}-{numbers[half][-1]}", rows)
            save_image(sheet, out / f"sheet_{int(numbers[half][0]):03d}.png")


def auc(scores: Tensor, positives: Tensor) -> float:
    """ROC AUC: the probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = scores[positives], scores[~positives]
    greater = (pos[:, None] > neg[None, :]).float().mean()
    ties = (pos[:, None] == neg[None, :]).float().mean()
    return float(greater + 0.5 * ties)


def report(out: Path = OUT) -> str:
    """Every metric's AUC against the labels, and the accuracy of threshold rules; writes ``calibration.md``."""
    data = OfflineMNISTDataModule()
    data.setup("fit")
    items = torch.load(out / "set.pt")
    labels = json.loads((out / "labels.json").read_text())
    recognisable = torch.tensor([labels[str(k)] for k in range(len(items))])
    truth = to_unit_interval(torch.stack([i["truth"] for i in items]), data.mean, data.std)
    recon = to_unit_interval(torch.stack([i["reconstruction"] for i in items]), data.mean, data.std)
    scores = image_scores(recon, truth)
    scores["ncc (channel mean)"] = abs_ncc(channel_view(recon, True), channel_view(truth, True))
    reidentifier = Reidentifier(data.train_set, data.mean, data.std, one_channel=True)
    found = reidentifier(torch.stack([i["reconstruction"] for i in items]), torch.stack([i["truth"] for i in items]),
                         torch.tensor([i["label"] for i in items]))  # fmt: skip
    scores["re-identification"] = torch.tensor([float(f.reidentified) for f in found])
    scores["mse"] = -scores["mse"]  # higher is better for the AUC
    lines = [
        "# Calibration: which metric says what a person sees",
        "",
        f"{len(items)} reconstructions (`python -m benchmarks.calibration generate`), {int(recognisable.sum())} judged "
        "recognisable by eye (`labels.json`: the victim's own digit shape is visible). ROC AUC of each metric "
        "against the labels (1: perfect ranking, 0.5: chance):",
        "",
        "| metric | ROC AUC |",
        "|---|---|",
        *(f"| {name} | {auc(values, recognisable):.3f} |" for name, values in scores.items()),
        "",
        "Threshold rules (accuracy against the labels):",
        "",
        "| rule | accuracy | true positives | false positives |",
        "|---|---|---|---|",
    ]
    rules = {
        f"ncc (channel mean) >= {t}": scores["ncc (channel mean)"] >= t
        for t in (0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.85)
    }
    rules.update({f"ncc >= {t}": scores["ncc"] >= t for t in (0.7, 0.8, 0.85)})
    rules["re-identified"] = scores["re-identification"] > 0
    for t in (0.4, 0.5, 0.6):
        rules[f"re-identified and ncc (channel mean) >= {t}"] = (
            rules["re-identified"] & rules[f"ncc (channel mean) >= {t}"]
        )
    for name, decided in rules.items():
        accuracy = float((decided == recognisable).float().mean())
        lines.append(
            f"| {name} | {accuracy:.3f} | {int((decided & recognisable).sum())} | {int((decided & ~recognisable).sum())} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "calibration.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["generate", "report"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.step == "generate":
        print(f"{len(generate(args.out))} reconstructions; label the sheets in {args.out} into labels.json")
    else:
        print(report(args.out))


if __name__ == "__main__":
    main()
