"""Tuning on the control: search each optimisation attack's settings with Optuna before an audit.

An audit's verdict "protected" needs a control that leaked; an attack whose settings do not suit
the model or the data (a learning rate too large for the box of valid pixels, too few restarts)
fails its control and makes the audit inconclusive. With ``tune=N`` every attack that takes a
learning rate is first tuned: ``N`` Optuna trials (a seeded TPE sampler, so a rerun tunes
identically) on a few tuning victims drawn apart from the audited ones (class-stratified, never an
audited image), attacking their **control** gradient (the gradient without the audited defense;
without a control, their shared gradient), each trial scored the way the audit scores
(:func:`~ppp_lightning.assessment.assess`) by :func:`objective`. The audit then runs the attack
(defended and control) with the best trial's settings. The first trial is always the attack's own
settings, and ties go to the earlier trial, so tuning never picks settings that scored below them.

Searched (:func:`search_space`), only over options the attack takes: ``lr`` (log-uniform, 1e-4 to
1), ``tv_weight`` (log-uniform, 1e-6 to 0.1), ``restarts`` (1 to 4), ``iterations`` (log-uniform,
a quarter of the attack's own budget to that budget, never above it) and ``initialisation``
(``normal`` or ``uniform``); every range holds the attack's own value. A tuning costs ``N`` trials
x the tuning victims x one attack run (its restarts and iterations as the trial chose them).
Optuna is optional (``pip install -e ".[tune]"``) and imported only when tuning.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ppp_lightning.assessment.assess import Assessment
from ppp_lightning.assessment.record import Scored
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.attacks.matching import INITIALISATIONS
from ppp_lightning.progress import progress_bar
from ppp_lightning.validation import check_integer
from ppp_lightning.victims import images_at, victim_indices

__all__ = [
    "TUNING_SEED_OFFSET",
    "TUNING_VICTIMS",
    "Tuner",
    "Tuning",
    "TuningVictims",
    "check_tune",
    "draw_tuning_victims",
    "objective",
    "search_space",
    "tunable",
    "tune_attack",
    "untuned_spec",
]

# Tuning victims by default: enough to tell settings apart, few enough that N trials stay cheap.
TUNING_VICTIMS = 4
# The tuning victims' seed is the audit's plus this (apart from the held-out victims' offset).
TUNING_SEED_OFFSET = 2_000_003
LR_RANGE = (1e-4, 1.0)
TV_WEIGHT_RANGE = (1e-6, 1e-1)
MAX_RESTARTS = 4
# The budget searched goes down to this share of the attack's own iterations.
LEAST_ITERATIONS_SHARE = 0.25


def check_tune(tune: int, victims: int = TUNING_VICTIMS, batch_size: int = 1) -> int:
    """Refuse a bad ``tune`` (or tuning without Optuna) before any work; returns ``tune``.

    Args:
        tune: Optuna trials per optimisation attack (an integer >= 0; 0: no tuning).
        victims: tuning victims (an integer >= 1, a multiple of ``batch_size``).
        batch_size: victims per shared gradient.

    Raises:
        ValueError: naming the bad value and the allowed ones; with ``tune > 0`` and no Optuna,
            ``tune=N needs Optuna: pip install -e ".[tune]"``.
    """
    check_integer("tune", tune, 0, note="(Optuna trials per attack; 0: no tuning)")
    check_integer("tuning_victims", victims, 1)
    if victims % batch_size:
        raise ValueError(f"tuning_victims={victims}, batch_size={batch_size}; allowed: a multiple of batch_size")
    if tune:
        _optuna(tune)
    return tune


def _optuna(tune: Optional[int] = None) -> ModuleType:
    """Optuna, imported on first use (an optional dependency)."""
    try:
        import optuna
    except ImportError:
        asked = "tuning" if tune is None else f"tune={tune}"
        raise ValueError(f'{asked} needs Optuna: pip install -e ".[tune]"') from None
    return optuna


@contextmanager
def _quiet(optuna: ModuleType) -> Iterator[None]:
    """Optuna's per-trial log lines off inside the block (the tuning shows its own progress), restored after."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def tunable(spec: AttackSpec) -> bool:
    """Whether ``spec`` is an optimisation attack (it takes a learning rate); analytic ones are not tuned."""
    return "lr" in spec.options()


def search_space(spec: AttackSpec) -> dict[str, Any]:
    """The Optuna distributions searched for ``spec`` (only options it takes), each holding the spec's own value.

    ``tv_weight`` is searched where the attack takes one and it is not 0 (0: the user chose no prior).

    Raises:
        ValueError: if ``spec`` is not :func:`tunable`, or Optuna is not installed.
    """
    if not tunable(spec):
        raise ValueError(f"attack={spec.name!r} takes no lr; allowed: an optimisation attack")
    distributions = _optuna().distributions
    options = spec.options()
    space = {"lr": distributions.FloatDistribution(*_holding(LR_RANGE, spec.get("lr")), log=True)}
    if "tv_weight" in options and spec.get("tv_weight") > 0:
        low, high = _holding(TV_WEIGHT_RANGE, spec.get("tv_weight"))
        space["tv_weight"] = distributions.FloatDistribution(low, high, log=True)
    if "restarts" in options:
        space["restarts"] = distributions.IntDistribution(1, max(MAX_RESTARTS, spec.get("restarts")))
    if "iterations" in options:
        budget = spec.get("iterations")
        least = max(1, math.ceil(budget * LEAST_ITERATIONS_SHARE))
        space["iterations"] = distributions.IntDistribution(least, budget, log=True)
    if "initialisation" in options:
        space["initialisation"] = distributions.CategoricalDistribution(INITIALISATIONS)
    return space


def _holding(bounds: tuple[float, float], value: float) -> tuple[float, float]:
    """``bounds`` widened to hold ``value`` (so the attack's own setting can be tried)."""
    return min(bounds[0], value), max(bounds[1], value)


def objective(found: Scored) -> float:
    """A trial's value: victims reconstructed + victims identified + their mean NCC.

    A reconstructed victim is also identified, so it counts twice; the mean NCC (in ``[0, 1]``)
    only breaks ties between equal counts. Higher is a larger leak.
    """
    identified = sum(found.identified) if found.identified is not None else 0
    ncc = found.scores["mean"]["ncc"]
    return sum(found.reconstructed) + identified + (ncc if math.isfinite(ncc) else 0.0)


@dataclass
class Tuning:
    """One attack's tuning: its trials and the settings chosen.

    Args:
        untuned: the attack before tuning (:meth:`AttackSpec.to_dict`).
        chosen: the best trial's settings.
        trials: every trial's ``number``, ``settings``, ``value`` (:func:`objective`) and ``seconds``.
        victims: the tuning victims' dataset indices.
        seconds: the whole tuning's time.
    """

    untuned: dict[str, Any]
    chosen: dict[str, Any]
    trials: list[dict[str, Any]]
    victims: list[int]
    seconds: float

    @property
    def spec(self) -> AttackSpec:
        """The tuned attack: the untuned one with the chosen settings."""
        return AttackSpec(self.untuned["name"], {**self.untuned["settings"], **self.chosen})

    def to_dict(self) -> dict[str, Any]:
        """Plain values (a record's ``tuning`` entry)."""
        return asdict(self)


def untuned_spec(context: dict[str, Any]) -> dict[str, Any]:
    """The attack an audit record was asked to run (before tuning, where it was tuned)."""
    return context["tuning"]["untuned"] if "tuning" in context else context["spec"]


def tune_attack(
    spec: AttackSpec,
    trials: int,
    attack: Callable[[AttackSpec], Scored],
    seed: int,
    victims: Sequence[int] = (),
    progress: bool = False,
    label: Optional[str] = None,
) -> Tuning:
    """Search ``spec``'s settings (:func:`search_space`) for the largest :func:`objective` in ``trials`` trials.

    The first trial is the spec's own settings; the sampler is TPE seeded with ``seed``, random
    for the first half of the trials (at most 10), so the same inputs tune identically.

    Args:
        spec: the attack (:func:`tunable`).
        trials: the number of trials (>= 1).
        attack: runs an attack on the tuning victims and scores it.
        seed: the sampler's seed.
        victims: the tuning victims' dataset indices (recorded).
        progress: show a bar over trials (one line per trial outside a terminal).
        label: the attack's label, for the bar.

    Raises:
        ValueError: if ``trials < 1``, ``spec`` is not tunable or Optuna is not installed.
    """
    check_integer("tune", trials, 1)
    optuna = _optuna(trials)
    space = search_space(spec)
    quiet = {"progress": False} if "progress" in spec.options() else {}  # the trials' own bars would flood
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, trials // 2)))
    records, started = [], time.perf_counter()
    with _quiet(optuna):
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.enqueue_trial({name: spec.get(name) for name in space})
        bar = progress_bar(range(trials), desc=f"tune {label or spec.label}", unit="trial", enabled=progress,
                           lines=True)  # fmt: skip
        for _ in bar:
            trial, began = study.ask(space), time.perf_counter()
            value = objective(attack(spec.replace(**trial.params, **quiet)))
            study.tell(trial, value)
            seconds = round(time.perf_counter() - began, 1)
            records.append({"number": trial.number, "settings": trial.params, "value": value, "seconds": seconds})
        chosen = study.best_trial.params
    total = round(time.perf_counter() - started, 1)
    return Tuning(spec.to_dict(), chosen, records, list(victims), total)


@dataclass
class TuningVictims:
    """The victims an audit tunes on: dataset indices, images and labels.

    Args:
        indices: their dataset indices.
        images: ``(N, C, H, W)`` normalised.
        labels: ``(N,)``.
        seed: the seed of their draw (and of their gradients' PRECODE samples and noise).
    """

    indices: list[int]
    images: Tensor
    labels: Tensor
    seed: int


def draw_tuning_victims(
    dataset: Any, count: int, seed: int, audited: int, reserved: Sequence[int] = ()
) -> TuningVictims:
    """``count`` class-stratified training images, none of them an audited victim or reserved.

    Args:
        dataset: the training set, items ``(normalised image, label)``.
        count: how many tuning victims.
        seed: the audit's seed (its victims are the first ``audited`` of its stratified draw);
            the tuning victims are drawn with ``seed +`` :data:`TUNING_SEED_OFFSET`.
        audited: how many victims the audit attacks.
        reserved: further dataset indices to leave out (e.g. calibrate's held-out victims).

    Raises:
        ValueError: if the dataset has fewer than ``count`` other images.
    """
    taken = victim_indices(dataset, audited, seed, stratified=True) + list(reserved)
    drawn = seed + TUNING_SEED_OFFSET
    indices = victim_indices(dataset, count, drawn, stratified=True, exclude=taken)
    return TuningVictims(indices, *images_at(dataset, indices), drawn)


class Tuner:
    """Tunes an audit's optimisation attacks on its tuning victims' control gradients, each attack once.

    Args:
        trials: Optuna trials per attack (>= 1).
        victims: the tuning victims (:func:`draw_tuning_victims`).
        network: the audit's network (attacked where there is no control model).
        gradients: the audit's gradients of a set of victims, ``(images, labels, seed=...) ->``
            :class:`~ppp_lightning.auditing.audit.AuditedGradients` (:func:`audited_gradients`
            with the audit's network, defense, control and batch size).
        assess: scores reconstructions of victims as the audit does, ``(reconstructions, victims,
            labels) ->`` :class:`~ppp_lightning.assessment.assess.Assessment`.
        mean: the data's normalisation mean.
        std: the data's normalisation standard deviation.
        seed: the sampler's seed (the audit's).
        progress: show a bar over each attack's trials.
    """

    def __init__(
        self,
        trials: int,
        victims: TuningVictims,
        network: nn.Module,
        gradients: Callable[..., Any],
        assess: Callable[[Tensor, Tensor, Tensor], Assessment],
        mean: Sequence[float],
        std: Sequence[float],
        seed: int,
        progress: bool = False,
    ) -> None:
        self.trials, self.victims, self.assess = trials, victims, assess
        self.mean, self.std, self.seed, self.progress = mean, std, seed, progress
        device = next(network.parameters()).device
        audited = gradients(victims.images.to(device), victims.labels.to(device), seed=victims.seed)
        # the control where the audit has one: the attack must be shown to leak without the defense
        self.model = audited.control_model if audited.control is not None else network
        self.gradients = audited.control if audited.control is not None else audited.shared
        self.labels = list(victims.labels.to(device).split(len(victims.labels) // len(self.gradients)))

    def __call__(self, label: str, spec: AttackSpec) -> tuple[AttackSpec, Optional[Tuning]]:
        """The attack to run and its tuning (``spec`` itself and ``None`` where it is not :func:`tunable`)."""
        if not tunable(spec):
            return spec, None
        tuning = tune_attack(spec, self.trials, self.scored, self.seed, self.victims.indices, self.progress, label)
        return tuning.spec, tuning

    def scored(self, spec: AttackSpec) -> Scored:
        """``spec``'s findings on the tuning victims' gradients."""
        shape = (len(self.labels[0]), *self.victims.images.shape[1:])
        results = spec.build(self.mean, self.std).run(copy.deepcopy(self.model), self.gradients, self.labels, shape)
        reconstructions = torch.cat([result.images for result in results]).cpu()
        return self.assess(reconstructions, self.victims.images, self.victims.labels).attack
