"""Evidence v2: the paper's claims on cnn and mlp-1024 with the converged suite, controls and intervals.

    python -m benchmarks.evidence                        # cnn and mlp-1024 on 2 CPU cores (hours; resumable)
    python -m benchmarks.evidence --archs mlp            # one architecture (start it twice: both cores)
    python -m benchmarks.evidence --preset reduced --archs vit   # vit and resnet18 (GroupNorm): init, 4 victims
    python -m benchmarks.evidence --preset reduced --archs resnet18 --families none precode   # the audits only
    python -m benchmarks.evidence --gpu --minutes 9      # all four architectures on one GPU, within a lease
    python -m benchmarks.evidence --preset quick --out /tmp/quick   # what the test suite runs
    python -m benchmarks.evidence_report benchmarks/results/evidence

A cell is (architecture, defense family, training state). Fixed defenses (none, PRECODE, pruning)
are audited as they are (:func:`~ppp_lightning.auditing.audit.audit`, with the control that removes them);
noise families are calibrated (:func:`~ppp_lightning.auditing.noise_search.calibrate`: the suite without
noise is their control, then the smallest sigma at which no attack leaks: reconstructs a victim or
identifies victims above chance, to a factor of 1.5).
The victims are the same class-stratified training images in every cell, each alone in its batch
(and, in one extra row per state, in batches of 4).
Every model is trained with its defense on: a noise family trains each state with the sigma
calibrated at the state before it (initialisation: none yet), and its bisection starts there (or,
where none was found, at the largest sigma tried). Processes can share a folder: each skips the
cells another finished, passes over a cell another is measuring (its claim in ``claims/``) to one that
does not build on it, and waits only where every cell left does (:mod:`benchmarks.evidence_schedule`);
a claim is an OS lock, so a dead process's claim is free.
Accuracy at the protective sigma is measured over several training seeds. Each finished unit is
appended to ``evidence.jsonl`` at once and every audit resumes attack by attack, so an
interrupted run loses nothing; a unit's ``seconds`` and ``cpu_seconds`` count every run that worked
on it (``runs``; :mod:`benchmarks.evidence_ledger`).
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping
from tqdm.auto import tqdm

from benchmarks.defenses import Defense
from benchmarks.evidence_ledger import CellClock
from benchmarks.evidence_schedule import CLAIM_POLL_SECONDS, claimed, is_held, next_ready
from callbacks import PartialPerturbation
from datamodules import CIFAR10DataModule, OfflineMNISTDataModule
from ppp_lightning import ImageClassifier
from ppp_lightning.assessment.record import AttackRecord
from ppp_lightning.assessment.reporting import append_record, read_records
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.attacks.suite import attack_suite
from ppp_lightning.auditing.audit import audit
from ppp_lightning.auditing.noise_search import calibrate
from ppp_lightning.defenses.precode import PRECODE
from ppp_lightning.defenses.spec import DefenseSpec
from ppp_lightning.victims import victim_pool

__all__ = ["PRESETS", "cell_folder", "compact_record", "configure", "datamodule", "run"]

HERE = Path(__file__).resolve().parent
RESULTS = "evidence.jsonl"
STATES = ("init", "epoch1", "plateau")
_SHOWN = ("arch", "family", "state", "seed")  # what the progress bar names of the unit being measured
AUDITED = {"none": Defense("none"), "precode": Defense("precode"), "prune": Defense("prune", keep_ratio=0.1)}
CALIBRATED = {name: Defense(name, sigma=1.0) for name in ("noise_all", "ppp", "ppp_no_encoder")}
_CPU = {
    "seed": 0,
    "data": {},  # datamodule options; with "data_dir": CIFAR-10 from that folder, else the offline digits
    "archs": {"cnn": {}, "mlp": {"width": 1024}},
    "precode": {"latent_dim": 256, "beta": 0.001},
    "states": list(STATES),
    "victims": 16,
    "families": [*AUDITED, *CALIBRATED],
    "attacks": None,  # every attack that applies
    # label -> options replacing the converged defaults; DLG: 10 L-BFGS steps found what 100 found on the
    # mlp-1024, undefended (4/4) and with PRECODE (0/4 reconstructed, 3/4 identified) at 1/15 of the time
    # (benchmarks/results/dlg_budget.md); where 10 steps fail the undefended model, its verdicts say inconclusive
    "attack_settings": {"dlg": {"iterations": 10}},
    # attack -> the only families it runs against (DLG's L-BFGS on an mlp-1024 costs minutes per victim)
    "attack_families": {"dlg": ["none", "precode"]},
    "factor": 1.5,
    # the extra row: the same victims in batches (one shared gradient per batch)
    "batch_rows": {"batch_size": 4, "families": ["none", "precode"]},
    "plateau": {"patience": 3, "max_epochs": 30},
    "accuracy_seeds": [0, 1, 2],
    # the threshold cells calibrated again on a second draw of everything random (seed offsets): the
    # model's initial weights, the victims, their candidates, PRECODE samples and noise
    "repeats": {"families": ["noise_all", "ppp"], "states": ["init"], "seeds": [1]},
    "trainer": {},
    "device": "cpu",  # where the attacks run
}
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": _CPU,
    # one attack iteration on 4 victims costs 1.2 s (vit) and 3.4 s (resnet18) on one CPU core, so about
    # 12 and 35 minutes per attack: initialisation only, 4 victims, the plain and one targeted attack
    # (the adaptive attack only adds to PRECODE's leaks), on the vit also APRIL and APRIL-started
    # inverting (seconds: no inverting attack reached the undefended vit), one training seed
    "reduced": {**_CPU, "archs": {"vit": {}, "resnet18": {"norm": "group"}}, "states": ["init"], "victims": 4,
                "families": ["none", "precode", "noise_all", "ppp"], "batch_rows": {"batch_size": 4, "families": []},
                "repeats": {"families": [], "states": [], "seeds": []},
                "attacks": ["inverting", "inverting/before_decoder", "april", "april_inverting"], "accuracy_seeds": [0],
                "plateau": {"patience": 2, "max_epochs": 10}},
    "gpu": {**_CPU, "archs": {"cnn": {}, "mlp": {"width": 1024}, "resnet18": {"norm": "group"}, "vit": {}},
            "trainer": {"accelerator": "gpu", "devices": 1}, "device": "cuda"},
    "quick": {**_CPU, "archs": {"mlp": {"width": 32}}, "precode": {"latent_dim": 16, "beta": 0.001},
              "states": ["init", "epoch1"], "victims": 2, "attacks": ["inverting", "analytic"],
              "attack_settings": {"inverting": {"iterations": 10}},
              "families": ["none", "precode", "noise_all", "ppp"], "plateau": {"patience": 1, "max_epochs": 1},
              "batch_rows": {"batch_size": 2, "families": ["none"]},
              "repeats": {"families": ["ppp"], "states": ["init"], "seeds": [1]},
              "accuracy_seeds": [0], "trainer": {"limit_train_batches": 2, "limit_val_batches": 2,
                                                 "limit_test_batches": 2}},
}  # fmt: skip


def run(config: dict[str, Any], out: Path, progress: bool = True, minutes: Optional[float] = None) -> Path:
    """Run (or resume) the grid; return the results file.

    Args:
        config: a preset (:data:`PRESETS`), possibly changed.
        out: the results folder.
        progress: show a bar over the grid's remaining units with the remaining time.
        minutes: start no unit after this many minutes (a rerun continues; ``None``: run them all).
    """
    out.mkdir(parents=True, exist_ok=True)
    results = out / RESULTS
    done = {_key(record) for record in read_records(results)}
    data = datamodule(config["data"], config["seed"])
    data.setup("fit")
    pool = victim_pool(data, "the evidence benchmark")
    pending = [unit for unit in _units(config) if _key(unit) not in done]
    bar = tqdm(total=len(pending), desc=f"evidence ({len(done)} done before)", unit="cell", disable=not progress)
    begun = time.perf_counter()
    while pending:
        finished = {_key(record) for record in read_records(results)}  # this process's and others'
        still = [unit for unit in pending if _key(unit) not in finished]
        bar.update(len(pending) - len(still))
        pending = still
        if not pending:
            break
        if minutes is not None and time.perf_counter() - begun > 60 * minutes:
            print(f"stopped after {minutes} minutes: {len(pending)} units left (rerun to continue)")
            break
        unit = next_ready(pending, _lanes, lambda unit: is_held(_claim_path(out, unit)))
        if unit is None:
            time.sleep(CLAIM_POLL_SECONDS)  # every cell left waits for one another process measures
        else:
            with claimed(_claim_path(out, unit)) as mine:
                if mine:  # else another process claimed it since: look again
                    bar.set_postfix_str(" ".join(str(unit[k]) for k in _SHOWN if k in unit))
                    _measure_once(unit, config, data, pool, out, results)
    bar.close()
    return results


def _measure_once(unit: dict[str, Any], config: dict[str, Any], data: Any, pool: Any, out: Path, results: Path) -> None:
    """Measure a claimed unit and append its record with its cost, unless another process finished it meanwhile."""
    if _key(unit) in {_key(record) for record in read_records(results)}:
        return
    with CellClock(_claim_path(out, unit).with_suffix(".spent.json")) as clock:
        record = {**unit, **_measure(unit, config, data, pool, out, results)}
    # wall time grows with the machine's load; the processes' CPU time (all threads) much less
    spent = clock.spent()
    record.update(seconds=round(spent.seconds, 1), cpu_seconds=round(spent.cpu_seconds, 1), runs=spent.runs)
    append_record(results, record)
    clock.forget()


def _claim_path(out: Path, unit: dict[str, Any]) -> Path:
    """The file a process claims ``unit`` with (its cost ledger lies beside it)."""
    return out / "claims" / ("_".join(str(value) for value in _key(unit)) + ".pid")


def _lanes(unit: dict[str, Any]) -> set[tuple[str, str]]:
    """What a unit builds on (:func:`~benchmarks.evidence_schedule.next_ready`): its family's earlier cells (a
    state trains from the one before, repeats and accuracies read its calibrations, a batch row shares its model)
    and, for a calibration at initialisation, the others that share its audit without noise."""
    lanes = {(unit["arch"], unit["family"])}
    if unit["kind"] == "calibration" and unit["state"] == "init":
        lanes.add((unit["arch"], _baseline_model(unit["family"])))
    return lanes


def datamodule(options: dict[str, Any], seed: int) -> Any:
    """The grid's data: CIFAR-10 from ``options["data_dir"]`` when given, else the offline digits.

    Args:
        options: the datamodule's options (a preset's ``data``).
        seed: the grid's seed (the validation split's).
    """
    options = {"batch_size": 64, "seed": seed, **options}
    return CIFAR10DataModule(**options) if "data_dir" in options else OfflineMNISTDataModule(**options)


def _units(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The grid in order: each state's cells on every architecture, then the repeats, then the accuracies.

    A state needs only earlier states' results (noise trains at the previous state's sigma), so a
    run cut short has every architecture's earliest states first.
    """
    for state in config["states"]:
        for arch in config["archs"]:
            for family in config["families"]:
                yield {"kind": "audit" if family in AUDITED else "calibration", "arch": arch, "family": family,
                       "state": state}  # fmt: skip
            for family in config["batch_rows"]["families"]:
                yield {"kind": "audit", "arch": arch, "family": family, "state": state,
                       "batch_size": config["batch_rows"]["batch_size"]}  # fmt: skip
    repeats = config["repeats"]
    for arch in config["archs"]:
        for family in [family for family in repeats["families"] if family in config["families"]]:
            for state in [state for state in repeats["states"] if state in config["states"]]:
                yield from ({"kind": "repeat", "arch": arch, "family": family, "state": state, "seed": seed}
                            for seed in repeats["seeds"])  # fmt: skip
    for arch in config["archs"]:
        for family in config["families"]:
            for seed in config["accuracy_seeds"]:
                yield {"kind": "accuracy", "arch": arch, "family": family, "seed": seed}


def _measure(
    unit: dict[str, Any], config: dict[str, Any], data: Any, pool: Any, out: Path, results: Path
) -> dict[str, Any]:
    arch, family = unit["arch"], unit["family"]
    if unit["kind"] == "accuracy":
        sigma = _protective_sigma(results, arch, family)
        return {"sigma": sigma, **_accuracy(config, data, arch, family, sigma, unit["seed"])}
    if unit["kind"] == "repeat":
        return _repeat(unit, config, data, pool, out, results)
    state, where = unit["state"], cell_folder(out, unit)
    model = _trained(config, data, out, results, arch, family, state).to(config["device"])
    if unit["kind"] == "audit":
        batch_size = unit.get("batch_size", 1)
        defense = AUDITED[family].spec()
        suite = _suite(model, pool.train_set[0][0][None], defense, config, family, pool.one_channel, batch_size)
        records = audit(model, pool.train_set, suite, where, defense, pool.mean, pool.std, pool.one_channel,
                        victims=config["victims"], seed=config["seed"], progress=False,
                        batch_size=batch_size)  # fmt: skip
        return {"records": [compact_record(record) for record in records]}
    baseline = _shared_baseline(out, arch, family, state)
    return _calibration(model, config, pool, unit, where, config["seed"], _search_start(results, arch, family, state),
                        baseline)  # fmt: skip


def _repeat(
    unit: dict[str, Any], config: dict[str, Any], data: Any, pool: Any, out: Path, results: Path
) -> dict[str, Any]:
    """A noise family's calibration again with every random draw shifted by ``unit["seed"]``.

    At initialisation the model is a second initialisation (a trained state reuses its checkpoint:
    a second training costs what the grid does). The search starts at the first calibration's answer,
    so its first grid brackets it; the two answers' ratio is the threshold's spread beyond the victims.
    """
    arch, family, state = unit["arch"], unit["family"], unit["state"]
    seed = config["seed"] + unit["seed"]
    if state == "init":
        model = _network(config, arch, family, seed)
    else:
        model = _trained(config, data, out, results, arch, family, state)
    start = _protective_sigma(results, arch, family, (state,))
    return _calibration(model.to(config["device"]), config, pool, unit, cell_folder(out, unit), seed, start)


def _calibration(
    model: torch.nn.Module,
    config: dict[str, Any],
    pool: Any,
    unit: dict[str, Any],
    where: Path,
    seed: int,
    start: Optional[float],
    baseline: Optional[Path] = None,
) -> dict[str, Any]:
    """The record of ``unit``'s noise family calibrated on ``model`` into ``where`` (see :func:`calibrate`)."""
    family = unit["family"]
    family_spec = CALIBRATED[family].spec()
    suite = _suite(model, pool.train_set[0][0][None], family_spec, config, family, pool.one_channel)
    found = calibrate(model, pool.train_set, suite, family_spec, where, pool.mean, pool.std, pool.one_channel,
                      config["victims"], seed, config["factor"], start, unit["state"], progress=False,
                      baseline=baseline)  # fmt: skip
    return found.to_dict()


def cell_folder(out: Path, cell: Mapping[str, Any]) -> Path:
    """Where a cell of the grid (a unit or its record) keeps its audits.

    ``<kind>s/<arch>/<family>/<state>``; a batch row's family is ``<family>-batch<n>``, and a repeat
    adds ``seed=<offset>``.
    """
    batch_size = cell.get("batch_size", 1)
    family = cell["family"] if batch_size == 1 else f"{cell['family']}-batch{batch_size}"
    where = Path(out) / f"{cell['kind']}s" / cell["arch"] / family / cell["state"]
    return where / f"seed={cell['seed']}" if cell["kind"] == "repeat" else where


def _shared_baseline(out: Path, arch: str, family: str, state: str) -> Optional[Path]:
    """Where the calibrations of one model share their audit without noise (``None``: their own folder).

    At initialisation every family with (or every one without) PRECODE has the same weights; trained
    states differ per family (each trained with its own noise).
    """
    if state != "init":
        return None
    return out / "calibrations" / arch / _baseline_model(family) / state


def _baseline_model(family: str) -> str:
    """The model a noise family's calibration at initialisation shares with others."""
    return "precode-model" if Defense(family).uses_precode else "plain-model"


def _suite(
    model: torch.nn.Module,
    example: torch.Tensor,
    defense: Optional[DefenseSpec],
    config: dict[str, Any],
    family: str,
    tie_channels: bool,
    batch_size: int = 1,
) -> dict[str, AttackSpec]:
    """The configured attacks (``None``: all) that apply here and run against ``family``, with their settings."""
    suite = attack_suite(model, example, defense, tie_channels=tie_channels, batch_size=batch_size)
    wanted, settings, restricted = config["attacks"], config["attack_settings"], config["attack_families"]
    return {label: spec.replace(**settings.get(label, {})) for label, spec in suite.items()
            if (wanted is None or label in wanted) and family in restricted.get(label, [family])}  # fmt: skip


def compact_record(record: AttackRecord) -> dict[str, Any]:
    """What the summary needs of an audit record (the folder keeps the rest).

    Enough for :meth:`~ppp_lightning.assessment.record.AttackRecord.from_dict` to give the same verdict: both
    findings per victim, the pool size, how the attack stopped, and the control's findings. The
    ``findings``, ``verdict`` and ``outcome`` kept are for a reader of the file; the report derives them.
    """
    full = record.to_dict()
    kept = ("label", "successes", "identified", "pool_size", "convergence", "findings", "verdict", "outcome",
            "audited", "mean", "seconds")  # fmt: skip
    compact = {key: full[key] for key in kept if key in full}
    if record.control is not None:
        compact["control"] = {key: full["control"][key] for key in ("successes", "identified", "mean")
                              if key in full["control"]}  # fmt: skip
    return compact


# --------------------------------------------------------------------------- models


def _network(config: dict[str, Any], arch: str, family: str, seed: int) -> ImageClassifier:
    pl.seed_everything(seed, verbose=False)
    precode = config["precode"] if Defense(family).uses_precode else None
    return ImageClassifier(arch, precode=precode, arch_kwargs=config["archs"][arch])


def _training_defense(results: Path, arch: str, family: str, state: str) -> Optional[DefenseSpec]:
    """The defense a state trains with: fixed ones as they are, noise at the previous state's protective
    sigma (none found: without noise, which leaves PPP's PRECODE in place)."""
    if family in AUDITED:
        return AUDITED[family].spec()
    previous = STATES[STATES.index(state) - 1]
    sigma = _protective_sigma(results, arch, family, states=(previous,))
    return None if sigma is None else replace(CALIBRATED[family].spec(), sigma=sigma)


def _trained(
    config: dict[str, Any], data: Any, out: Path, results: Path, arch: str, family: str, state: str
) -> ImageClassifier:
    """The model of a cell, trained (once; checkpointed) from the previous state with its defense on."""
    if state == "init":
        return _network(config, arch, family, config["seed"])
    checkpoint = out / "models" / arch / family / f"{state}.ckpt"
    if checkpoint.exists():
        return ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu")
    model = _trained(config, data, out, results, arch, family, STATES[STATES.index(state) - 1])
    defense = _training_defense(results, arch, family, state)
    epochs = {"max_epochs": 1} if state == "epoch1" else config["plateau"]
    _fit(model, data, defense, config, epochs).save_checkpoint(checkpoint)
    return ImageClassifier.load_from_checkpoint(checkpoint, map_location="cpu")


def _fit(
    model: ImageClassifier, data: Any, defense: Optional[DefenseSpec], config: dict[str, Any], epochs: dict[str, int]
) -> pl.Trainer:
    callbacks: list[pl.Callback] = [] if defense is None else [PartialPerturbation(**defense.to_dict())]
    if "patience" in epochs:
        callbacks.append(EarlyStopping("val/acc", patience=epochs["patience"], mode="max"))
    trainer = pl.Trainer(max_epochs=epochs["max_epochs"], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                         **config["trainer"])  # fmt: skip
    trainer.fit(model, data)
    return trainer


def _accuracy(
    config: dict[str, Any], data: Any, arch: str, family: str, sigma: Optional[float], seed: int
) -> dict[str, Any]:
    """Test accuracy after training to the plateau with the defense (at ``sigma``) on; PRECODE both ways."""
    defense = AUDITED[family].spec() if family in AUDITED else None
    if family in CALIBRATED and sigma is not None:
        defense = replace(CALIBRATED[family].spec(), sigma=sigma)
    if family in CALIBRATED and sigma is None:
        return {"outcome": "no protective sigma"}
    model = _network(config, arch, family, seed)
    trainer = _fit(model, data, defense, config, config["plateau"])
    scores = {"epochs": trainer.current_epoch, "test_acc": trainer.test(model, data, verbose=False)[0]["test/acc"]}
    bottlenecks = [module for module in model.modules() if isinstance(module, PRECODE)]
    if bottlenecks:  # the reference samples at test time too; z = mu is the other choice
        for module in bottlenecks:
            module.eval_sampling = "mean"
        scores["test_acc_mean"] = trainer.test(model, data, verbose=False)[0]["test/acc"]
    return scores


# --------------------------------------------------------------------------- results


def _search_start(results: Path, arch: str, family: str, state: str) -> Optional[float]:
    """Where a state's bisection starts: the previous state's answer, or the largest sigma it tried
    when that still leaked (a clean layer leaks at any sigma; walking up to it again costs hours)."""
    if state == "init":
        return None
    previous = (STATES[STATES.index(state) - 1],)
    gave_up = [r for r in _calibrations(results, arch, family, previous) if r["outcome"] == "not found"]
    if gave_up:
        return max(sigma for r in gave_up for sigma, _ in r["search"]["evaluations"])
    return _protective_sigma(results, arch, family, previous)


def _protective_sigma(
    results: Path, arch: str, family: str, states: tuple[str, ...] = STATES
) -> Optional[float]:
    """The largest protective sigma of a noise family over the given states (``None``: none found)."""
    found = _calibrations(results, arch, family, states)
    return max((r["search"]["sigma"] for r in found if r["outcome"] == "calibrated"), default=None)


def _calibrations(results: Path, arch: str, family: str, states: tuple[str, ...]) -> list[dict[str, Any]]:
    """The calibration records of a noise family at the given states."""
    return [r for r in read_records(results) if r["kind"] == "calibration" and r["arch"] == arch
            and r["family"] == family and r["state"] in states]  # fmt: skip


def _key(record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(record.get(key) for key in ("kind", "arch", "family", "state", "seed", "batch_size"))


def configure(preset: str, archs: Optional[list[str]] = None, families: Optional[list[str]] = None) -> dict[str, Any]:
    """A copy of a preset restricted to some of its architectures and defense families.

    Args:
        preset: a name in :data:`PRESETS`.
        archs: the architectures to run (``None``: all of the preset's).
        families: the families to run (``None``: all of the preset's); batch rows keep only these.

    Raises:
        ValueError: if an architecture or family is not in the preset.
    """
    config = copy.deepcopy(PRESETS[preset])
    choices = (("archs", archs, list(config["archs"])), ("families", families, config["families"]))
    for option, chosen, allowed in choices:
        unknown = sorted(set(chosen or []) - set(allowed))
        if unknown:
            raise ValueError(f"--{option} {unknown}; allowed: {', '.join(allowed)}")
    config["archs"] = {arch: config["archs"][arch] for arch in archs or config["archs"]}
    config["families"] = [family for family in config["families"] if family in (families or config["families"])]
    config["batch_rows"]["families"] = [f for f in config["batch_rows"]["families"] if f in config["families"]]
    return config


def main(argv: Optional[list[str]] = None) -> None:
    """Run a preset of the grid (``--preset``) into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: cpu")
    parser.add_argument("--gpu", action="store_true", help="the gpu preset (as --preset gpu does)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/evidence[_<preset>]")
    parser.add_argument("--archs", nargs="+", default=None, help="run only these of the preset's architectures "
                        "(each process uses one core: the attacks pin one thread; two on one folder share its cells)")
    parser.add_argument("--cifar10", type=Path, default=None, help="CIFAR-10 from this folder (torchvision's layout, "
                        "never downloaded) instead of the offline digits; results go to a folder ending in _cifar10")
    parser.add_argument("--minutes", type=float, default=None, help="start no cell after this many minutes "
                        "(e.g. a GPU lease: --preset gpu --minutes 9); a rerun continues")
    parser.add_argument("--families", nargs="+", default=None, help="run only these of the preset's defense "
                        "families (e.g. the audited ones where calibrations cost too much)")
    args = parser.parse_args(argv)
    if args.gpu and args.preset not in (None, "gpu"):
        parser.error(f"--gpu and --preset {args.preset}; choose one")
    args.preset = "gpu" if args.gpu else args.preset or "cpu"
    try:
        config = configure(args.preset, args.archs, args.families)
    except ValueError as error:
        parser.error(str(error))
    if config["device"] == "cuda" and not torch.cuda.is_available():
        parser.error(f"--preset {args.preset} runs on CUDA, and torch sees no CUDA device here")
    if args.cifar10 is not None:
        config["data"] = {"data_dir": str(args.cifar10)}
    suffixes = ("" if args.preset == "cpu" else f"_{args.preset}", "" if args.cifar10 is None else "_cifar10")
    out = args.out or HERE / "results" / "".join(["evidence", *suffixes])
    print(f"results: {run(config, out, minutes=args.minutes)}")


if __name__ == "__main__":
    main()
