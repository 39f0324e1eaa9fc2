"""The labelled calibration set: reconstructions across the quality range, judged by eye, and each metric's AUC.

``python -m benchmarks.calibration generate`` attacks training victims on the undefended and
noise-defended cnn and mlp with budgets from a few to hundreds of iterations (so the set spans
unrecognisable to exact), and writes the reconstructions (``set.pt``) and numbered sheets
(``sheet_*.png``) into ``benchmarks/results/calibration/``. A person looks at every sheet and
writes ``labels.json``: for each number, whether the victim is recognisable (the same digit
shape, not just a digit of its class). ``python -m benchmarks.calibration report`` then computes
each metric's ROC AUC against those labels (PSNR, SSIM, NCC on three channels, NCC on the channel
mean, re-identification) and the accuracy of threshold rules, into ``calibration.md``.

The second set (v2, ``generate-v2`` / ``report-v2``, folder ``benchmarks/results/calibration_v2/``)
covers the regimes verdicts depend on and v1 lacks: the cnn (and an mlp) with PRECODE, alone and
under PPP or noise on every layer, at initialisation and after one epoch, attacked by the suite's
targeted, adaptive, feature-inversion and clean-layer attacks (:data:`CELLS_V2`). Its items are
shuffled across cells with a fixed seed before they are numbered, every sheet adds a min-max
stretched copy of each reconstruction, and ``key.json`` (item number -> cell) is kept from the
labeller. ``report-v2`` scores it against ``labels.json`` per cell and over v1 and v2 together.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor
from torchvision.utils import save_image

from datamodules import OfflineMNISTDataModule
from ppp_lightning.assessment.metrics import abs_ncc, channel_view, image_scores, to_unit_interval
from ppp_lightning.assessment.reidentification import Reidentifier
from ppp_lightning.assessment.sheets import SheetRow, draw_sheet
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.attacks.suite import attack_suite
from ppp_lightning.auditing.audit import audited_gradients
from ppp_lightning.defenses.spec import DefenseSpec
from ppp_lightning.gradients import client_gradient
from ppp_lightning.losses import classification_terms
from ppp_lightning.models import build_network
from ppp_lightning.seeding import seeded
from ppp_lightning.victims import draw_victims

__all__ = ["CELLS", "CELLS_V2", "Cell", "auc", "generate", "generate_v2", "report", "report_v2"]

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

OUT_V2 = OUT.parent / "calibration_v2"
PRECODE_V2 = {"latent_dim": 256, "beta": 1e-3}  # the reference PRECODE, as ImageClassifier builds it
ITERATIONS_V2: Optional[int] = None  # a cap on the attacks' budgets; None: the suite's defaults (1,000 steps)
SHUFFLE_SEED = 2024  # the order of the numbered v2 items: position on a sheet reveals no cell
THRESHOLDS_V2 = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Cell:
    """One v2 setting: a model (cnn or mlp with PRECODE, untrained or after one epoch), a defense and a suite attack.

    Args:
        attack: the attack's label in :func:`~ppp_lightning.attacks.suite.attack_suite`.
        arch: ``cnn`` or ``mlp`` (width 256), each with the reference PRECODE.
        state: ``init`` (at initialisation) or ``epoch1`` (one epoch on the offline MNIST digits).
        layers: ``None`` (PRECODE alone), ``before_bottleneck`` (PPP) or ``all`` (noisy gradients).
        sigma: relative Gaussian noise on the selected gradients.
        precode: whether the model has the reference PRECODE (the noisy-gradients baseline has none,
            as in the evidence benchmark's ``noise_all`` family).
    """

    attack: str
    arch: str = "cnn"
    state: str = "init"
    layers: Optional[str] = None
    sigma: float = 0.0
    precode: bool = True

    @property
    def defense_name(self) -> str:
        if self.layers is None:
            return "precode alone"
        return f"{'ppp' if self.layers == 'before_bottleneck' else 'noise on all layers'} sigma {self.sigma:g}"

    @property
    def name(self) -> str:
        model = f"{self.arch}{'' if self.precode else ' without precode'} {self.state}"
        return f"{model}, {self.defense_name}: {self.attack}"

    def defense(self) -> Optional[DefenseSpec]:
        return None if self.layers is None else DefenseSpec(layers=self.layers, sigma=self.sigma, relative=True)


CELLS_V2 = [
    # PRECODE alone: the plain attack (PRECODE samples in training mode) and the ones aimed at it.
    Cell("inverting"),
    Cell("inverting/before_decoder"),
    Cell("adaptive"),
    Cell("feature_inversion"),
    # PPP near its threshold (a pilot of 2 victims put the median NCC near 0.5 at sigma 4 for the
    # targeted attack, at sigma 10-15 for the adaptive one).
    *(Cell("inverting/before_decoder", layers="before_bottleneck", sigma=s) for s in (2.0, 4.0, 5.0, 7.0)),
    *(Cell("adaptive", layers="before_bottleneck", sigma=s) for s in (7.0, 10.0, 15.0, 25.0)),
    # Noise on every layer of the cnn without PRECODE (the noisy-gradients baseline).
    *(Cell("inverting", layers="all", sigma=s, precode=False) for s in (3.0, 5.0, 10.0, 30.0)),
    # The clean-layer attack under PPP (it matches only the gradients PPP leaves clean).
    Cell("clean_layer", layers="before_bottleneck", sigma=4.0),
    Cell("clean_layer", state="epoch1", layers="before_bottleneck", sigma=4.0),
    # After one epoch, without and with a moderate PPP sigma.
    Cell("inverting/before_decoder", state="epoch1"),
    Cell("adaptive", state="epoch1"),
    Cell("inverting/before_decoder", state="epoch1", layers="before_bottleneck", sigma=7.0),
    Cell("adaptive", state="epoch1", layers="before_bottleneck", sigma=10.0),
    # An mlp (width 256) with PRECODE under PPP: at sigma 3 it still leaks exactly; sigma 30 is its edge.
    Cell("inverting/before_decoder", arch="mlp", layers="before_bottleneck", sigma=3.0),
    Cell("inverting/before_decoder", arch="mlp", layers="before_bottleneck", sigma=30.0),
    Cell("inverting/before_decoder", arch="mlp", state="epoch1", layers="before_bottleneck", sigma=30.0),
]


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


def v2_network(arch: str, precode: bool = True, seed: int = 0) -> torch.nn.Module:
    """The v2 model at initialisation: ``build_network`` with the reference PRECODE (or none) for MNIST 3x32x32."""
    with seeded(seed):
        bottleneck = dict(PRECODE_V2) if precode else None
        return build_network(arch, 10, (3, 32, 32), bottleneck, **({"width": 256} if arch == "mlp" else {}))


def train_one_epoch(model: torch.nn.Module, dataset: Any, seed: int = 0, batch_size: int = 64) -> float:
    """One epoch of Adam (lr 1e-3, the classifier's reference) on the client's loss; the epoch's accuracy."""
    loader = torch.utils.data.DataLoader(dataset, batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    correct = seen = 0
    with seeded(seed):
        for x, y in loader:
            terms = classification_terms(lambda: model(x), y)
            optimizer.zero_grad()
            terms.loss.backward()
            optimizer.step()
            correct += int((terms.logits.argmax(1) == y).sum())
            seen += len(y)
    return correct / seen


def generate_v2(
    out: Path = OUT_V2,
    seed: int = 0,
    victims: int = VICTIMS_PER_BUDGET,
    iterations: Optional[int] = ITERATIONS_V2,
    cells: Sequence[Cell] = tuple(CELLS_V2),
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Attack ``victims`` distinct training victims per cell, shuffle, number, store and draw the sheets.

    Writes ``set.pt`` (per item, in number order: truth, reconstruction, stretched reconstruction,
    label and the cell's settings), ``key.json`` (item number -> cell; not for the labeller) and
    ``sheet_NNN.png`` (victim, reconstruction and stretched reconstruction of 12 items, numbers only).
    """
    data = OfflineMNISTDataModule()
    data.setup("fit")
    images, labels = draw_victims(data.train_set, victims * len(cells), seed)
    models: dict[tuple[str, bool, str], torch.nn.Module] = {}
    items: list[dict[str, Any]] = []
    started = time.perf_counter()
    for index, cell in enumerate(cells):
        if (cell.arch, cell.precode, cell.state) not in models:
            model = v2_network(cell.arch, cell.precode, seed)
            if cell.state == "epoch1":
                accuracy = train_one_epoch(model, data.train_set, seed)
                log(f"trained {cell.arch} (precode: {cell.precode}) one epoch: training accuracy {accuracy:.3f}")
            models[cell.arch, cell.precode, cell.state] = model.train()
        model = models[cell.arch, cell.precode, cell.state]
        x, y = images[index * victims : (index + 1) * victims], labels[index * victims : (index + 1) * victims]
        defense = cell.defense()
        # Each victim's PRECODE sample and noise drawn with its own seed, as the audit draws them.
        shared = audited_gradients(model, x, y, defense, seed + 1000 * index, control=False).shared
        spec = attack_suite(model, x[:1], defense, names=[cell.attack], tie_channels=True)[cell.attack]
        if iterations is not None and "iterations" in spec.options():
            spec = spec.replace(iterations=min(spec.get("iterations"), iterations))
        tick = time.perf_counter()
        results = spec.build(data.mean, data.std).run(copy.deepcopy(model), shared, list(y[:, None]), (1, 3, 32, 32))
        recon = torch.stack([result.images[0].detach().cpu().expand(3, -1, -1) for result in results])
        ncc = abs_ncc(*(channel_view(to_unit_interval(t, data.mean, data.std), True) for t in (recon, x)))
        log(f"[{index + 1}/{len(cells)}] {cell.name}: {time.perf_counter() - tick:.0f} s; "
            f"ncc (channel mean) {' '.join(f'{v:.2f}' for v in ncc.tolist())}")  # fmt: skip
        for victim, label, image in zip(x, y, recon):
            items.append({"truth": victim, "reconstruction": image, "label": int(label), **asdict(cell),
                          "cell": cell.name, "attack_spec": spec.to_dict()})  # fmt: skip
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(SHUFFLE_SEED)).tolist()
    items = [{"number": number, **items[k]} for number, k in enumerate(order)]
    recon = to_unit_interval(torch.stack([i["reconstruction"] for i in items]), data.mean, data.std)
    for item, image in zip(items, stretch(recon)):
        item["stretched"] = image
    out.mkdir(parents=True, exist_ok=True)
    torch.save(items, out / "set.pt")
    fields = ("cell", "arch", "precode", "state", "attack", "layers", "sigma")
    key = {str(i["number"]): {k: i[k] for k in fields} for i in items}
    (out / "key.json").write_text(json.dumps(key, indent=1) + "\n")
    _sheets(items, data, out, title="calibration v2 items", stretched=True)
    log(f"{len(items)} items in {time.perf_counter() - started:.0f} s")
    return items


def stretch(images: Tensor) -> Tensor:
    """Each ``[0, 1]`` image min-max stretched to ``[0, 1]`` (a faint reconstruction made visible)."""
    low = images.amin((1, 2, 3), keepdim=True)
    high = images.amax((1, 2, 3), keepdim=True)
    return (images - low) / (high - low).clamp_min(1e-8)


def _sheets(
    items: list[dict[str, Any]], data: Any, out: Path, title: str = "calibration items", stretched: bool = False
) -> None:
    """Numbered sheets of 12 items: victim above reconstruction (above its stretched copy), nothing else."""
    for start in range(0, len(items), PER_SHEET):
        chunk = items[start : start + PER_SHEET]
        truth = to_unit_interval(torch.stack([i["truth"] for i in chunk]), data.mean, data.std)
        recon = to_unit_interval(torch.stack([i["reconstruction"] for i in chunk]), data.mean, data.std)
        numbers = [str(start + k) for k in range(len(chunk))]
        for half in (slice(0, PER_SHEET // 2), slice(PER_SHEET // 2, PER_SHEET)):
            if not numbers[half]:
                continue
            rows = [SheetRow("truth", truth[half], numbers[half]), SheetRow("attack", recon[half])]
            if stretched:
                rows.append(SheetRow("stretched", stretch(recon[half])))
            sheet = draw_sheet(f"{title} {numbers[half][0]}-{numbers[half][-1]}", rows)
            save_image(sheet, out / f"sheet_{int(numbers[half][0]):03d}.png")


def auc(scores: Tensor, positives: Tensor) -> float:
    """ROC AUC: the probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = scores[positives], scores[~positives]
    greater = (pos[:, None] > neg[None, :]).float().mean()
    ties = (pos[:, None] == neg[None, :]).float().mean()
    return float(greater + 0.5 * ties)


def _labelled(folder: Path, data: Any) -> tuple[list[dict[str, Any]], Tensor, dict[str, Tensor]]:
    """A set's items, its labels (``labels.json``) and every metric's scores (higher: more legible)."""
    items = torch.load(folder / "set.pt")
    labels = json.loads((folder / "labels.json").read_text())
    missing = [k for k in range(len(items)) if str(k) not in labels]
    if missing:
        raise ValueError(f"{folder / 'labels.json'} lacks items {missing}; label every sheet first")
    recognisable = torch.tensor([bool(labels[str(k)]) for k in range(len(items))])
    truth = to_unit_interval(torch.stack([i["truth"] for i in items]), data.mean, data.std)
    recon = to_unit_interval(torch.stack([i["reconstruction"] for i in items]), data.mean, data.std)
    scores = image_scores(recon, truth)
    scores["ncc (channel mean)"] = abs_ncc(channel_view(recon, True), channel_view(truth, True))
    reidentifier = Reidentifier(data.train_set, data.mean, data.std, one_channel=True)
    found = reidentifier(torch.stack([i["reconstruction"] for i in items]), torch.stack([i["truth"] for i in items]),
                         torch.tensor([i["label"] for i in items]))  # fmt: skip
    scores["re-identification"] = torch.tensor([float(f.reidentified) for f in found])
    scores["mse"] = -scores["mse"]  # higher is better for the AUC
    return items, recognisable, scores


def _auc_lines(scores: dict[str, Tensor], recognisable: Tensor) -> list[str]:
    return [
        "| metric | ROC AUC |",
        "|---|---|",
        *(f"| {name} | {auc(values, recognisable):.3f} |" for name, values in scores.items()),
    ]


def report(out: Path = OUT) -> str:
    """Every metric's AUC against the labels, and the accuracy of threshold rules; writes ``calibration.md``."""
    data = OfflineMNISTDataModule()
    data.setup("fit")
    items, recognisable, scores = _labelled(out, data)
    lines = [
        "# Calibration: which metric says what a person sees",
        "",
        f"{len(items)} reconstructions (`python -m benchmarks.calibration generate`), {int(recognisable.sum())} judged "
        "recognisable by eye (`labels.json`: the victim's own digit shape is visible). ROC AUC of each metric "
        "against the labels (1: perfect ranking, 0.5: chance):",
        "",
        *_auc_lines(scores, recognisable),
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


def _threshold_rules(scores: dict[str, Tensor], thresholds: Sequence[float]) -> dict[str, Tensor]:
    """NCC (channel mean) thresholds alone and with re-identification, and re-identification alone."""
    ncc, found = scores["ncc (channel mean)"], scores["re-identification"] > 0
    rules = {f"ncc (channel mean) >= {t:g}": ncc >= t for t in thresholds}
    rules.update({f"re-identified and ncc (channel mean) >= {t:g}": found & (ncc >= t) for t in thresholds})
    rules["re-identified"] = found
    return rules


def _rule_lines(rules: dict[str, Tensor], recognisable: Tensor) -> list[str]:
    lines = [
        "| rule | accuracy | true positives | false positives | false negatives |",
        "|---|---|---|---|---|",
    ]
    for name, decided in rules.items():
        accuracy = float((decided == recognisable).float().mean())
        hits, alarms = int((decided & recognisable).sum()), int((decided & ~recognisable).sum())
        lines.append(f"| {name} | {accuracy:.3f} | {hits} | {alarms} | {int((~decided & recognisable).sum())} |")
    return lines


def report_v2(out: Path = OUT_V2, v1: Path = OUT) -> str:
    """v2's AUCs, threshold rules, errors and per-cell table, and v1+v2 together; writes ``calibration.md``."""
    data = OfflineMNISTDataModule()
    data.setup("fit")
    items, recognisable, scores = _labelled(out, data)
    key = json.loads((out / "key.json").read_text())
    cells = [key[str(k)]["cell"] for k in range(len(items))]
    ncc, found = scores["ncc (channel mean)"], scores["re-identification"] > 0
    default = found & (ncc >= DEFAULT_THRESHOLD)
    lines = [
        "# Calibration v2: PRECODE, PPP, noise on all layers, targeted and adaptive attacks",
        "",
        f"{len(items)} reconstructions (`python -m benchmarks.calibration generate-v2`), {int(recognisable.sum())} "
        "judged recognisable by a blind labeller (`labels.json`: the victim's own digit shape is visible, not "
        "just a digit of its class). ROC AUC of each metric against the labels (1: perfect ranking, 0.5: chance):",
        "",
        *_auc_lines(scores, recognisable),
        "",
        "Threshold rules on v2 (false negatives: recognisable but the rule says not leaked):",
        "",
        *_rule_lines(_threshold_rules(scores, THRESHOLDS_V2), recognisable),
        "",
        f"## Errors of the default rule (re-identified and ncc (channel mean) >= {DEFAULT_THRESHOLD})",
        "",
        "| error | item | cell | ncc (channel mean) | re-identified |",
        "|---|---|---|---|---|",
    ]
    for error, wrong in (("false negative", recognisable & ~default), ("false positive", ~recognisable & default)):
        for k in wrong.nonzero().flatten().tolist():
            lines.append(f"| {error} | {k} | {cells[k]} | {float(ncc[k]):.3f} | {bool(found[k])} |")
    if not bool((recognisable != default).any()):
        lines.append("| none | | | | |")
    lines += [
        "",
        "## Per cell (labels against the default rule)",
        "",
        "| cell | items | recognisable | rule: leaked | false negatives | false positives "
        "| median ncc (channel mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for cell in sorted(set(cells)):
        mask = torch.tensor([c == cell for c in cells])
        r, d = recognisable[mask], default[mask]
        lines.append(f"| {cell} | {int(mask.sum())} | {int(r.sum())} | {int(d.sum())} | {int((r & ~d).sum())} | "
                     f"{int((~r & d).sum())} | {float(ncc[mask].median()):.3f} |")  # fmt: skip
    _, recognisable_v1, scores_v1 = _labelled(v1, data)
    both = {name: torch.cat([scores_v1[name], scores[name]]) for name in ("ncc (channel mean)", "re-identification")}
    legible = torch.cat([recognisable_v1, recognisable])
    lines += [
        "",
        f"## v1 + v2 together ({len(legible)} items, {int(legible.sum())} recognisable)",
        "",
        "| metric | ROC AUC |",
        "|---|---|",
        *(f"| {name} | {auc(values, legible):.3f} |" for name, values in both.items()),
        "",
        *_rule_lines(_threshold_rules(both, THRESHOLDS_V2), legible),
        "",
        *_chosen_threshold(both, legible),
    ]
    text = "\n".join(lines) + "\n"
    (out / "calibration.md").write_text(text)
    return text


def _chosen_threshold(scores: dict[str, Tensor], legible: Tensor) -> list[str]:
    """The largest NCC threshold (0.01 grid) that misses no recognisable reconstruction, and its false alarms."""
    ncc, found = scores["ncc (channel mean)"], scores["re-identification"] > 0
    if not bool(legible.any()):
        return ["No reconstruction was judged recognisable: no threshold to choose."]
    lowest = float(ncc[legible].min())
    chosen = torch.floor(torch.tensor(lowest) * 100 + 1e-6).item() / 100  # on the 0.01 grid, at most the lowest
    alarms = int((~legible & (ncc >= chosen)).sum())
    alarms_found = int((~legible & found & (ncc >= chosen)).sum())
    unfound = int((legible & ~found).sum())
    return [
        "**Chosen threshold** (the largest threshold that misses no legible reconstruction in v1+v2): "
        f"ncc (channel mean) >= {chosen:.2f} (the least NCC of a recognisable item is {lowest:.3f}). "
        f"Its false alarms: {alarms} of {int((~legible).sum())} unrecognisable items with NCC alone, "
        f"{alarms_found} with \"re-identified and\". Re-identification misses {unfound} recognisable "
        "item(s), which \"re-identified and\" misses at any threshold.",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["generate", "report", "generate-v2", "report-v2"])
    parser.add_argument("--out", type=Path, default=None, help="the set's folder (default: the step's own)")
    parser.add_argument("--v1", type=Path, default=OUT, help="report-v2: the v1 set's folder (for v1+v2)")
    parser.add_argument("--victims", type=int, default=VICTIMS_PER_BUDGET, help="generate-v2: victims per cell")
    parser.add_argument("--iterations", type=int, default=ITERATIONS_V2,
                        help="generate-v2: cap on attack budgets (default: the suite's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out or (OUT_V2 if args.step.endswith("-v2") else OUT)
    if args.step == "generate":
        print(f"{len(generate(out))} reconstructions; label the sheets in {out} into labels.json")
    elif args.step == "report":
        print(report(out))
    elif args.step == "generate-v2":
        items = generate_v2(out, victims=args.victims, iterations=args.iterations, log=lambda m: print(m, flush=True))
        print(f"{len(items)} reconstructions; a blind labeller labels the sheets in {out} into labels.json")
    else:
        print(report_v2(out, args.v1))


if __name__ == "__main__":
    main()
