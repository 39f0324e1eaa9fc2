"""The evidence grid's claims: the rule behind each verdict and the bootstrap that C4 rests on.

:data:`CLAIMS` states every claim with its rule in words; :func:`claims` applies the rules to the
records (a :class:`Finding` per claim and architecture, combined over states by :func:`every` or
:func:`some`). :func:`bootstrap_ratio` gives PPP's protective sigma over noise on all layers with a
paired bootstrap interval over victims (:data:`BOOTSTRAP_METHOD` says how).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from scipy.stats import binom

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
    "BOOTSTRAP_METHOD",
    "BOOTSTRAP_SEED",
    "CLAIMS",
    "RESAMPLES",
    "TARGETED",
    "Finding",
    "bootstrap_ratio",
    "claims",
    "every",
    "less_noise",
    "plain_attack",
    "ppp_stops_targeted",
    "same_accuracy",
    "some",
    "targeted_attacks",
    "thresholds",
]

HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
# The attacks aimed at PRECODE: the plain attack's targeted variants and the adaptive attack.
TARGETED = ("inverting/before_bottleneck", "inverting/before_decoder", "adaptive")
RESAMPLES, BOOTSTRAP_SEED = 2000, 0

# The rule every claim's "leaked" and "protected" follow (ppp_lightning.assessment.verdicts.judge).
LEAK_RULE = (
    f"leaked: a victim was reconstructed or identification is above chance (exact one-sided binomial p < {ALPHA} "
    "against 1/K); protected: neither, identification was scored, at most "
    f"{BUDGET_SHARE:.0%} of the attack's problems stopped at its budget (as recorded), and the control leaked by "
    "the same rule"
)
CLAIMS: dict[str, dict[str, str]] = {
    "C1": {
        "claim": "PRECODE stops the plain attack (inverting)",
        "rule": "Per state, from the PRECODE audit's `inverting` record (control: the same network with PRECODE's "
        f"sampling off), with the verdict derived from its findings ({LEAK_RULE}): holds if it is protected; does "
        "not hold if it leaked; inconclusive if inconclusive (e.g. the control did not leak, identification was "
        "not scored, or the stop reasons were not recorded). Over states: does not hold if any state does not "
        "hold, else inconclusive if any state is, else holds.",
    },
    "C2": {
        "claim": "Targeted attacks break PRECODE alone",
        "rule": f"Per state, from the PRECODE audit's records of {', '.join(TARGETED)}: holds if any of them leaked "
        "(reconstructed a victim or identified victims above chance; a leak needs no control); does not hold if "
        "none leaked and PRECODE is what stopped one of them (its verdict is protected: its control, the network "
        "with the sampling off, leaked by the same rule); else inconclusive (the attacks failed with the sampling "
        "off too, protection could not be shown, or none ran). Over states: holds if any state holds.",
    },
    "C3": {
        "claim": "PPP stops the targeted attacks",
        "rule": "Per state, from the ppp calibration: holds if calibrated (a sigma exists at which no attack that "
        "leaked without noise leaks: reconstructs a victim or identifies victims above chance), identification "
        "was scored there (the union over those attacks not above chance) and a targeted attack "
        f"({', '.join(TARGETED)}) was among the attacks that leaked without noise; does not hold if not found "
        "(the attacks still leaked at the largest sigma tried) or the union over the attacks leaked at the "
        "reported sigma; inconclusive if the calibration is inconclusive (no attack leaked without noise), did "
        "not record identification (a calibration by reconstruction alone), or no targeted attack leaked "
        "without noise. Calibrations record no stop reasons. Over states: as C1.",
    },
    "C4": {
        "claim": "PPP protects with less noise than noise on all layers, without hurting accuracy",
        "rule": "Per state, the bootstrap interval of sigma_ppp / sigma_noise_all (relative sigmas, section 3): "
        "holds if its 97.5% percentile < 1; does not hold if its 2.5% percentile >= 1; else inconclusive. "
        "Accuracy (sampled test accuracy, `test_acc`, at each family's protective sigma, over seeds): gap = "
        "mean(noise_all) - mean(ppp), spread = the larger of the two families' max - min over seeds; holds if "
        "gap <= 0, or gap <= spread with >= 2 seeds in both; does not hold (clearly lower) if gap > spread with "
        ">= 2 seeds in both; else inconclusive (one seed gives no spread to judge a deficit). Over the states "
        "and the accuracy: as C1 (holds needs every state and the accuracy to hold).",
    },
}
BOOTSTRAP_METHOD = (
    "Victims are resampled with replacement ({resamples} resamples, numpy seed {seed}); the same resampled "
    "victims are used for both families (every cell audits the same victims). For each resample and family, "
    "the threshold is the smallest evaluated sigma above the largest evaluated sigma at which the resampled "
    "victims leaked, as the calibration's search judges it: some resampled victim was reconstructed by some "
    "attack (the calibration's `unions`, sigma 0 included) or, where the calibration recorded who each attack "
    "identified (`identified`), some attack identified the resampled victims above chance (exact one-sided "
    f"binomial p < {ALPHA} against 1/K); leaking is assumed to fall with sigma: infinite if the largest "
    "evaluated sigma leaked, 0 if the resampled victims leaked nothing even without noise. The ratio is the "
    "PPP family's threshold over noise_all's; resamples where it is 0/0 or inf/inf are dropped (counted as "
    "undefined). Reported: the ratio on all victims, and the median and the "
    "2.5% / 97.5% percentiles (empirical quantiles, no interpolation) over resamples. The interval reflects "
    "which victims were drawn only: the sigma grid's resolution (the search's factor) adds to it."
)

# --------------------------------------------------------------------------- thresholds and the bootstrap


def thresholds(
    unions: Mapping[str, Sequence[bool]],
    samples: np.ndarray,
    identified: Optional[Mapping[str, Mapping[str, Optional[Sequence[bool]]]]] = None,
    pool_size: int = POOL_SIZE,
) -> np.ndarray:
    """Per resample of victims, the smallest evaluated sigma above the largest one that leaked.

    Args:
        unions: sigma (as text; ``"0"``: no noise) -> per victim, whether any attack reconstructed it.
        samples: ``(resamples, victims)`` victim indices.
        identified: sigma -> attack -> per victim, whether it identified the victim (``None`` or a
            sigma missing: reconstruction alone there). A resample leaks at a sigma also where some
            attack identified its victims above chance (exact one-sided binomial test at ``ALPHA``).
        pool_size: ``K``, each victim's candidates (chance ``1/K``).

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
    last = len(keys) - 1 - np.argmax(leaked[::-1], axis=0)
    return np.where(leaked.any(axis=0), sigmas[last + 1], 0.0)


def bootstrap_ratio(
    numerator: Mapping[str, Sequence[bool]],
    denominator: Mapping[str, Sequence[bool]],
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    identified: tuple[Optional[Mapping[str, Any]], Optional[Mapping[str, Any]]] = (None, None),
    pool_sizes: tuple[int, int] = (POOL_SIZE, POOL_SIZE),
) -> dict[str, Any]:
    """The ratio of two families' protective sigmas, with a paired bootstrap interval over victims.

    Args:
        numerator: the ``unions`` of one calibration (e.g. ppp).
        denominator: the ``unions`` of the other (e.g. noise_all), over the same victims.
        resamples: bootstrap resamples.
        seed: the resampling seed.
        identified: the two calibrations' ``identified`` (``None``: not recorded; reconstruction alone).
        pool_sizes: the two calibrations' ``pool_size``.

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
        return (thresholds(numerator, chosen, identified[0], pool_sizes[0]),
                thresholds(denominator, chosen, identified[1], pool_sizes[1]))  # fmt: skip

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



# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Finding:
    """A verdict on a claim and the numbers it rests on.

    Args:
        verdict: ``holds``, ``does not hold``, ``inconclusive`` or ``not yet measured``.
        evidence: the numbers.
        missing: the parts (states, accuracy) not yet measured where the verdict could still change.
    """

    verdict: str
    evidence: str
    missing: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.missing and self.verdict != MISSING:
            return f"{self.verdict} so far ({MISSING}: {', '.join(self.missing)})"
        return self.verdict

    def to_dict(self) -> dict[str, Any]:
        """Plain values."""
        return {"verdict": self.verdict, "complete": not self.missing, "missing": list(self.missing),
                "evidence": self.evidence, "text": str(self)}  # fmt: skip


def every(parts: Sequence[tuple[str, Finding]]) -> Finding:
    """A claim that needs every part: does not hold if one does not, inconclusive if one is, else holds."""
    measured = [finding.verdict for _, finding in parts if finding.verdict != MISSING]
    missing = tuple(name for name, finding in parts if finding.verdict == MISSING)
    evidence = "; ".join(finding.evidence for _, finding in parts)
    if not measured:
        return Finding(MISSING, evidence, missing)
    verdict = FAILS if FAILS in measured else UNSURE if UNSURE in measured else HOLDS
    return Finding(verdict, evidence, () if verdict == FAILS else missing)


def some(parts: Sequence[tuple[str, Finding]]) -> Finding:
    """A claim that one part suffices for: holds if one holds, else as :func:`every` (a missing part could
    still make it hold)."""
    found = every(parts)
    if any(finding.verdict == HOLDS for _, finding in parts):
        return Finding(HOLDS, found.evidence)
    return Finding(found.verdict, found.evidence, tuple(name for name, f in parts if f.verdict == MISSING))


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
        return Finding(FAILS, f"{state}: {outcome_text(calibration)}")
    if outcome != "calibrated":
        return Finding(UNSURE, f"{state}: {outcome_text(calibration)}")
    found = calibration_findings(calibration, f"{search['sigma']:.6g}")
    text = (f"{state}: sigma {num(search['sigma'])} (leaks at {num(search['leaking'])}); union: {found}; 95% upper "
            f"bound of its reconstruction rate {num(calibration['upper_bound'])}; targeted attacks that leaked "
            f"without noise: {', '.join(targeted) or 'none'}")  # fmt: skip
    if found.leaked:
        return Finding(FAILS, f"{text}; the union leaked at the reported sigma")
    if not identification_scored(calibration):
        return Finding(UNSURE, f"{text}; identification was not scored (calibrated by reconstruction alone)")
    return Finding(HOLDS if targeted else UNSURE, text)


def less_noise(ratio: dict[str, Any]) -> Finding:
    """C4's noise part at one state, from a :func:`benchmarks.evidence_report.ratio_row`."""
    state = ratio["state"]
    if ratio["status"] != "measured":
        return Finding(MISSING if ratio["status"] == MISSING else UNSURE, f"{state}: {ratio['status']}")
    if ratio["median"] is None:
        return Finding(UNSURE, f"{state}: the ratio is undefined in every resample")
    text = (f"{state}: sigma_ppp/sigma_all = {num(ratio['sigma'])}/{num(ratio['sigma_all'])} = "
            f"{num(ratio['ratio'])}, 95% bootstrap {num(ratio['low'])}-{num(ratio['high'])}")  # fmt: skip
    verdict = HOLDS if ratio["high"] < 1 else FAILS if ratio["low"] >= 1 else UNSURE
    return Finding(verdict, text)


def same_accuracy(ppp: dict[str, Any], noise_all: dict[str, Any]) -> Finding:
    """C4's accuracy part, from two :func:`benchmarks.evidence_report.accuracy_row` s."""
    if "test_acc" not in ppp or "test_acc" not in noise_all:
        missing = [f"{row['family']}: {row['status']}" for row in (ppp, noise_all) if "test_acc" not in row]
        verdict = MISSING if all(MISSING in text for text in missing) else UNSURE
        return Finding(verdict, f"accuracy: {'; '.join(missing)}")
    mine, base = ppp["test_acc"], noise_all["test_acc"]
    gap = base["mean"] - mine["mean"]
    width = max(mine["max"] - mine["min"], base["max"] - base["min"])
    seeded = min(mine["n"], base["n"]) >= 2
    text = (f"accuracy: ppp {mine['mean']:.3f} ({mine['n']} seeds), noise_all {base['mean']:.3f} ({base['n']} "
            f"seeds), gap {gap:+.3f}, spread {width:.3f}")  # fmt: skip
    if gap <= 0 or (seeded and gap <= width):
        return Finding(HOLDS, text)
    return Finding(FAILS if seeded else UNSURE, text)


def claims(evidence: Evidence, ratios: list[dict[str, Any]], accuracy: list[dict[str, Any]]) -> dict[str, dict]:
    """Every claim's finding per architecture (see :data:`CLAIMS` for the rules)."""
    per_state: dict[str, tuple[Callable[[Evidence, str, str], Finding], Callable]] = {
        "C1": (plain_attack, every), "C2": (targeted_attacks, some), "C3": (ppp_stops_targeted, every)}
    out: dict[str, dict[str, Finding]] = {claim: {} for claim in CLAIMS}
    for arch, grid in evidence.grid.items():
        for claim, (judge_state, combine) in per_state.items():
            out[claim][arch] = combine([(state, judge_state(evidence, arch, state)) for state in grid.states])
        noise = [(r["state"], less_noise(r)) for r in ratios if r["arch"] == arch and r["family"] == "ppp"]
        rows = {r["family"]: r for r in accuracy if r["arch"] == arch}
        ppp, base = (rows.get(f, {"arch": arch, "family": f, "status": MISSING}) for f in ("ppp", "noise_all"))
        out["C4"][arch] = every([*noise, ("accuracy", same_accuracy(ppp, base))])
    return out

