"""Privacy-utility benchmark: which defenses stop which gradient inversion attacks, at what accuracy.

    python -m benchmarks.privacy_utility --config benchmarks/privacy_utility.yaml
    python -m benchmarks.privacy_utility --quick --out /tmp/quick

A cell is (architecture, defense, training state). Its model is trained with the defense on (the
noise perturbs every training step), then every applicable attack inverts the gradient each victim
(a training image, alone in its batch) would share, perturbed by the same code the training used.
Each finished (cell, attack) is appended to ``results.jsonl`` at once and skipped by a re-run, so
an interrupted run loses nothing; ``python -m benchmarks.report`` turns the file into tables and plots.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.cli import instantiate_class
from torch import Tensor, nn
from tqdm.auto import tqdm

from benchmarks.defenses import Defense, expand_defenses
from callbacks import PartialPerturbation
from ppp_lightning import ImageClassifier
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.defense import ResolvedDefense
from ppp_lightning.gradients import seeded_client_gradients
from ppp_lightning.losses import classification_terms
from ppp_lightning.metrics import ReconstructionMetrics, to_unit_interval
from ppp_lightning.victims import draw_victims, floor_image

__all__ = ["QUICK", "BenchmarkAttack", "parse_attacks", "run"]

HERE = Path(__file__).resolve().parent
# One small architecture, two victims, few iterations: what the test suite runs.
QUICK: dict[str, Any] = {
    "seed": 0,
    "data": {"class_path": "datamodules.OfflineMNISTDataModule", "init_args": {"batch_size": 64}},
    "archs": ["mlp"],
    "precode": {"latent_dim": 64, "beta": 0.001},
    "states": {"init": 0},
    "victims": 2,
    "sigmas": [1.0],
    "keep_ratios": [0.1],
    "defenses": ["none", "noise_all", "precode", "ppp"],
    "attacks": {
        "inverting": {"attack": "inverting", "iterations": 5, "lr": 0.1, "tv_weight": 0.0001},
        "targeted_before_decoder": {
            "attack": "inverting",
            "target": "before_decoder",
            "iterations": 5,
            "families": ["ppp"],
        },
        "analytic": {"attack": "analytic"},
    },
    "success": {"success_metric": "ncc", "success_threshold": 0.85},
}


@dataclass(frozen=True)
class BenchmarkAttack:
    """One configured attack: its spec and the defense families it is restricted to.

    Attributes:
        spec: the attack and its options (:class:`~ppp_lightning.attacks.AttackSpec` validates them).
        families: the defense families the attack runs against; ``None`` for all (a benchmark-only
            key: spend the time where it tells something).
    """

    spec: AttackSpec
    families: Optional[tuple[str, ...]] = None

    def applies(self, arch: str, defense: Defense) -> bool:
        """Whether the attack makes sense for the cell: PRECODE-specific ones need PRECODE, analytic an mlp.

        Args:
            arch: the cell's architecture.
            defense: the cell's defense.
        """
        if self.families is not None and defense.family not in self.families:
            return False
        if self.spec.name == "analytic":
            return arch == "mlp"
        if self.spec.name == "clean_layer":  # it attacks a partial perturbation it knows
            return defense.spec() is not None and defense.uses_precode
        return defense.uses_precode or not (self.spec.get("target") or self.spec.name == "adaptive")

    def for_defense(self, defense: Defense) -> AttackSpec:
        """The spec to run in a cell: the clean-layer attack is told the cell's defense."""
        if self.spec.name == "clean_layer" and self.spec.get("defense") is None:
            return self.spec.replace(defense=defense.spec().to_dict())
        return self.spec


def parse_attacks(attacks: Mapping[str, Mapping[str, Any]]) -> dict[str, BenchmarkAttack]:
    """The config's ``attacks``: ``{label: {attack: <registered name>, families: [...], <options>}}``.

    Optimisation attacks run without their own progress bar unless an entry sets ``progress``.

    Args:
        attacks: the entries by the label the results use.

    Raises:
        ValueError: from :class:`~ppp_lightning.attacks.AttackSpec`, on an unknown attack or an
            option it would ignore or refuse.
    """
    parsed = {}
    for label, entry in attacks.items():
        settings = {key: value for key, value in entry.items() if key not in ("attack", "families")}
        spec = AttackSpec(entry["attack"], settings)
        if "progress" in spec.options() and "progress" not in settings:
            spec = spec.replace(progress=False)
        families = entry.get("families")
        parsed[label] = BenchmarkAttack(spec, None if families is None else tuple(families))
    return parsed


def run(config: dict[str, Any], out: Path) -> Path:
    """Run (or resume) every cell of ``config``; returns the results file.

    Args:
        config: the benchmark configuration (see ``privacy_utility.yaml``).
        out: output folder: ``results.jsonl``, ``config.yaml``, model checkpoints, images.

    Raises:
        ValueError: on an unknown defense family or attack, or an attack option the attack
            would ignore or refuse (before anything is trained).
    """
    attacks = parse_attacks(config["attacks"])
    defenses = expand_defenses(config["defenses"], config["sigmas"], config["keep_ratios"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    results = out / "results.jsonl"
    done = {_record_key(r) for r in _read_jsonl(results)}
    datamodule = instantiate_class((), config["data"])
    datamodule.setup()
    cells = [(arch, d) for arch in config["archs"] for d in defenses]
    bar = tqdm(total=len(cells) * len(config["states"]), desc="cells", unit="cell")
    metrics = ReconstructionMetrics(datamodule.mean, datamodule.std, **config["success"])
    floor = floor_image(datamodule.train_set)
    for arch, defense in cells:
        for state, model, accuracy in _trained_states(arch, defense, config, datamodule, out):
            todo = {
                label: attack
                for label, attack in attacks.items()
                if attack.applies(arch, defense) and (arch, defense.key, state, label) not in done
            }
            cell = {"arch": arch, "defense": defense.key, "family": defense.family, "sigma": defense.sigma}
            cell |= {"state": state, "state_epochs": config["states"][state], "test_acc": accuracy}
            for record in _attack_cell(model, datamodule, defense, config, todo, (metrics, floor)):
                record["images"] = _save_images(record.pop("tensors"), datamodule, out, cell, record["attack"])
                _append_jsonl(results, {**cell, **record})
            bar.set_postfix_str(f"{arch} {defense.key} {state}")
            bar.update()
    bar.close()
    return results


def _trained_states(
    arch: str, defense: Defense, config: dict[str, Any], datamodule: Any, out: Path
) -> Iterator[tuple[str, ImageClassifier, float]]:
    """Yield ``(state, model, test accuracy)`` in order of training epochs, training as needed.

    The defense's noise perturbs every training step (a fresh ``PartialPerturbation`` per state).
    Checkpoints of every state are kept, so a re-run resumes training where it stopped.
    """
    pl.seed_everything(config["seed"], verbose=False)
    precode = config["precode"] if defense.uses_precode else None
    model = ImageClassifier(arch, precode=precode, arch_kwargs=config.get("arch_kwargs", {}).get(arch))
    folder = out / "models" / arch / defense.key
    spec = defense.spec()
    previous: Optional[Path] = None
    for state, epochs in sorted(config["states"].items(), key=lambda item: item[1]):
        ckpt = folder / f"{state}.ckpt"
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[] if spec is None else [PartialPerturbation(**spec.to_dict(), seed=config["seed"])],
        )
        if ckpt.exists():
            model = ImageClassifier.load_from_checkpoint(ckpt)
        elif epochs > 0:
            trainer.fit(model, datamodule, ckpt_path=previous)
            trainer.save_checkpoint(ckpt)
        accuracy = trainer.test(model, datamodule, verbose=False)[0]["test/acc"]
        previous = ckpt if ckpt.exists() else None
        yield state, model, accuracy


def _attack_cell(
    model: ImageClassifier,
    datamodule: Any,
    defense: Defense,
    config: dict[str, Any],
    attacks: dict[str, BenchmarkAttack],
    scoring: tuple[ReconstructionMetrics, Tensor],
) -> Iterator[dict[str, Any]]:
    """Yield one record per attack as it finishes: per-victim scores and the cell's gradient statistics."""
    if not attacks:
        return
    network = model.network.train()  # the client computes its gradient in training mode
    images, labels = draw_victims(datamodule.train_set, config["victims"], config["seed"])
    victims = list(zip(images.split(1), labels.split(1)))  # each victim alone in its batch
    spec = defense.spec()
    resolved = None if spec is None else spec.resolve(network, victims[0][0])
    shared, clean, stats = zip(
        *(_shared_gradient(network, x, y, resolved, config["seed"] + i) for i, (x, y) in enumerate(victims))
    )
    names = () if resolved is None else resolved.parameter_names
    # the positive control: the same victims' gradients (same PRECODE sample) without the defense's perturbation
    gradients = list(shared) + (list(clean) if resolved is not None else [])
    for label, attack in attacks.items():
        invert = attack.for_defense(defense).build(datamodule.mean, datamodule.std)
        started = time.perf_counter()
        # all victims (and their controls) in one call: the engine runs them (x restarts) in one loop
        results = invert.run(
            copy.deepcopy(network),
            gradients,
            [y for y in labels.split(1)] * (len(gradients) // len(victims)),
            tuple(victims[0][0].shape),
        )
        reconstructions = torch.cat([result.images for result in results])
        seconds = time.perf_counter() - started
        scored = [
            _score(reconstruction, images[i % len(images)], scoring) for i, reconstruction in enumerate(reconstructions)
        ]
        yield {
            "attack": label,
            "seconds": seconds,
            "victims": scored[: len(images)],
            **({"control_victims": scored[len(images) :]} if resolved is not None else {}),
            "gradient": _mean_stats(stats),
            "perturbed_share": sum(network.get_parameter(n).numel() for n in names)
            / sum(p.numel() for p in network.parameters()),
            "seed": config["seed"],
            "tensors": (images, reconstructions[: len(images)]),
        }


def _score(reconstruction: Tensor, truth: Tensor, scoring: tuple[ReconstructionMetrics, Tensor]) -> dict[str, float]:
    """Scores of one victim (alone in its batch) and of the trivial reconstruction."""
    metrics, floor = scoring
    scores = metrics(reconstruction[None], truth[None], floor_image=floor)
    return scores["mean"] | {f"floor_{k}": v for k, v in scores["floor"].items()} | {"success": scores["successes"][0]}


def _save_images(tensors: tuple[Tensor, Tensor], datamodule: Any, out: Path, cell: dict[str, Any], attack: str) -> str:
    """Store ground truth and reconstructions as uint8 images; returns the path relative to ``out``."""
    truth, reconstructions = (
        (to_unit_interval(t, datamodule.mean, datamodule.std) * 255).round().byte() for t in tensors
    )
    path = Path("images") / cell["arch"] / cell["defense"] / cell["state"] / f"{attack}.pt"
    (out / path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"truth": truth, "reconstruction": reconstructions}, out / path)
    return str(path)


def _shared_gradient(
    network: nn.Module, x: Tensor, y: Tensor, defense: Optional[ResolvedDefense], seed: int
) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, float]]:
    """The victim's shared and clean gradients (the same PRECODE sample) and how the defense changed it."""
    terms = _loss_terms(network, x, y, seed)
    shared, clean = seeded_client_gradients(network, x, y, defense, seed)
    if defense is None:
        return clean, clean, {**terms, "clean_rms": math.nan, "noise_std": 0.0}
    names = defense.parameter_names
    selected_clean = torch.cat([clean[n].flatten() for n in names])
    noise = torch.cat([(shared[n] - clean[n]).flatten() for n in names])
    return (
        shared,
        clean,
        {**terms, "clean_rms": selected_clean.square().mean().sqrt().item(), "noise_std": noise.std().item()},
    )


def _loss_terms(network: nn.Module, x: Tensor, y: Tensor, seed: int) -> dict[str, float]:
    """Cross-entropy and PRECODE's KL term of the victim, with the PRECODE sample of its gradient."""
    with torch.no_grad():
        terms = classification_terms(lambda: network(x), y, torch.Generator().manual_seed(seed))
    return {"ce": terms.ce.item(), "kl": terms.kl.item()}


def _mean_stats(stats: tuple[dict[str, float], ...]) -> dict[str, float]:
    return {key: sum(s[key] for s in stats) / len(stats) for key in stats[0]}


def _record_key(record: dict[str, Any]) -> tuple[str, str, str, str]:
    return record["arch"], record["defense"], record["state"], record["attack"]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def main(argv: Optional[list[str]] = None) -> None:
    """Run the benchmark from the command line (``python -m benchmarks.privacy_utility --help``).

    Args:
        argv: command-line arguments; ``None`` reads ``sys.argv``.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=HERE / "privacy_utility.yaml")
    parser.add_argument("--quick", action="store_true", help="the small preset the test suite runs")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "privacy_utility")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else yaml.safe_load(args.config.read_text())
    run(config, args.out)


if __name__ == "__main__":
    main()
