"""The evidence grid's claims: the rule behind each verdict and the bootstrap that C4 rests on.

:data:`CLAIMS` states every claim with its rule in words; :func:`claims` applies the rules to the
records (a :class:`Finding` per claim and architecture, combined over states by :func:`every` or
:func:`some`, which say so where the states disagree). :func:`bootstrap_ratio` gives PPP's protective
sigma over noise on all layers with a paired bootstrap interval over victims (:data:`BOOTSTRAP_METHOD`
says how); :func:`in_units` states it in every unit of :data:`UNITS`, so C4's noise part is judged per
unit (C4-relative, C4-absolute, C4-whole) and its accuracy part (C4-accuracy) by Welch's t-test over
training seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy.stats import binom, ttest_ind

from benchmarks.evidence_records import (
    MISSING,
    Evidence,
    calibration_findings,
    control_text,
    identification_scored,
    num,
    outcome_text,
    verdict_of,
)
from ppp_lightning.assessment.reidentification import POOL_SIZE
from ppp_lightning.assessment.verdicts import ALPHA, BUDGET_SHARE

__all__ = [
    "ACCURACY_ALPHA",
    "BOOTSTRAP_METHOD",
    "BOOTSTRAP_SEED",
    "CLAIMS",
    "MIN_SEEDS",
    "NOT_RECORDED",
    "RESAMPLES",
    "TARGETED",
    "UNITS",
    "Finding",
    "bootstrap_ratio",
    "claims",
    "every",
    "in_units",
    "less_noise",
    "noise_factor",
    "plain_attack",
    "ppp_stops_targeted",
    "same_accuracy",
    "some",
    "targeted_attacks",
    "thresholds",
]

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
# A C4 unit that a calibration did not measure (e.g. the whole-gradient ratio before v3 records).
NOT_RECORDED = "not recorded"
# The attacks aimed at PRECODE: the plain attack's targeted variants and the adaptive attack.
TARGETED = ("inverting/before_bottleneck", "inverting/before_decoder", "adaptive")
RESAMPLES, BOOTSTRAP_SEED = 2000, 0
# C4's accuracy test: Welch's two-sided t-test at this level, on at least this many seeds per family.
ACCURACY_ALPHA, MIN_SEEDS = 0.05, 3
# C4's units: key -> (name, the calibration's `noise` entry in that unit; None: the relative sigma itself).
UNITS: dict[str, tuple[str, Optional[str]]] = {
    "relative": ("relative sigma", None),
    "absolute": ("noise RMS per entry", "absolute"),
    "whole": ("whole-gradient noise-to-signal", "noise_to_whole_signal"),
}

# The rule every claim's "leaked" and "protected" follow (ppp_lightning.assessment.verdicts.judge).
LEAK_RULE = (
    f"leaked: a victim was reconstructed or identification is above chance (exact one-sided binomial p < {ALPHA} "
    "against 1/K); protected: neither, identification was scored, at most "
    f"{BUDGET_SHARE:.0%} of the attack's problems stopped at its budget (as recorded), and the control leaked by "
    "the same rule"
)
_LESS_NOISE = "PPP protects with less noise than noise on all layers"
_UNIT_TEXTS = {
    "absolute": "the noise's RMS per perturbed entry",
    "whole": "the noise's L2 norm over the L2 norm of the entire clean shared gradient, every parameter: the unit "
    "that credits perturbing a part over perturbing everything",
}


def _unit_rule(unit: str) -> str:
    """C4's rule in a unit other than relative sigma."""
    name, key = UNITS[unit]
    return (f"Per state, as C4 (relative sigma) in {name} (`{key}`: {_UNIT_TEXTS[unit]}): the ratio, its bootstrap "
            "median and percentiles are the relative-sigma ones times factor = (noise_ppp / sigma_ppp) / "
            "(noise_all / sigma_all), each calibration's noise as recorded at its own protective sigma (for fixed "
            "victims the noise is proportional to sigma). The recorded noise is a median over victims, so the "
            "factor is fixed and the interval covers the victims' resampling of the thresholds only. Verdicts as "
            f"C4 (relative sigma); {NOT_RECORDED} where a calibration lacks `{key}`. Over states: as C1 ("
            f"{NOT_RECORDED} if no state recorded it).")  # fmt: skip


CLAIMS: dict[str, dict[str, str]] = {
    "C1": {
        "name": "C1",
        "claim": "PRECODE stops the plain attack (inverting)",
        "rule": "Per state, from the PRECODE audit's `inverting` record (control: the same network with PRECODE's "
        f"sampling off), with the verdict derived from its findings ({LEAK_RULE}): holds if it is protected; does "
        "not hold if it leaked; inconclusive if inconclusive (e.g. the control did not leak, identification was "
        "not scored, or the stop reasons were not recorded). Over states: does not hold if any state does not "
        "hold, else inconclusive if any state is, else holds; where the states disagree, the verdict says which "
        "state found what.",
    },
    "C2": {
        "name": "C2",
        "claim": "Targeted attacks break PRECODE alone",
        "rule": f"Per state, from the PRECODE audit's records of {', '.join(TARGETED)}: holds if any of them leaked "
        "(reconstructed a victim or identified victims above chance; a leak needs no control); does not hold if "
        "none leaked and PRECODE is what stopped one of them (its verdict is protected: its control, the network "
        "with the sampling off, leaked by the same rule); else inconclusive (the attacks failed with the sampling "
        "off too, protection could not be shown, or none ran). Over states: holds if any state holds.",
    },
    "C3": {
        "name": "C3",
        "claim": "PPP stops the targeted attacks",
        "rule": "Per state, from the ppp calibration: holds if calibrated (a sigma exists at which no attack that "
        "leaked without noise leaks: reconstructs a victim or identifies victims above chance), identification "
        "was scored there (the union over those attacks not above chance), the attacks did not stop at their "
        "budget there (see below) and a targeted attack "
        f"({', '.join(TARGETED)}) was among the attacks that leaked without noise; where no sigma stopped the "
        "whole suite (not found), the targeted attacks' own records at every sigma audited (victims and held-out "
        "victims) decide: holds if above the largest sigma at which one of them leaked some audited sigma lies "
        "(the other attacks that still leak are named), does not hold if they leak up to the largest sigma "
        "tried (or their records are not at hand); does not hold if the union over the attacks leaked at the "
        "reported sigma; inconclusive if the calibration is inconclusive (no attack leaked without noise), did "
        "not record identification (a calibration by reconstruction alone), the attacks stopped at their budget "
        "or no targeted attack leaked without noise. Stop reasons: where the calibration recorded the share of "
        "the attacks' problems (for the union) stopped by their iteration budget at the reported sigma "
        f"(`budget_shares`), a share above {BUDGET_SHARE:.0%} makes a protective finding inconclusive (the "
        "attacks stopped at their budget), as in audits; calibrations that did not record it (before v3) are "
        "judged without stop reasons. Over states: as C1.",
    },
    "C4-relative": {
        "name": "C4 (relative sigma)",
        "claim": _LESS_NOISE,
        "rule": "Per state, the bootstrap interval of sigma_ppp / sigma_noise_all in relative sigma (each "
        "family's noise std over each perturbed tensor's gradient RMS: partial perturbation gets no credit in "
        "this unit, by construction; section 3): holds if its 97.5% percentile < 1; does not hold if its 2.5% "
        "percentile >= 1; else inconclusive. Over states: as C1.",
    },
    "C4-absolute": {"name": f"C4 ({UNITS['absolute'][0]})", "claim": _LESS_NOISE, "rule": _unit_rule("absolute")},
    "C4-whole": {"name": f"C4 ({UNITS['whole'][0]})", "claim": _LESS_NOISE, "rule": _unit_rule("whole")},
    "C4-accuracy": {
        "name": "C4 (accuracy at equal protection)",
        "claim": "PPP is not less accurate than noise on all layers",
        "rule": "Sampled test accuracy (`test_acc`, one value per training seed) of ppp and noise_all, each "
        "trained at its own protective sigma (section 4): gap = mean(noise_all) - mean(ppp), p = Welch's "
        "two-sided t-test (unequal variances) on the per-seed values. Inconclusive with fewer than "
        f"{MIN_SEEDS} seeds in either family ({MIN_SEEDS}+ seeds needed); does not hold if gap > 0 and p < "
        f"{ACCURACY_ALPHA} (PPP clearly less accurate); else holds (no significant deficit: a deficit this test "
        "cannot see is not ruled out).",
    },
}
BOOTSTRAP_METHOD = (
    "Victims are resampled with replacement ({resamples} resamples, numpy seed {seed}); the same resampled "
    "victims are used for both families (every cell audits the same victims). For each resample and family, "
    "the threshold is the smallest evaluated sigma above the largest evaluated sigma at which the resampled "
    "victims leaked, as the calibration's search judges it: some resampled victim was reconstructed by some "
    "attack (the calibration's `unions`, sigma 0 included) or, where the calibration recorded who each attack "
    "identified (`identified`), some attack identified the resampled victims above chance (exact one-sided "
    f"binomial p < {ALPHA} against 1/K), or the calibration's held-out victims leaked there (they are not "
    "resampled: where they leaked, every resample leaks, as the search judged it); leaking is assumed to fall "
    "with sigma: infinite if the largest "
    "evaluated sigma leaked, 0 if the resampled victims leaked nothing even without noise. The ratio is the "
    "PPP family's threshold over noise_all's; resamples where it is 0/0 or inf/inf are dropped (counted as "
    "undefined). Reported: the ratio on all victims, and the median and the "
    "2.5% / 97.5% percentiles (empirical quantiles, no interpolation) over resamples. The interval reflects "
    "which victims were drawn only: the sigma grid's resolution (the search's factor) adds to it. In the other "
    "units (noise RMS per entry, whole-gradient noise-to-signal) the ratio, median and percentiles are these "
    "times factor = (noise_ppp / sigma_ppp) / (noise_all / sigma_all), from each calibration's noise at its "
    "own protective sigma (for fixed victims every unit is proportional to sigma). That noise is a median over "
    "victims, so the factor is not resampled: the interval covers victim resampling of the thresholds only."
)

# --------------------------------------------------------------------------- thresholds and the bootstrap


def thresholds(
    unions: Mapping[str, Sequence[bool]],
    samples: np.ndarray,
    identified: Optional[Mapping[str, Mapping[str, Optional[Sequence[bool]]]]] = None,
    pool_size: int = POOL_SIZE,
    held_out: Optional[Mapping[str, Mapping[str, Any]]] = None,
) -> np.ndarray:
    """Per resample of victims, the smallest evaluated sigma above the largest one that leaked.

    Args:
        unions: sigma (as text; ``"0"``: no noise) -> per victim, whether any attack reconstructed it.
        samples: ``(resamples, victims)`` victim indices.
        identified: sigma -> attack -> per victim, whether it identified the victim (``None`` or a
            sigma missing: reconstruction alone there). A resample leaks at a sigma also where some
            attack identified its victims above chance (exact one-sided binomial test at ``ALPHA``).
        pool_size: ``K``, each victim's candidates (chance ``1/K``).
        held_out: sigma -> what the calibration's held-out victims found there (``leaking`` attacks,
            ``reconstructed``): where they leaked, every resample leaks (they are not resampled), as the
            calibration's search judged that sigma.

    Returns:
        ``(resamples,)`` sigmas: ``inf`` where the largest evaluated sigma leaked, ``0`` where the
        resampled victims leaked nothing even without noise.
    """
    keys = sorted(unions, key=float)
    sigmas = np.array([float(key) for key in keys] + [math.inf])
    leaked = np.array([unions[key] for key in keys], dtype=bool)[:, samples].any(axis=-1)  # (sigmas, resamples)
    for row, key in enumerate(keys):
        for values in ((identified or {}).get(key) or {}).values():
            if values is not None:
                counts = np.asarray(values, dtype=bool)[samples].sum(axis=-1)
                leaked[row] |= binom.sf(counts - 1, samples.shape[-1], 1 / pool_size) < ALPHA
        found = (held_out or {}).get(key)
        if found and (found.get("leaking") or any(found.get("reconstructed", []))):
            leaked[row] = True
    last = len(keys) - 1 - np.argmax(leaked[::-1], axis=0)
    return np.where(leaked.any(axis=0), sigmas[last + 1], 0.0)


def bootstrap_ratio(
    numerator: Mapping[str, Sequence[bool]],
    denominator: Mapping[str, Sequence[bool]],
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    identified: tuple[Optional[Mapping[str, Any]], Optional[Mapping[str, Any]]] = (None, None),
    pool_sizes: tuple[int, int] = (POOL_SIZE, POOL_SIZE),
    held_out: tuple[Optional[Mapping[str, Any]], Optional[Mapping[str, Any]]] = (None, None),
) -> dict[str, Any]:
    """The ratio of two families' protective sigmas, with a paired bootstrap interval over victims.

    Args:
        numerator: the ``unions`` of one calibration (e.g. ppp).
        denominator: the ``unions`` of the other (e.g. noise_all), over the same victims.
        resamples: bootstrap resamples.
        seed: the resampling seed.
        identified: the two calibrations' ``identified`` (``None``: not recorded; reconstruction alone).
        pool_sizes: the two calibrations' ``pool_size``.
        held_out: the two calibrations' ``held_out`` (``None``: none ran; see :func:`thresholds`).

    Returns:
        ``sigma`` and ``sigma_all`` (the thresholds on all victims), ``ratio`` (theirs), ``median``,
        ``low`` and ``high`` (2.5% and 97.5% percentiles; ``None`` when no resample is defined) and
        ``undefined`` (resamples dropped as 0/0 or inf/inf).

    Raises:
        ValueError: if the calibrations scored different numbers of victims.
    """
    victims = {len(union) for union in (*numerator.values(), *denominator.values())}
    if len(victims) != 1:
        raise ValueError(f"the calibrations scored different numbers of victims: {sorted(victims)}")
    count = victims.pop()
    everyone = np.arange(count)[None]
    samples = np.random.default_rng(seed).integers(0, count, size=(resamples, count))

    def both(chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (thresholds(numerator, chosen, identified[0], pool_sizes[0], held_out[0]),
                thresholds(denominator, chosen, identified[1], pool_sizes[1], held_out[1]))  # fmt: skip

    sigma, sigma_all = (float(values[0]) for values in both(everyone))
    ratios = _ratios(*both(samples))
    defined = ratios[~np.isnan(ratios)]
    quantiles = np.quantile(defined, [0.5, 0.025, 0.975], method="inverted_cdf") if defined.size else [None] * 3
    point = float(_ratios(np.array([sigma]), np.array([sigma_all]))[0])
    return {"sigma": sigma, "sigma_all": sigma_all, "ratio": None if math.isnan(point) else point,
            **{key: None if q is None else float(q) for key, q in zip(("median", "low", "high"), quantiles)},
            "undefined": int(ratios.size - defined.size), "resamples": resamples}  # fmt: skip


def _ratios(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / denominator


def _noise_per_sigma(key: str, calibration: Mapping[str, Any]) -> Optional[float]:
    """A calibration's noise in one unit over its protective sigma (``None``: the unit was not recorded, or is 0,
    or there is no protective sigma)."""
    noise, sigma = calibration.get("noise", {}).get(key), calibration["search"].get("sigma")
    return noise / sigma if noise and sigma else None


def noise_factor(key: str, mine: Mapping[str, Any], base: Mapping[str, Any]) -> Optional[float]:
    """How much a ratio of relative sigmas grows in another unit: ``(noise_mine / sigma_mine) / (noise_base /
    sigma_base)``, each calibration's ``noise`` being measured at its own protective ``search.sigma``.

    Args:
        key: the unit's entry in the calibrations' ``noise`` (e.g. ``absolute``).
        mine: the numerator's calibration (e.g. ppp).
        base: the denominator's calibration (noise_all).

    Returns:
        The factor, or ``None`` where a calibration did not record the unit or has no protective sigma.
    """
    mine_per_sigma, base_per_sigma = _noise_per_sigma(key, mine), _noise_per_sigma(key, base)
    return None if mine_per_sigma is None or base_per_sigma is None else mine_per_sigma / base_per_sigma


def _why_unrecorded(key: str, calibrations: Sequence[Mapping[str, Any]]) -> str:
    """Which calibration lacks a unit, and why."""
    return "; ".join(
        f"{c['family']}: " + (f"no `{key}` recorded" if c["search"].get("sigma") else "no protective sigma")
        for c in calibrations if _noise_per_sigma(key, c) is None)  # fmt: skip


def in_units(ratio: Mapping[str, Any], mine: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """A :func:`bootstrap_ratio` (relative sigma) in every unit of :data:`UNITS`.

    Args:
        ratio: the bootstrap ratio of ``mine``'s protective sigma over ``base``'s.
        mine: the numerator's calibration.
        base: the denominator's calibration.

    Returns:
        unit -> ``factor``, ``ratio``, ``median``, ``low`` and ``high`` (the relative-sigma values times the
        factor), or ``missing`` (why, e.g. ``ppp: no `noise_to_whole_signal` recorded``) where a calibration
        did not record the unit.
    """
    out: dict[str, Any] = {}
    for unit, (_, key) in UNITS.items():
        factor = 1.0 if key is None else noise_factor(key, mine, base)
        if factor is None:
            out[unit] = {"missing": _why_unrecorded(key, (mine, base))}
            continue
        scaled = {k: None if ratio[k] is None else ratio[k] * factor for k in ("ratio", "median", "low", "high")}
        out[unit] = {"factor": factor, **scaled}
    return out


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Finding:
    """A verdict on a claim and the numbers it rests on.

    Args:
        verdict: ``holds``, ``does not hold``, ``inconclusive``, ``not recorded`` or ``not yet measured``.
        evidence: the numbers.
        missing: the parts (states) not yet measured where the verdict could still change.
        by_part: where the measured parts' verdicts differ, which part found what (e.g. ``init: holds;
            epoch1, plateau: does not hold``); empty where they agree.
    """

    verdict: str
    evidence: str
    missing: tuple[str, ...] = ()
    by_part: str = ""

    def __str__(self) -> str:
        notes = [self.by_part] if self.by_part else []
        if self.missing and self.verdict != MISSING:
            notes.append(f"{MISSING}: {', '.join(self.missing)}")
            return f"{self.verdict} so far ({'; '.join(notes)})"
        return f"{self.verdict} ({notes[0]})" if notes else self.verdict

    def to_dict(self) -> dict[str, Any]:
        """Plain values."""
        return {"verdict": self.verdict, "complete": not self.missing, "missing": list(self.missing),
                "by_part": self.by_part, "evidence": self.evidence, "text": str(self)}  # fmt: skip


def _worst(verdicts: Sequence[str]) -> str:
    """One counterexample first; a part not recorded is inconclusive unless no part was recorded."""
    if FAILS in verdicts:
        return FAILS
    if set(verdicts) == {NOT_RECORDED}:
        return NOT_RECORDED
    return UNSURE if UNSURE in verdicts or NOT_RECORDED in verdicts else HOLDS


def _by_part(parts: Sequence[tuple[str, Finding]]) -> str:
    """The measured parts grouped by verdict (in order of first appearance), where they differ."""
    groups: dict[str, list[str]] = {}
    for name, finding in parts:
        if finding.verdict != MISSING:
            groups.setdefault(finding.verdict, []).append(name)
    return "; ".join(f"{', '.join(names)}: {verdict}" for verdict, names in groups.items()) if len(groups) > 1 else ""


def every(parts: Sequence[tuple[str, Finding]]) -> Finding:
    """A claim that needs every part: does not hold if one does not, inconclusive if one is, else holds."""
    measured = [finding.verdict for _, finding in parts if finding.verdict != MISSING]
    missing = tuple(name for name, finding in parts if finding.verdict == MISSING)
    evidence = "; ".join(finding.evidence for _, finding in parts)
    if not measured:
        return Finding(MISSING, evidence, missing)
    verdict = _worst(measured)
    return Finding(verdict, evidence, () if verdict == FAILS else missing, _by_part(parts))


def some(parts: Sequence[tuple[str, Finding]]) -> Finding:
    """A claim that one part suffices for: holds if one holds, else as :func:`every` (a missing part could
    still make it hold)."""
    found = every(parts)
    if any(finding.verdict == HOLDS for _, finding in parts):
        return Finding(HOLDS, found.evidence, (), found.by_part)
    missing = tuple(name for name, finding in parts if finding.verdict == MISSING)
    return Finding(found.verdict, found.evidence, missing, found.by_part)


def _attack_record(audit: Optional[dict[str, Any]], label: str) -> Optional[dict[str, Any]]:
    return next((r for r in audit["records"] if r["label"] == label), None) if audit else None


def plain_attack(evidence: Evidence, arch: str, state: str) -> Finding:
    """C1 at one state."""
    audit = evidence.audit(arch, "precode", state)
    record = _attack_record(audit, "inverting")
    if record is None:
        return Finding(MISSING if audit is None else UNSURE, f"{state}: {MISSING if audit is None else 'did not run'}")
    verdict = verdict_of(record)
    finding = {"protected": HOLDS, "leaked": FAILS}.get(verdict.outcome, UNSURE)
    why = f" ({verdict.reason})" if verdict.reason else ""
    return Finding(finding, f"{state}: {verdict.outcome}{why}, {verdict.defended}, control {control_text(record)}")


def targeted_attacks(evidence: Evidence, arch: str, state: str) -> Finding:
    """C2 at one state."""
    audit = evidence.audit(arch, "precode", state)
    if audit is None:
        return Finding(MISSING, f"{state}: {MISSING}")
    ran = [(r, verdict_of(r)) for r in audit["records"] if r["label"] in TARGETED]
    if not ran:
        return Finding(UNSURE, f"{state}: no targeted attack ran")
    text = ", ".join(f"{r['label']} {verdict.defended}" for r, verdict in ran)
    if any(verdict.defended.leaked for _, verdict in ran):
        return Finding(HOLDS, f"{state}: {text}")
    stopped = [r for r, verdict in ran if verdict.outcome == "protected"]
    if stopped:
        controls = ", ".join(f"{r['label']} {control_text(r)}" for r in stopped)
        return Finding(FAILS, f"{state}: {text}; with the sampling off: {controls}")
    reasons = "; ".join(f"{r['label']}: {verdict.reason}" for r, verdict in ran)
    return Finding(UNSURE, f"{state}: {text}; no protection shown ({reasons})")


def ppp_stops_targeted(evidence: Evidence, arch: str, state: str) -> Finding:
    """C3 at one state."""
    calibration = evidence.calibration(arch, "ppp", state)
    if calibration is None:
        return Finding(MISSING, f"{state}: {MISSING}")
    targeted = [a for a in calibration["leaking_attacks"] if a in TARGETED]
    outcome, search = calibration["outcome"], calibration["search"]
    if outcome == "not found":
        return _targeted_alone(evidence.sigma_records(arch, "ppp", state), targeted, f"{state}: {outcome_text(calibration)}")
    if outcome != "calibrated":
        return Finding(UNSURE, f"{state}: {outcome_text(calibration)}")
    found = calibration_findings(calibration, f"{search['sigma']:.6g}")
    text = (f"{state}: sigma {num(search['sigma'])} (leaks at {num(search['leaking'])}); union: {found}; 95% upper "
            f"bound of its reconstruction rate {num(calibration['upper_bound'])}; targeted attacks that leaked "
            f"without noise: {', '.join(targeted) or 'none'}")  # fmt: skip
    if found.budget_share is not None:  # records before v3 have none: judged without stop reasons, as before
        text += f"; {found.budget_share:.0%} of the attacks' problems stopped at their budget"
    if found.leaked:
        return Finding(FAILS, f"{text}; the union leaked at the reported sigma")
    if not identification_scored(calibration):
        return Finding(UNSURE, f"{text}; identification was not scored (calibrated by reconstruction alone)")
    if found.budget_share is not None and found.budget_share > BUDGET_SHARE:
        return Finding(UNSURE, f"{text}; the attacks stopped at their budget")
    return Finding(HOLDS if targeted else UNSURE, text)


def _targeted_alone(by_sigma: Mapping[float, Sequence[Any]], targeted: Sequence[str], text: str) -> Finding:
    """C3 where no sigma stopped the whole suite: read the targeted attacks' own records at every sigma.

    Args:
        by_sigma: the calibration's per-attack records per sigma (victims and held-out victims; a held-out
            audit ran no attack after the first that leaked there, from v3's later cells on).
        targeted: the targeted attacks that leaked without noise.
        text: the calibration's outcome in words.
    """
    if not by_sigma or not targeted:
        return Finding(FAILS, text)
    leaked = {sigma: sorted({r.context["label"] for r in records if r.attack.findings().leaked})
              for sigma, records in by_sigma.items()}  # fmt: skip
    top = max((sigma for sigma, labels in leaked.items() if set(labels) & set(targeted)), default=0.0)
    above = [sigma for sigma in leaked if sigma > top]
    rest = f"at sigma {num(max(leaked))} {', '.join(leaked[max(leaked)]) or 'nothing'} leaked"
    if not above:
        return Finding(FAILS, f"{text}; the targeted attacks leak up to the largest sigma tried ({rest})")
    return Finding(HOLDS, f"{text}; the targeted attacks alone ({', '.join(targeted)}) leak nothing from sigma "
                          f"{num(min(above))} (leak at {num(top) if top else 'no sigma tried'}): the whole suite is not "
                          f"stopped because other attacks leak ({rest})")  # fmt: skip


def less_noise(ratio: dict[str, Any], unit: str = "relative") -> Finding:
    """C4's noise part in one unit of :data:`UNITS` at one state, from a
    :func:`benchmarks.evidence_report.ratio_row`."""
    state, (name, key) = ratio["state"], UNITS[unit]
    if ratio["status"] != "measured":
        return Finding(MISSING if ratio["status"] == MISSING else UNSURE, f"{state}: {ratio['status']}")
    scaled = ratio["units"][unit]
    if "missing" in scaled:
        return Finding(NOT_RECORDED, f"{state}: {name} {NOT_RECORDED} ({scaled['missing']})")
    if scaled["median"] is None:
        return Finding(UNSURE, f"{state}: the ratio is undefined in every resample")
    bootstrap = f"95% bootstrap {num(scaled['low'])}-{num(scaled['high'])}"
    if key is None:
        sigmas = "/".join(num(sigma) + (" (none found)" if sigma == math.inf else "")
                          for sigma in (ratio["sigma"], ratio["sigma_all"]))  # fmt: skip
        text = f"{state}: sigma_ppp/sigma_all = {sigmas} = {num(ratio['ratio'])}"
    else:
        text = (f"{state}: {name} ppp/noise_all = {num(scaled['ratio'])} (sigma ratio {num(ratio['ratio'])} x "
                f"factor {num(scaled['factor'])})")  # fmt: skip
    verdict = HOLDS if scaled["high"] < 1 else FAILS if scaled["low"] >= 1 else UNSURE
    return Finding(verdict, f"{text}, {bootstrap}")


def same_accuracy(ppp: dict[str, Any], noise_all: dict[str, Any]) -> Finding:
    """C4's accuracy part, from two :func:`benchmarks.evidence_report.accuracy_row` s: Welch's t-test of the
    per-seed test accuracies (see :data:`CLAIMS`)."""
    if "test_acc" not in ppp or "test_acc" not in noise_all:
        missing = [f"{row['family']}: {row['status']}" for row in (ppp, noise_all) if "test_acc" not in row]
        verdict = MISSING if all(MISSING in text for text in missing) else UNSURE
        return Finding(verdict, f"accuracy: {'; '.join(missing)}")
    mine, base = ppp["test_acc_values"], noise_all["test_acc_values"]
    gap = statistics.fmean(base) - statistics.fmean(mine)
    families = ", ".join(f"{row['family']} {statistics.fmean(row['test_acc_values']):.3f} (seeds "
                         f"{', '.join(map(str, row['seeds']))})" for row in (ppp, noise_all))  # fmt: skip
    text = f"accuracy: {families}, gap {gap:+.3f}"
    if min(len(mine), len(base)) < MIN_SEEDS:
        return Finding(UNSURE, f"{text}; {MIN_SEEDS}+ seeds needed")
    p_value = float(ttest_ind(base, mine, equal_var=False).pvalue)  # nan (no deficit shown) if nothing varies
    text += f", Welch p {num(p_value)}"
    if gap > 0 and p_value < ACCURACY_ALPHA:
        return Finding(FAILS, f"{text}: PPP is clearly less accurate")
    return Finding(HOLDS, f"{text}: no significant deficit")


# Claims judged per state, and how their states combine.
_PER_STATE: dict[str, tuple[Callable[[Evidence, str, str], Finding], Callable]] = {
    "C1": (plain_attack, every), "C2": (targeted_attacks, some), "C3": (ppp_stops_targeted, every)}


def claims(evidence: Evidence, ratios: list[dict[str, Any]], accuracy: list[dict[str, Any]]) -> dict[str, dict]:
    """Every claim's finding per architecture (see :data:`CLAIMS` for the rules).

    Args:
        evidence: the records.
        ratios: the :func:`benchmarks.evidence_report.ratio_row` s (those of ppp are read).
        accuracy: the :func:`benchmarks.evidence_report.accuracy_row` s (those of ppp and noise_all are read).

    Returns:
        claim -> architecture -> :class:`Finding`.
    """
    out: dict[str, dict[str, Finding]] = {claim: {} for claim in CLAIMS}
    for arch, grid in evidence.grid.items():
        for claim, (judge_state, combine) in _PER_STATE.items():
            out[claim][arch] = combine([(state, judge_state(evidence, arch, state)) for state in grid.states])
        mine = [r for r in ratios if r["arch"] == arch and r["family"] == "ppp"]
        for unit in UNITS:
            out[f"C4-{unit}"][arch] = every([(r["state"], less_noise(r, unit)) for r in mine])
        rows = {r["family"]: r for r in accuracy if r["arch"] == arch}
        ppp, base = (rows.get(f, {"arch": arch, "family": f, "status": MISSING}) for f in ("ppp", "noise_all"))
        out["C4-accuracy"][arch] = same_accuracy(ppp, base)
    return out
