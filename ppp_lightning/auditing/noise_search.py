"""The noise calibrator (``ppp-lightning calibrate``): the smallest protective sigma of a defense family.

It searches sigma (:mod:`~ppp_lightning.auditing.sigma_search`) against an oracle that audits an
attack suite at each sigma and says whether it leaked: whether any attack reconstructed a victim
or identified victims above chance. By default every sigma of a grid is audited from one attack
run per attack (:mod:`~ppp_lightning.auditing.sweep`); ``search="bisection"`` audits one sigma at
a time.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Optional, get_args

import torch
from torch import Tensor, nn

from ppp_lightning.assessment.record import AttackRecord, union
from ppp_lightning.assessment.reidentification import POOL_SIZE
from ppp_lightning.assessment.verdicts import clopper_pearson
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.auditing.audit import audit, audited_gradients
from ppp_lightning.auditing.folders import folder_lock
from ppp_lightning.auditing.sigma_search import SigmaSearch, smallest_protective_sigma, sweep_protective_sigma
from ppp_lightning.auditing.sweep import audit_sigmas
from ppp_lightning.auditing.tuning import TUNING_VICTIMS, check_tune
from ppp_lightning.defenses.spec import DefenseSpec
from ppp_lightning.validation import check_integer, check_number, check_seed
from ppp_lightning.victims import draw_victims, victim_indices

__all__ = [
    "SEARCHES",
    "HELD_OUT",
    "HELD_OUT_SEED_OFFSET",
    "HELD_OUT_SIGMAS",
    "HELD_OUT_VICTIMS",
    "Calibration",
    "SigmaSearch",
    "calibrate",
    "check_calibration",
    "noise_statistics",
    "sigma_folder",
    "smallest_protective_sigma",
    "sweep_protective_sigma",
]

HELD_OUT = "held_out"
# The held-out victims' seed is the victims' plus this: a draw no nearby seed of a user's repeats.
HELD_OUT_SEED_OFFSET = 1_000_003
# Held-out victims that confirm a protective sigma by default.
HELD_OUT_VICTIMS = 16
# Sigmas whose held-out audits run together (the candidate answer and the next ones above it), by device:
# on a CPU an attack run costs its problems, so auditing a sigma before the answer needs it only adds work;
# on an accelerator a larger batch costs little more than a small one.
HELD_OUT_SIGMAS = {"cpu": 1, "accelerator": 3}
# How calibrate searches sigma: grids audited one attack run per grid, or one audit per sigma.
Search = Literal["sweep", "bisection"]
SEARCHES: tuple[str, ...] = get_args(Search)


@dataclass
class Calibration:
    """The smallest protective sigma of a defense family at one model state, by both findings.

    Args:
        state: the model state (``initialisation`` or a checkpoint's path).
        defense: the family's settings, with ``sigma`` set to the answer when there is one.
        outcome: ``calibrated``; ``inconclusive`` (no attack leaked even without noise, so no sigma
            can be shown to protect); or ``not found`` (even ``max_sigma`` leaked).
        search: the bisection on both findings: the smallest sigma at which no attack reconstructs
            any victim **and** none identifies victims above chance (the answer).
        leaking_attacks: the attacks that leaked without noise (the ones searched against).
        victims: the number of victims.
        upper_bound: the 95% upper bound of the union's reconstruction rate at ``search.sigma``, over
            the victims and the held-out victims.
        noise: the noise at ``search.sigma`` (:func:`noise_statistics`), medians over victims.
        unions: per sigma tried (as text; ``"0"``: without noise), which victims any attack reconstructed.
        reconstruction: the bisection on reconstruction alone (the sigma that stops every legible
            reconstruction; identification may still be above chance there).
        reconstruction_noise: the noise at ``reconstruction.sigma``.
        identified: per sigma tried, per attack, which victims it identified.
        pool_size: ``K``, each victim's candidates.
        budget_shares: per sigma tried, the share of the attacks' problems stopped by their budget.
        held_out: per sigma at which the victims leaked nothing, what the held-out victims' audit
            found there (``reconstructed``, ``identified`` per attack, ``leaking`` attacks; the attacks
            that ran, cheapest first up to the first that leaked): a sigma protects only when it
            protects both.
        held_out_seed: the held-out victims' seed (``None``: none were audited).
        held_out_victims: how many held-out victims each of those audits attacked.
        tuning: per attack tuned before the search (``tune``), its ``tuning`` record: the trials,
            the settings chosen, the tuning victims (:mod:`~ppp_lightning.auditing.tuning`); every
            audit of the search ran with those settings.
        method: how sigma was searched: ``sweep`` or ``bisection`` (:data:`SEARCHES`).
    """

    state: str
    defense: dict[str, Any]
    outcome: str
    search: SigmaSearch
    leaking_attacks: list[str]
    victims: int
    upper_bound: Optional[float] = None
    noise: dict[str, float] = field(default_factory=dict)
    unions: dict[str, list[bool]] = field(default_factory=dict)
    reconstruction: SigmaSearch = field(default_factory=lambda: SigmaSearch(None, None))
    reconstruction_noise: dict[str, float] = field(default_factory=dict)
    identified: dict[str, dict[str, list[bool]]] = field(default_factory=dict)
    pool_size: int = POOL_SIZE
    budget_shares: dict[str, Optional[float]] = field(default_factory=dict)
    held_out: dict[str, dict[str, Any]] = field(default_factory=dict)
    held_out_seed: Optional[int] = None
    held_out_victims: int = 0
    tuning: dict[str, dict[str, Any]] = field(default_factory=dict)
    method: str = "bisection"

    def yaml_block(self) -> str:
        """A ready-to-paste ``trainer.callbacks`` entry of ``PartialPerturbation`` at the answer."""
        settings = {key: value for key, value in self.defense.items() if value is not None}
        lines = ["- class_path: callbacks.PartialPerturbation", "  init_args:"]
        return "\n".join(lines + [f"    {key}: {json.dumps(value)}" for key, value in settings.items()]) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for JSON)."""
        return {**asdict(self), "search": asdict(self.search), "reconstruction": asdict(self.reconstruction)}

    def leak_curves(self) -> tuple[list[float], dict[str, list[float]]]:
        """The sigmas tried (with noise) and, at each, the share of victims any attack reconstructed and
        the largest share one attack identified (the victims the search ran on)."""
        sigmas = sorted(float(key) for key in self.unions if float(key) > 0)
        keys = [f"{sigma:.6g}" for sigma in sigmas]
        reconstructed = [statistics.fmean(self.unions[key]) for key in keys]
        identified = [max((statistics.fmean(found) for found in self.identified.get(key, {}).values() if found),
                          default=math.nan) for key in keys]  # fmt: skip
        return sigmas, {"reconstructed": reconstructed, "identified (most by one attack)": identified}


def noise_statistics(
    shared: Sequence[Mapping[str, Tensor]], clean: Sequence[Mapping[str, Tensor]], names: Sequence[str]
) -> dict[str, float]:
    """How large the defense's noise is, in four units, as medians over victims.

    Args:
        shared: every victim's shared (noisy) gradient.
        clean: the same gradients without the noise.
        names: the perturbed parameters.

    Returns:
        ``absolute``: the noise's RMS per entry; ``relative``: its RMS over each tensor's gradient
        RMS, averaged over tensors; ``noise_to_signal``: the noise's L2 norm over the clean
        gradient's, over the perturbed entries (equal to ``relative`` when the noise is relative
        per tensor: partial perturbation gets no credit in it); ``noise_to_whole_signal``: the
        noise's L2 norm over the norm of the entire clean shared gradient (every parameter), the
        unit that compares perturbing a part with perturbing everything.
    """
    units: dict[str, list[float]] = {"absolute": [], "relative": [], "noise_to_signal": [], "noise_to_whole_signal": []}
    for noisy, plain in zip(shared, clean):
        pieces = [(noisy[name] - plain[name]).flatten() for name in names]
        signal = [plain[name].flatten() for name in names]
        noise = torch.cat(pieces)
        units["absolute"].append(noise.pow(2).mean().sqrt().item())
        units["relative"].append(statistics.fmean(_rms(n) / max(_rms(s), 1e-30) for n, s in zip(pieces, signal)))
        units["noise_to_signal"].append(noise.norm().item() / max(torch.cat(signal).norm().item(), 1e-30))
        whole = torch.cat([gradient.flatten() for gradient in plain.values()]).norm().item()
        units["noise_to_whole_signal"].append(noise.norm().item() / max(whole, 1e-30))
    return {unit: statistics.median(values) for unit, values in units.items()}


def _rms(values: Tensor) -> float:
    return values.pow(2).mean().sqrt().item()


def sigma_folder(folder: Path, sigma: float) -> Path:
    """Where :func:`calibrate` keeps its audit at ``sigma`` (``folder/sigma=<value>``)."""
    return Path(folder) / f"sigma={sigma:.6g}"


def calibrate(
    model: nn.Module,
    dataset: Any,
    attacks: Mapping[str, AttackSpec],
    family: DefenseSpec,
    folder: Path,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    one_channel: bool = False,
    victims: int = 16,
    seed: int = 0,
    factor: float = 1.5,
    start: Optional[float] = None,
    state: str = "initialisation",
    progress: bool = True,
    pool_size: int = POOL_SIZE,
    held_out: int = HELD_OUT_VICTIMS,
    tune: int = 0,
    tuning_victims: int = TUNING_VICTIMS,
    search: Search = "sweep",
    baseline: Optional[Path] = None,
) -> Calibration:
    """The smallest sigma of ``family`` at which no attack of the suite leaks: reconstructs or identifies.

    First the suite attacks the victims without noise (the positive control of the whole search):
    the attacks that leak nothing there (neither finding) are dropped, and if none leaks the
    outcome is ``inconclusive``. Then the search (:mod:`~ppp_lightning.auditing.sigma_search`)
    asks whether any remaining attack reconstructs a victim or identifies victims above chance
    (the answer): by default whole sigma grids, each audited from one attack run per attack
    (:func:`~ppp_lightning.auditing.sweep.audit_sigmas`), or one sigma at a time by bisection. A
    second search, reusing every audit, finds the smallest sigma that stops reconstruction alone.
    Near the answer, a sigma at which the victims leak nothing is audited again on ``held_out``
    other victims (drawn with ``seed +`` :data:`HELD_OUT_SEED_OFFSET`), and protects only if they
    leak nothing either: a few victims cannot tell an identification rate of 3 in 16 from chance,
    so the answer must also hold on victims the search did not stop on (one sigma per held-out run on
    a CPU, the next ones above it in the same run on an accelerator: :data:`HELD_OUT_SIGMAS`; the
    attacks run on them cheapest first, and none after the first that leaks). Every audit goes
    to a subfolder of ``folder`` (``no_noise``, ``sigma=<value>``, ``sigma=<value>/held_out``), so
    an interrupted calibration resumes where it stopped. With ``tune``, the audit without noise
    first tunes each optimisation attack on the gradient without noise of ``tuning_victims``
    other victims (neither the victims nor the held-out ones), and every later audit uses the
    settings chosen there (no tuning per sigma).

    Args:
        model: the client's network at the state to calibrate.
        dataset: the training set, items ``(normalised image, label)``.
        attacks: label -> attack (:func:`~ppp_lightning.attacks.suite.attack_suite`).
        family: the defense family (layers, mechanism, ``relative``...); its ``sigma`` is searched.
        folder: where the audits go.
        mean: the data's normalisation mean.
        std: the data's normalisation standard deviation.
        one_channel: the data has one true channel.
        victims: victims per audit (class-stratified, the same at every sigma).
        seed: seed of the victims, PRECODE samples and noise.
        factor: the precision of the answer (the leaking and protective sigma are within it).
        start: the first sigma tried (``None``: the family's sigma, or 1 when it is 0).
        state: the name of the model state, for the record.
        progress: show the audits' progress bars.
        pool_size: ``K``, each victim's candidates for identification (chance ``1/K``).
        held_out: how many held-out victims confirm a protective sigma (0: none).
        tune: Optuna trials per optimisation attack before the search
            (:mod:`~ppp_lightning.auditing.tuning`; 0: the attacks' own settings).
        tuning_victims: how many victims the attacks are tuned on.
        search: ``"sweep"`` (sigma grids, one attack run per grid) or ``"bisection"`` (one audit per sigma).
        baseline: where the audit without noise goes (``None``: ``folder/no_noise``); the
            calibrations of several families of one model can share it (it is resumed, not redone).

    Raises:
        ValueError: before any audit, on a bad setting (:func:`check_calibration`), a folder that is
            a file or cannot be written, or one another process is calibrating.
    """
    check_calibration(victims, seed, factor, start, held_out, tune, tuning_victims, search)
    with folder_lock(folder, work="calibrated") as folder:
        return _calibrate(model, dataset, attacks, family, folder, mean, std, one_channel, victims, seed, factor,
                          start, state, progress, pool_size, held_out, tune, tuning_victims, search,
                          baseline or folder / "no_noise")  # fmt: skip


def check_calibration(
    victims: int,
    seed: int,
    factor: float,
    start: Optional[float],
    held_out: int,
    tune: int = 0,
    tuning_victims: int = TUNING_VICTIMS,
    search: str = "sweep",
) -> None:
    """Refuse :func:`calibrate`'s settings before any audit (each named with its allowed values).

    Args:
        victims: victims per audit (an integer >= 1).
        seed: the seed (an integer in ``[0, 2**32 - 1]``).
        factor: the precision of the answer (> 1).
        start: the first sigma tried (``None``, or > 0).
        held_out: held-out victims (an integer >= 0).
        tune: Optuna trials per attack (an integer >= 0; > 0 needs Optuna installed).
        tuning_victims: the victims the attacks are tuned on (an integer >= 1).
        search: one of :data:`SEARCHES`.

    Raises:
        ValueError: naming the first bad setting and its allowed values.
    """
    check_integer("victims", victims, 1)
    check_seed(seed)
    check_number("factor", factor, minimum=1, exclusive_minimum=True)
    if start is not None:
        check_number("start", start, minimum=0, exclusive_minimum=True)
    check_integer("held_out", held_out, 0, note="(0: no held-out victims)")
    check_tune(tune, tuning_victims)
    if search not in SEARCHES:
        raise ValueError(f"search={search!r}; allowed: {', '.join(SEARCHES)}")


def _calibrate(
    model: nn.Module,
    dataset: Any,
    attacks: Mapping[str, AttackSpec],
    family: DefenseSpec,
    folder: Path,
    mean: Sequence[float],
    std: Sequence[float],
    one_channel: bool,
    victims: int,
    seed: int,
    factor: float,
    start: Optional[float],
    state: str,
    progress: bool,
    pool_size: int,
    held_out: int,
    tune: int,
    tuning_victims: int,
    method: Search,
    baseline_folder: Path,
) -> Calibration:
    """:func:`calibrate`'s work, its settings checked and its folder locked."""
    common = {"mean": mean, "std": std, "one_channel": one_channel, "victims": victims, "seed": seed}
    common.update(progress=progress, pool_size=pool_size)
    # tuned once, without noise (every sigma's control), on victims apart from the held-out ones too
    held = seed + HELD_OUT_SEED_OFFSET
    reserved = victim_indices(dataset, held_out, held, stratified=True) if tune and held_out else []
    records = audit(model, dataset, attacks, baseline_folder, None, **common, control=False, tune=tune,
                    tuning_victims=tuning_victims, reserved=reserved)  # fmt: skip
    baseline = _Found(records)
    tuning = {r.context["label"]: r.context["tuning"] for r in records if "tuning" in r.context}
    if not baseline.leaking:
        return Calibration(state, family.to_dict(), "inconclusive", SigmaSearch(None, None), [], victims,
                           unions={"0": baseline.reconstructed}, pool_size=pool_size, tuning=tuning,
                           method=method)  # fmt: skip
    suite = {label: attacks[label].replace(**tuning[label]["chosen"]) if label in tuning else attacks[label]
             for label in baseline.leaking}  # fmt: skip

    # the held-out victims only confirm: a sigma stops being audited at its first leak, cheapest attacks first
    cost = {r.context["label"]: r.context.get("seconds", 0.0) for r in records}
    confirming = dict(sorted(suite.items(), key=lambda item: cost.get(item[0], 0.0)))

    def run(sigmas: Sequence[float], held: bool) -> dict[float, _Found]:
        drawn = {"seed": seed + HELD_OUT_SEED_OFFSET, "victims": held_out, "until_leaked": True} if held else {}
        where = {sigma: sigma_folder(folder, sigma) / (HELD_OUT if held else "") for sigma in sigmas}
        audited = audit_sigmas(model, dataset, confirming if held else suite, family, where, **{**common, **drawn})
        return {sigma: _Found(records) for sigma, records in audited.items()}

    device = next(model.parameters()).device.type
    audits = _Audits(run, seed + HELD_OUT_SEED_OFFSET if held_out else None,
                     HELD_OUT_SIGMAS["cpu" if device == "cpu" else "accelerator"])  # fmt: skip
    first = start or family.sigma or 1.0
    search = _search(method, lambda sigmas: audits.leaks(sigmas, lambda f: bool(f.leaking)), first, factor)
    # the second search starts from every sigma the first audited (free to ask again)
    legible = _search(method, lambda sigmas: audits.leaks(sigmas, lambda f: any(f.reconstructed)),
                      search.sigma or first, factor, sorted(audits.found))  # fmt: skip
    details = {**audits.details(baseline), "pool_size": pool_size, "reconstruction": legible, "tuning": tuning,
               "method": method}  # fmt: skip
    details["held_out_victims"] = held_out
    if legible.sigma is not None:
        details["reconstruction_noise"] = _noise_at(model, dataset, replace(family, sigma=legible.sigma), victims, seed)
    if search.sigma is None:
        return Calibration(state, family.to_dict(), "not found", search, baseline.leaking, victims, **details)
    answer = replace(family, sigma=search.sigma)
    reconstructed = audits.reconstructed_at(search.sigma)
    upper = clopper_pearson(sum(reconstructed), len(reconstructed))[1]
    noise = _noise_at(model, dataset, answer, victims, seed)
    return Calibration(state, answer.to_dict(), "calibrated", search, baseline.leaking, victims, upper, noise,
                       **details)  # fmt: skip


class _Found:
    """What an audit at one sigma found: per victim, reconstructed by any attack; per attack, who was
    identified; the share of problems stopped by the budget; the attacks that leaked."""

    def __init__(self, records: Sequence[AttackRecord]) -> None:
        united = union([r.attack for r in records])
        self.reconstructed = united.reconstructed
        self.budget_share = united.findings().budget_share
        self.identified = {r.context["label"]: r.attack.identified for r in records}
        self.leaking = [r.context["label"] for r in records if r.attack.findings().leaked]


class _Audits:
    """A search's audits: its victims' at every sigma asked, the held-out victims' only where its victims' did not leak.

    Args:
        run: audits the suite at some sigmas, on the held-out victims or not (into their folders).
        held_out_seed: the held-out victims' seed (``None``: no held-out victims).
        at_once: how many sigmas one held-out run audits (:data:`HELD_OUT_SIGMAS`).
    """

    def __init__(
        self, run: Callable[[Sequence[float], bool], dict[float, _Found]], held_out_seed: Optional[int], at_once: int
    ) -> None:
        self.run, self.held_out_seed, self.at_once = run, held_out_seed, at_once
        self.found: dict[float, _Found] = {}
        self.held_out: dict[float, _Found] = {}

    def leaks(self, sigmas: Sequence[float], finding: Callable[[_Found], bool]) -> dict[float, bool]:
        """Per sigma, whether ``finding`` holds for the victims or, near the answer, for the held-out victims.

        The held-out victims are audited, in one run, at the ``at_once`` smallest sigmas the victims
        call protective above every sigma called leaking and below any the held-out victims already
        confirmed (then at the next ones while they all leak): further up, with leaking taken to
        fall with sigma, no answer depends on them.
        """
        self.found.update(self.run([sigma for sigma in sigmas if sigma not in self.found], False))
        answers = {sigma: finding(self.found[sigma]) for sigma in sigmas}
        while self.held_out_seed is not None:
            unsure = self._unconfirmed(answers, finding)
            if not unsure:
                return answers
            self.held_out.update(self.run([sigma for sigma in unsure if sigma not in self.held_out], True))
            answers.update({sigma: finding(self.held_out[sigma]) for sigma in unsure})
        return answers

    def _unconfirmed(self, answers: dict[float, bool], finding: Callable[[_Found], bool]) -> list[float]:
        """The smallest sigmas called protective that the held-out victims have not yet confirmed."""
        leaking = max((sigma for sigma, leaked in answers.items() if leaked), default=0.0)
        confirmed = min((sigma for sigma, found in self.held_out.items() if sigma > leaking and not finding(found)),
                        default=math.inf)  # fmt: skip
        protective = sorted(sigma for sigma, leaked in answers.items() if not leaked and leaking < sigma)
        if protective and protective[0] >= confirmed:
            return []  # the answer is confirmed: nothing below it is unsure
        return [sigma for sigma in protective if sigma < confirmed][: self.at_once]

    def reconstructed_at(self, sigma: float) -> list[bool]:
        """Per victim (the held-out ones after the others, where they ran), reconstructed by any attack."""
        return self.found[sigma].reconstructed + (self.held_out[sigma].reconstructed if sigma in self.held_out else [])

    def details(self, baseline: _Found) -> dict[str, Any]:
        """The :class:`Calibration` fields of every audit, by sigma as text (``"0"``: without noise)."""
        tried = sorted({0.0: baseline, **self.found}.items())
        return {
            "unions": {f"{sigma:.6g}": f.reconstructed for sigma, f in tried},
            "identified": {f"{sigma:.6g}": f.identified for sigma, f in tried},
            "budget_shares": {f"{sigma:.6g}": f.budget_share for sigma, f in tried},
            "held_out": {f"{sigma:.6g}": {"reconstructed": f.reconstructed, "identified": f.identified,
                                          "leaking": f.leaking} for sigma, f in sorted(self.held_out.items())},
            "held_out_seed": self.held_out_seed,
        }  # fmt: skip


def _search(
    method: Search,
    leaks: Callable[[Sequence[float]], dict[float, bool]],
    start: float,
    factor: float,
    known: Sequence[float] = (),
) -> SigmaSearch:
    """The search ``method`` against an oracle that answers many sigmas at once (a sweep asks ``known`` first)."""
    if method == "sweep":
        return sweep_protective_sigma(leaks, start, factor, first=known or None)
    return smallest_protective_sigma(lambda sigma: leaks([sigma])[sigma], start, factor)


def _noise_at(model: nn.Module, dataset: Any, defense: DefenseSpec, victims: int, seed: int) -> dict[str, float]:
    """:func:`noise_statistics` of the audit's victims under ``defense``."""
    images, labels = draw_victims(dataset, victims, seed, stratified=True)
    network = copy.deepcopy(model).train()
    gradients = audited_gradients(network, images, labels, defense, seed)
    names = defense.resolve(network, images[:1]).parameter_names
    return noise_statistics(gradients.shared, gradients.control or [], names)
