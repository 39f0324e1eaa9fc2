"""Does this model, with this defense, leak? An attack suite on fixed victims, with positive controls.

The core of ``ppp-lightning audit``: every attack runs on the victims' defended gradients and, in
the same :meth:`run` call, on the same gradients without the defense (the control); each is
assessed (:func:`~ppp_lightning.assessment.assess`: scores, re-identification, verdict) and
appended to ``results.jsonl`` at once, so a rerun skips finished attacks. ``report.md`` holds the
table (attack, leaked k/n with 95% intervals, control, verdict) and the union over attacks.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn
from torchvision.utils import save_image
from tqdm.auto import tqdm

from ppp_lightning.assessment import assess
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.defense import DefenseSpec
from ppp_lightning.gradients import seeded_client_gradients
from ppp_lightning.metrics import ReconstructionMetrics, to_unit_interval
from ppp_lightning.reidentification import Reidentifier
from ppp_lightning.reporting import captions, read_records
from ppp_lightning.sheets import SheetRow, draw_sheet
from ppp_lightning.verdicts import LeakRate, union_over_attacks
from ppp_lightning.victims import draw_victims, floor_image

__all__ = ["audit"]

RESULTS, REPORT = "results.jsonl", "report.md"


def audit(
    model: nn.Module,
    dataset: Any,
    attacks: Mapping[str, AttackSpec],
    folder: Path,
    defense: Optional[DefenseSpec] = None,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    one_channel: bool = False,
    victims: int = 16,
    seed: int = 0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Attack ``victims`` training images of ``dataset`` with every attack, with controls; write the report.

    Args:
        model: the client's network (attacked in training mode, on a copy).
        dataset: the training set, items ``(normalised image, label)``.
        attacks: label -> attack.
        folder: where ``results.jsonl``, ``report.md`` and the sheets go.
        defense: the defense on the shared gradient (``None``: the gradient as it is, no control).
        mean: the data's normalisation mean.
        std: the data's normalisation standard deviation.
        one_channel: the data has one true channel.
        victims: how many victims (each alone in its batch), class-stratified.
        seed: seed of the victims, PRECODE samples, noise and re-identification rivals.
        progress: show a bar over attacks.

    Returns:
        Every attack's record (those of earlier runs included), in the order of ``attacks``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    done = {record["attack"]: record for record in read_records(folder / RESULTS)}
    images, labels = draw_victims(dataset, victims, seed, stratified=True)
    network = copy.deepcopy(model).train()
    shared, clean = _gradients(network, images, labels, defense, seed)
    metrics = ReconstructionMetrics(mean, std, one_channel=one_channel)
    reidentifier = Reidentifier(dataset, mean, std, one_channel, seed=seed)
    floor = floor_image(dataset)
    for label, spec in tqdm(attacks.items(), desc="audit", disable=not progress):
        if label in done:
            continue
        gradients = shared + (clean if defense is not None else [])
        results = spec.build(mean, std).run(
            copy.deepcopy(network),
            gradients,
            list(labels[:, None]) * (len(gradients) // victims),
            (1, *images.shape[1:]),
        )
        reconstructions = torch.cat([r.images for r in results])
        control = reconstructions[victims:] if defense is not None else None
        assessed = assess(metrics, reconstructions[:victims], images, labels, floor, reidentifier, control)
        record = {"attack": label, "spec": spec.to_dict(), "defense": None if defense is None else defense.to_dict()}
        record.update(victims=victims, seed=seed, labels=labels.tolist(), **assessed.record)
        _save_sheet(folder / f"{label}.png", images, assessed, record, mean, std)
        with (folder / RESULTS).open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        done[label] = record
    records = [done[label] for label in attacks if label in done]
    (folder / REPORT).write_text(_report(records))
    return records


def _gradients(
    network: nn.Module, images: Tensor, labels: Tensor, defense: Optional[DefenseSpec], seed: int
) -> tuple[list[dict[str, Tensor]], list[dict[str, Tensor]]]:
    """Every victim's shared gradient and its unperturbed twin (the same PRECODE sample)."""
    resolved = None if defense is None else defense.resolve(network, images[:1])
    pairs = [
        seeded_client_gradients(network, x[None], y[None], resolved, seed + i)
        for i, (x, y) in enumerate(zip(images, labels))
    ]
    return [shared for shared, _ in pairs], [clean for _, clean in pairs]


def _save_sheet(
    path: Path, images: Tensor, assessed: Any, record: dict, mean: Sequence[float], std: Sequence[float]
) -> None:
    rows = [SheetRow("truth", to_unit_interval(images, mean, std))]
    rows.append(SheetRow("attack", to_unit_interval(assessed.reconstructions, mean, std), captions(record)))
    if assessed.control is not None:
        rows.append(SheetRow("control", to_unit_interval(assessed.control, mean, std), captions(record["control"])))
    save_image(draw_sheet(f"{record['attack']}\n{record['verdict']}", rows), path)


def _report(records: list[dict[str, Any]]) -> str:
    lines = ["# Audit", "", "| attack | leaked (95% CI) | control (no defense) | verdict |", "|---|---|---|---|"]
    for r in records:
        control = "-" if "control" not in r else str(LeakRate.of(r["control"]["successes"]))
        lines.append(f"| {r['attack']} | {LeakRate.of(r['successes'])} | {control} | {r['verdict']} |")
    if records:
        union = union_over_attacks({r["attack"]: r["successes"] for r in records})
        lines += [
            "",
            f"Any attack (per victim): {LeakRate.of(union)}. Victims: {records[0]['victims']}, seed {records[0]['seed']}.",
        ]
    return "\n".join(lines) + "\n"
