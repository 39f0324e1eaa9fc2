"""The smallest protective noise: a geometric bisection over sigma against a leak oracle, and the
noise calibrator that runs it against an attack suite (``ppp-lightning calibrate``).

The oracle runs an attack suite at one sigma and says whether it leaked: whether any attack
reconstructed a victim or identified victims above chance. Leaking is taken
to fall with sigma; the search brackets the threshold between a sigma that leaks and one that does
not, then halves the bracket in log space until its ends are within ``factor`` of each other. The
answer is the bracket's upper end: the smallest sigma *measured* not to leak.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ppp_lightning.attacks import AttackSpec
from ppp_lightning.audit import audit, audited_gradients
from ppp_lightning.defense import DefenseSpec
from ppp_lightning.record import AttackRecord, union
from ppp_lightning.reidentification import POOL_SIZE
from ppp_lightning.validation import check_number
from ppp_lightning.verdicts import clopper_pearson
from ppp_lightning.victims import draw_victims

__all__ = ["Calibration", "SigmaSearch", "calibrate", "noise_statistics", "sigma_folder", "smallest_protective_sigma"]


@dataclass
class SigmaSearch:
    """The outcome of :func:`smallest_protective_sigma`.

    Args:
        sigma: the smallest sigma measured not to leak (``None`` if even ``max_sigma`` leaked).
        leaking: the largest sigma measured to leak (``None`` if even ``min_sigma`` did not).
        evaluations: every ``(sigma, leaked)`` the oracle was asked, in order.
    """

    sigma: Optional[float]
    leaking: Optional[float]
    evaluations: list[tuple[float, bool]] = field(default_factory=list)


def smallest_protective_sigma(
    leaks: Callable[[float], bool],
    start: float = 1.0,
    factor: float = 1.5,
    min_sigma: float = 1e-3,
    max_sigma: float = 1e3,
) -> SigmaSearch:
    """Find the smallest sigma at which ``leaks`` says no, to within ``factor``.

    Args:
        leaks: whether the attack suite leaks any victim at a sigma (monotone: less with more noise).
        start: the first sigma tried.
        factor: stop when the leaking and the protective sigma are within this ratio (> 1).
        min_sigma: the smallest sigma tried while bracketing.
        max_sigma: the largest sigma tried while bracketing.

    Raises:
        ValueError: if ``factor <= 1`` or the sigmas are not positive and ordered.
    """
    check_number("factor", factor, minimum=1, exclusive_minimum=True)
    for name, value in (("min_sigma", min_sigma), ("start", start), ("max_sigma", max_sigma)):
        check_number(name, value, minimum=0, exclusive_minimum=True)
    if not min_sigma <= start <= max_sigma:
        raise ValueError(f"min_sigma={min_sigma}, start={start}, max_sigma={max_sigma}; allowed: min <= start <= max")
    search = SigmaSearch(None, None)

    def ask(sigma: float) -> bool:
        leaked = bool(leaks(sigma))
        search.evaluations.append((sigma, leaked))
        if leaked:
            search.leaking = max(sigma, search.leaking or 0.0)
        else:
            search.sigma = min(sigma, search.sigma or math.inf)
        return leaked

    sigma, step = start, 4.0  # bracket: move by 4x towards the threshold
    leaked = ask(sigma)
    while leaked and sigma < max_sigma:
        sigma = min(sigma * step, max_sigma)
        leaked = ask(sigma)
    while not leaked and sigma > min_sigma and search.leaking is None:
        sigma = max(sigma / step, min_sigma)
        leaked = ask(sigma)
    while search.sigma is not None and search.leaking is not None and search.sigma / search.leaking > factor:
        ask(math.sqrt(search.sigma * search.leaking))
    return search


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
        upper_bound: the 95% upper bound of the union's reconstruction rate at ``search.sigma``.
        noise: the noise at ``search.sigma`` (:func:`noise_statistics`), medians over victims.
        unions: per sigma tried (as text; ``"0"``: without noise), which victims any attack reconstructed.
        reconstruction: the bisection on reconstruction alone (the sigma that stops every legible
            reconstruction; identification may still be above chance there).
        reconstruction_noise: the noise at ``reconstruction.sigma``.
        identified: per sigma tried, per attack, which victims it identified.
        pool_size: ``K``, each victim's candidates.
        budget_shares: per sigma tried, the share of the attacks' problems stopped by their budget.
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

    def yaml_block(self) -> str:
        """A ready-to-paste ``trainer.callbacks`` entry of ``PartialPerturbation`` at the answer."""
        settings = {key: value for key, value in self.defense.items() if value is not None}
        lines = ["- class_path: callbacks.PartialPerturbation", "  init_args:"]
        return "\n".join(lines + [f"    {key}: {json.dumps(value)}" for key, value in settings.items()]) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """Plain values (for JSON)."""
        return {**asdict(self), "search": asdict(self.search), "reconstruction": asdict(self.reconstruction)}


def noise_statistics(
    shared: Sequence[Mapping[str, Tensor]], clean: Sequence[Mapping[str, Tensor]], names: Sequence[str]
) -> dict[str, float]:
    """How large the defense's noise is, in three units, as medians over victims.

    Args:
        shared: every victim's shared (noisy) gradient.
        clean: the same gradients without the noise.
        names: the perturbed parameters.

    Returns:
        ``absolute``: the noise's RMS per entry; ``relative``: its RMS over each tensor's gradient
        RMS, averaged over tensors; ``noise_to_signal``: the noise's L2 norm over the clean
        gradient's, over all perturbed entries.
    """
    absolute, relative, ratio = [], [], []
    for noisy, plain in zip(shared, clean):
        noise = [(noisy[name] - plain[name]).flatten() for name in names]
        signal = [plain[name].flatten() for name in names]
        absolute.append(torch.cat(noise).pow(2).mean().sqrt().item())
        relative.append(statistics.fmean(_rms(n) / max(_rms(s), 1e-30) for n, s in zip(noise, signal)))
        ratio.append(torch.cat(noise).norm().item() / max(torch.cat(signal).norm().item(), 1e-30))
    units = {"absolute": absolute, "relative": relative, "noise_to_signal": ratio}
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
) -> Calibration:
    """The smallest sigma of ``family`` at which no attack of the suite leaks: reconstructs or identifies.

    First the suite attacks the victims without noise (the positive control of the whole search):
    the attacks that leak nothing there (neither finding) are dropped, and if none leaks the
    outcome is ``inconclusive``. Then :func:`smallest_protective_sigma` asks, at each sigma,
    whether any remaining attack reconstructs a victim or identifies victims above chance (the
    answer), and a second bisection, reusing every audit, finds the smallest sigma that stops
    reconstruction alone. Every audit goes to a subfolder of ``folder`` (``no_noise``,
    ``sigma=<value>``), so an interrupted calibration resumes where it stopped.

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
    """
    folder = Path(folder)
    common = {"mean": mean, "std": std, "one_channel": one_channel, "victims": victims, "seed": seed}
    common.update(control=False, progress=progress, pool_size=pool_size)
    findings: dict[float, _Found] = {0.0: _Found(audit(model, dataset, attacks, folder / "no_noise", None, **common))}
    leaking = findings[0.0].leaking
    if not leaking:
        return Calibration(state, family.to_dict(), "inconclusive", SigmaSearch(None, None), [], victims,
                           unions={"0": findings[0.0].reconstructed}, pool_size=pool_size)  # fmt: skip

    def found(sigma: float) -> _Found:
        if sigma not in findings:
            suite = {label: attacks[label] for label in leaking}
            records = audit(model, dataset, suite, sigma_folder(folder, sigma), replace(family, sigma=sigma), **common)
            findings[sigma] = _Found(records)
        return findings[sigma]

    first = start or family.sigma or 1.0
    search = smallest_protective_sigma(lambda sigma: bool(found(sigma).leaking), first, factor)
    legible = smallest_protective_sigma(lambda sigma: any(found(sigma).reconstructed), search.sigma or first, factor)
    tried = sorted(findings.items())
    details = {"unions": {f"{sigma:.6g}": f.reconstructed for sigma, f in tried},
               "identified": {f"{sigma:.6g}": f.identified for sigma, f in tried}, "pool_size": pool_size,
               "budget_shares": {f"{sigma:.6g}": f.budget_share for sigma, f in tried}}  # fmt: skip
    reconstruction_noise = {} if legible.sigma is None else _noise_at(model, dataset, replace(family, sigma=legible.sigma),
                                                                      victims, seed)  # fmt: skip
    if search.sigma is None:
        return Calibration(state, family.to_dict(), "not found", search, leaking, victims, reconstruction=legible,
                           reconstruction_noise=reconstruction_noise, **details)  # fmt: skip
    answer = replace(family, sigma=search.sigma)
    upper = clopper_pearson(sum(findings[search.sigma].reconstructed), victims)[1]
    noise = _noise_at(model, dataset, answer, victims, seed)
    return Calibration(state, answer.to_dict(), "calibrated", search, leaking, victims, upper, noise,
                       reconstruction=legible, reconstruction_noise=reconstruction_noise, **details)  # fmt: skip


class _Found:
    """What an audit at one sigma found: per victim, reconstructed by any attack; per attack, who was
    identified; the share of problems stopped by the budget."""

    def __init__(self, records: Sequence[AttackRecord]) -> None:
        united = union([r.attack for r in records])
        self.reconstructed = united.reconstructed
        self.budget_share = united.findings().budget_share
        self.identified = {r.context["label"]: r.attack.identified for r in records}
        self.leaking = [r.context["label"] for r in records if r.attack.findings().leaked]


def _noise_at(model: nn.Module, dataset: Any, defense: DefenseSpec, victims: int, seed: int) -> dict[str, float]:
    """:func:`noise_statistics` of the audit's victims under ``defense``."""
    images, labels = draw_victims(dataset, victims, seed, stratified=True)
    network = copy.deepcopy(model).train()
    gradients = audited_gradients(network, images, labels, defense, seed)
    names = defense.resolve(network, images[:1]).parameter_names
    return noise_statistics(gradients.shared, gradients.control or [], names)
