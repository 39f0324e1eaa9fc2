"""Privacy-utility benchmark: which defenses stop which gradient inversion attacks, at what accuracy.

    python benchmarks/privacy_utility.py --config benchmarks/privacy_utility.yaml
    python benchmarks/privacy_utility.py --quick --out /tmp/quick

A cell is (architecture, defense, training state). Its model is trained with the defense on (the
noise perturbs every training step), then every applicable attack inverts the gradient each victim
(a training image, alone in its batch) would share, perturbed by the same code the training used.
Each finished (cell, attack) is appended to ``results.jsonl`` at once and skipped by a re-run, so
an interrupted run loses nothing; ``report.py`` turns the file into tables and plots.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
import yaml
from pytorch_lightning.cli import instantiate_class
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.defenses import Defense, expand_defenses  # noqa: E402
from ppp_lightning import ImageClassifier  # noqa: E402
from ppp_lightning.attacks import build_attack  # noqa: E402
from ppp_lightning.gradients import client_gradient, precode_generator  # noqa: E402
from ppp_lightning.metrics import ReconstructionMetrics, to_unit_interval  # noqa: E402
from ppp_lightning.precode import bottleneck_kl  # noqa: E402
from ppp_lightning.selection import select_parameters  # noqa: E402

__all__ = ["run", "QUICK"]

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
        "targeted_before_decoder": {"attack": "inverting", "target": "before_decoder", "iterations": 5, "families": ["ppp"]},
        "analytic": {"attack": "analytic"},
    },
    "success": {"success_metric": "ncc", "success_threshold": 0.85},
}


def run(config: dict[str, Any], out: Path) -> Path:
    """Run (or resume) every cell of ``config``; returns the results file.

    Args:
        config: the benchmark configuration (see ``privacy_utility.yaml``).
        out: output folder: ``results.jsonl``, ``config.yaml``, model checkpoints, images.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    results = out / "results.jsonl"
    done = {_record_key(r) for r in _read_jsonl(results)}
    datamodule = instantiate_class((), config["data"])
    datamodule.setup()
    defenses = expand_defenses(config["defenses"], config["sigmas"], config["keep_ratios"])
    cells = [(arch, d) for arch in config["archs"] for d in defenses]
    bar = tqdm(total=len(cells) * len(config["states"]), desc="cells", unit="cell")
    metrics = ReconstructionMetrics(datamodule.mean, datamodule.std, **config["success"])
    floor = _mean_image(datamodule)
    for arch, defense in cells:
        for state, model, accuracy in _trained_states(arch, defense, config, datamodule, out):
            todo = [a for a in _applicable(config["attacks"], arch, defense) if (arch, defense.key, state, a) not in done]
            cell = {"arch": arch, "defense": defense.key, "family": defense.family, "sigma": defense.sigma}
            cell |= {"state": state, "state_epochs": config["states"][state], "test_acc": accuracy}
            for record in _attack_cell(model, datamodule, defense, config, todo, (metrics, floor)):
                record["images"] = _save_images(record.pop("tensors"), datamodule, out, cell, record["attack"])
                _append_jsonl(results, {**cell, **record})
            bar.set_postfix_str(f"{arch} {defense.key} {state}")
            bar.update()
    bar.close()
    return results


def _trained_states(arch: str, defense: Defense, config: dict[str, Any], datamodule: Any, out: Path):
    """Yield ``(state, model, test accuracy)`` in order of training epochs, training as needed.

    Checkpoints of every state are kept, so a re-run resumes training where it stopped.
    """
    pl.seed_everything(config["seed"], verbose=False)
    precode = config["precode"] if defense.uses_precode else None
    model = ImageClassifier(arch, precode=precode, arch_kwargs=config.get("arch_kwargs", {}).get(arch))
    folder = out / "models" / arch / defense.key
    previous: Optional[Path] = None
    for state, epochs in sorted(config["states"].items(), key=lambda item: item[1]):
        ckpt = folder / f"{state}.ckpt"
        callback = defense.callback(config["seed"])
        trainer = pl.Trainer(
            max_epochs=epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[callback] if callback else [],
        )
        if ckpt.exists():
            model = ImageClassifier.load_from_checkpoint(ckpt)
        elif epochs > 0:
            trainer.fit(model, datamodule, ckpt_path=previous)
            trainer.save_checkpoint(ckpt)
        accuracy = trainer.test(model, datamodule, verbose=False)[0]["test/acc"]
        previous = ckpt if ckpt.exists() else None
        yield state, model, accuracy


def _applicable(attacks: dict[str, dict[str, Any]], arch: str, defense: Defense) -> list[str]:
    """Attacks that make sense for the cell: PRECODE-specific ones need PRECODE, analytic an mlp.

    An attack's optional ``families`` list restricts it to those defense families (to spend the
    time where it tells something).
    """

    def fits(spec: dict[str, Any]) -> bool:
        if defense.family not in spec.get("families", [defense.family]):
            return False
        if spec["attack"] == "analytic":
            return arch == "mlp"
        return defense.uses_precode or not (spec.get("target") or spec["attack"] == "adaptive")

    return [name for name, spec in attacks.items() if fits(spec)]


def _attack_cell(model, datamodule, defense: Defense, config: dict[str, Any], attacks: list[str], scoring):
    """Yield one record per attack as it finishes: per-victim scores and the cell's gradient statistics."""
    if not attacks:
        return
    network = model.network.train()  # the client computes its gradient in training mode
    victims = _victims(datamodule, config)
    kwargs = defense.perturbation_kwargs()
    callback = defense.callback(config["seed"])
    names = (
        select_parameters(network, kwargs["layers"], kwargs.get("include_encoder", True), victims[0][0])
        if kwargs
        else []
    )
    shared, stats = zip(*(_shared_gradient(network, x, y, callback, names, config["seed"] + i) for i, (x, y) in enumerate(victims)))
    for attack_name in attacks:
        spec = {k: v for k, v in config["attacks"][attack_name].items() if k != "families"}
        kind = spec.pop("attack")
        attack = build_attack(kind, **_attack_kwargs(kind, spec, datamodule))
        started = time.perf_counter()
        reconstructions = torch.cat(
            [attack(copy.deepcopy(network), g, labels=y, shape=tuple(x.shape)).images for (x, y), g in zip(victims, shared)]
        )
        seconds = time.perf_counter() - started
        truth = torch.cat([x for x, _ in victims])
        yield {
            "attack": attack_name,
            "seconds": seconds,
            "victims": [_score(reconstruction, image, scoring) for reconstruction, image in zip(reconstructions, truth)],
            "gradient": _mean_stats(stats),
            "perturbed_share": sum(network.get_parameter(n).numel() for n in names)
            / sum(p.numel() for p in network.parameters()),
            "seed": config["seed"],
            "tensors": (truth, reconstructions),
        }


def _score(reconstruction: torch.Tensor, truth: torch.Tensor, scoring) -> dict[str, float]:
    """Scores of one victim (alone in its batch) and of the trivial reconstruction."""
    metrics, floor = scoring
    scores = metrics(reconstruction[None], truth[None], floor_image=floor)
    return scores["mean"] | {f"floor_{k}": v for k, v in scores["floor"].items()} | {"success": scores["successes"][0]}


def _mean_image(datamodule: Any) -> torch.Tensor:
    """The training set's mean image: the trivial reconstruction that sets the floor."""
    loader = torch.utils.data.DataLoader(datamodule.train_set, batch_size=1000)
    return torch.cat([x for x, _ in loader]).mean(dim=0)


def _save_images(tensors: tuple[torch.Tensor, torch.Tensor], datamodule: Any, out: Path, cell: dict[str, Any], attack: str) -> str:
    """Store ground truth and reconstructions as uint8 images; returns the path relative to ``out``."""
    truth, reconstructions = ((to_unit_interval(t, datamodule.mean, datamodule.std) * 255).round().byte() for t in tensors)
    path = Path("images") / cell["arch"] / cell["defense"] / cell["state"] / f"{attack}.pt"
    (out / path).parent.mkdir(parents=True, exist_ok=True)
    torch.save({"truth": truth, "reconstruction": reconstructions}, out / path)
    return str(path)


def _victims(datamodule: Any, config: dict[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(config["seed"])
    indices = torch.randperm(len(datamodule.train_set), generator=generator)[: config["victims"]]
    return [
        (image.unsqueeze(0), torch.tensor([label]))
        for image, label in (datamodule.train_set[int(i)] for i in indices)
    ]


def _shared_gradient(network, x, y, callback, names: list[str], seed: int):
    """The victim's shared gradient and how the defense changed it (the same PRECODE sample)."""
    terms = _loss_terms(network, x, y, seed)
    clean = client_gradient(network, x, y, generator=torch.Generator().manual_seed(seed))
    if callback is None:
        return clean, {**terms, "clean_rms": math.nan, "noise_std": 0.0}
    shared = client_gradient(
        network,
        x,
        y,
        callback.perturbation,
        names,
        generator=torch.Generator().manual_seed(seed),
        noise_generator=torch.Generator().manual_seed(seed + 10_000),
    )
    selected_clean = torch.cat([clean[n].flatten() for n in names])
    noise = torch.cat([(shared[n] - clean[n]).flatten() for n in names])
    return shared, {**terms, "clean_rms": selected_clean.square().mean().sqrt().item(), "noise_std": noise.std().item()}


def _loss_terms(network, x, y, seed: int) -> dict[str, float]:
    """Cross-entropy and PRECODE's KL term of the victim, with the PRECODE sample of its gradient."""
    with torch.no_grad(), precode_generator(network, torch.Generator().manual_seed(seed)):
        ce = torch.nn.functional.cross_entropy(network(x), y).item()
    return {"ce": ce, "kl": bottleneck_kl(network).item()}


def _attack_kwargs(kind: str, spec: dict[str, Any], datamodule: Any) -> dict[str, Any]:
    """Give box-constrained attacks the data's normalisation and silence per-attack progress bars."""
    if kind == "analytic":
        return spec
    box = {"mean": datamodule.mean, "std": datamodule.std} if kind in ("inverting", "adaptive") else {}
    return {"progress": False, **box, **spec}


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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=HERE / "privacy_utility.yaml")
    parser.add_argument("--quick", action="store_true", help="the small preset the test suite runs")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "privacy_utility")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else yaml.safe_load(args.config.read_text())
    run(config, args.out)


if __name__ == "__main__":
    main()
