"""The evidence grid's report: claims with explicit rules, tables with intervals, figures.

    python -m benchmarks.evidence_report benchmarks/results/evidence
    python -m benchmarks.evidence_report benchmarks/results/evidence benchmarks/results/evidence_reduced \\
        --expect cpu reduced
    python -m benchmarks.evidence_report benchmarks/results/evidence --out /tmp/report

Reads every folder's ``evidence.jsonl`` (:mod:`benchmarks.evidence`) and writes into the first
folder (or ``--out``) ``summary.md``, ``summary.json`` and the figures ``leak_vs_sigma_<arch>.png``
and ``accuracy_vs_sigma_<arch>.png``. A partial file is fine: every cell of the expected grid that
has no record yet is reported as "not yet measured". The expected grid is what the records show
(their architectures, states, families, batch rows and seeds, per folder) plus, with ``--expect``,
every cell of the named presets.

Plots are drawn on :class:`matplotlib.figure.Figure` objects (no global pyplot state, no backend).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import t as student_t

from benchmarks.evidence import AUDITED, CALIBRATED, PRESETS, RESULTS, STATES
from ppp_lightning.verdicts import CONTROL_RATE, LeakRate, clopper_pearson, judge, union_over_attacks

__all__ = [
    "CLAIMS",
    "MISSING",
    "TARGETED",
    "ArchGrid",
    "Evidence",
    "Finding",
    "bootstrap_ratio",
    "every",
    "load",
    "main",
    "some",
    "thresholds",
    "write_report",
]

MISSING = "not yet measured"
HOLDS, FAILS, UNSURE = "holds", "does not hold", "inconclusive"
FAMILIES = (*AUDITED, *CALIBRATED)
NOISE_FAMILIES = tuple(CALIBRATED)
PPP_FAMILIES = ("ppp", "ppp_no_encoder")
# The attacks aimed at PRECODE: the plain attack's targeted variants and the adaptive attack.
TARGETED = ("inverting/before_bottleneck", "inverting/before_decoder", "adaptive")
RESAMPLES, BOOTSTRAP_SEED = 2000, 0

CLAIMS: dict[str, dict[str, str]] = {
    "C1": {
        "claim": "PRECODE stops the plain attack (inverting)",
        "rule": "Per state, from the PRECODE audit's `inverting` record (control: the same network with PRECODE's "
        f"sampling off): holds if its outcome is protected (0 victims leaked and the control leaked >= "
        f"{CONTROL_RATE:.0%}); does not hold if it is leaked (k > 0); inconclusive if inconclusive. Over states: "
        "does not hold if any state does not hold, else inconclusive if any state is, else holds.",
    },
    "C2": {
        "claim": "Targeted attacks break PRECODE alone",
        "rule": f"Per state, from the PRECODE audit's records of {', '.join(TARGETED)}: holds if any of them leaked "
        "a victim (a leak needs no control); does not hold if they ran and none leaked. A non-leak here is just a "
        "non-leak: it does not show that PRECODE protects. Over states: holds if any state holds.",
    },
    "C3": {
        "claim": "PPP stops the targeted attacks",
        "rule": "Per state, from the ppp calibration: holds if calibrated (a sigma exists at which no attack that "
        f"leaked without noise leaks any victim) and a targeted attack ({', '.join(TARGETED)}) was among the "
        "attacks that leaked without noise; does not hold if not found (every attack still leaked at the largest "
        "sigma tried); inconclusive if the calibration is inconclusive (no attack leaked without noise) or no "
        "targeted attack leaked without noise. Over states: as C1.",
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
    "the threshold is the smallest evaluated sigma above the largest evaluated sigma at which some resampled "
    "victim leaked to the union of attacks (the calibration's `unions`, sigma 0 included; leaking is assumed to "
    "fall with sigma): infinite if the largest evaluated sigma leaked, 0 if no resampled victim leaked even "
    "without noise. The ratio is the PPP family's threshold over noise_all's; resamples where it is 0/0 or "
    "inf/inf are dropped (counted as undefined). Reported: the ratio on all victims, and the median and the "
    "2.5% / 97.5% percentiles (empirical quantiles, no interpolation) over resamples. The interval reflects "
    "which victims were drawn only: the sigma grid's resolution (the search's factor) adds to it."
)


# --------------------------------------------------------------------------- loading


@dataclass
class ArchGrid:
    """The cells a complete run holds for one architecture.

    Args:
        states: training states, in training order.
        families: defense families.
        batch_rows: the extra rows ``(family, batch_size)``.
        seeds: the accuracy seeds.
    """

    states: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    batch_rows: list[tuple[str, int]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)

    def add(self, states: Iterable[str], families: Iterable[str], batch_rows: Iterable[tuple[str, int]],
            seeds: Iterable[int]) -> None:  # fmt: skip
        """Expect these cells too (kept in grid order, without duplicates)."""
        for mine, new, order in ((self.states, states, STATES), (self.families, families, FAMILIES)):
            mine[:] = sorted(set(mine) | set(new), key=lambda item, order=order: _position(item, order))
        rows = set(self.batch_rows) | set(batch_rows)
        self.batch_rows[:] = sorted(rows, key=lambda row: (_position(row[0], FAMILIES), row[1]))
        self.seeds[:] = sorted(set(self.seeds) | set(seeds))


@dataclass
class Evidence:
    """The records of one or more evidence runs, by cell, and the grid they should fill.

    Args:
        audits: ``(arch, family, state, batch_size)`` -> audit record.
        calibrations: ``(arch, family, state)`` -> calibration record.
        accuracies: ``(arch, family)`` -> seed -> accuracy record.
        grid: architecture -> the cells expected.
        sources: the files read.
        unreadable: lines that were not JSON (e.g. a line being written).
        replaced: records that replaced an earlier record of the same cell (e.g. two folders with one
            architecture name).
    """

    audits: dict[tuple[str, str, str, int], dict[str, Any]] = field(default_factory=dict)
    calibrations: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    accuracies: dict[tuple[str, str], dict[int, dict[str, Any]]] = field(default_factory=dict)
    grid: dict[str, ArchGrid] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)
    unreadable: int = 0
    replaced: int = 0

    def add(self, record: dict[str, Any]) -> None:
        """File one record under its cell (a later record of the same cell replaces an earlier one)."""
        arch, family = record["arch"], record["family"]
        if record["kind"] == "audit":
            cells, key = self.audits, (arch, family, record["state"], record.get("batch_size", 1))
        elif record["kind"] == "calibration":
            cells, key = self.calibrations, (arch, family, record["state"])
        else:
            cells, key = self.accuracies.setdefault((arch, family), {}), record["seed"]
        self.replaced += key in cells
        cells[key] = record

    def audit(self, arch: str, family: str, state: str, batch_size: int = 1) -> Optional[dict[str, Any]]:
        """The audit record of a cell (``None``: not yet measured)."""
        return self.audits.get((arch, family, state, batch_size))

    def calibration(self, arch: str, family: str, state: str) -> Optional[dict[str, Any]]:
        """The calibration record of a cell (``None``: not yet measured)."""
        return self.calibrations.get((arch, family, state))

    def accuracy(self, arch: str, family: str) -> list[dict[str, Any]]:
        """The accuracy records of a family, by seed."""
        return [record for _, record in sorted(self.accuracies.get((arch, family), {}).items())]


def load(folders: Sequence[Path], expect: Sequence[str] = ()) -> Evidence:
    """Read every folder's ``evidence.jsonl`` and the grid it should fill.

    Args:
        folders: results folders of :mod:`benchmarks.evidence` (a missing file reads as empty).
        expect: names of presets (:data:`benchmarks.evidence.PRESETS`) whose every cell is expected.

    Raises:
        KeyError: if a preset is unknown.
    """
    evidence = Evidence()
    for folder in folders:
        path = Path(folder) / RESULTS
        records, unreadable = _read(path)
        evidence.sources.append(str(path))
        evidence.unreadable += unreadable
        for record in records:
            evidence.add(record)
        _expect_seen(evidence.grid, records)
    for name in expect:
        _expect_preset(evidence.grid, PRESETS[name])
    return evidence


def _read(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a results file and how many lines were not JSON."""
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records, len(lines) - len(records)


def _expect_seen(grid: dict[str, ArchGrid], records: list[dict[str, Any]]) -> None:
    """Expect, for every architecture of one run, every state, family, batch row and seed that run shows."""
    states = [r["state"] for r in records if "state" in r]
    families = [r["family"] for r in records]
    batch_rows = [(r["family"], r["batch_size"]) for r in records if "batch_size" in r]
    seeds = [r["seed"] for r in records if r["kind"] == "accuracy"]
    for arch in dict.fromkeys(r["arch"] for r in records):
        grid.setdefault(arch, ArchGrid()).add(states, families, batch_rows, seeds)


def _expect_preset(grid: dict[str, ArchGrid], preset: dict[str, Any]) -> None:
    rows = preset["batch_rows"]
    for arch in preset["archs"]:
        grid.setdefault(arch, ArchGrid()).add(preset["states"], preset["families"],
                                              [(f, rows["batch_size"]) for f in rows["families"]],
                                              preset["accuracy_seeds"])  # fmt: skip


def _position(item: str, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(item) if item in order else len(order), item)


# --------------------------------------------------------------------------- thresholds and the bootstrap


def thresholds(unions: Mapping[str, Sequence[bool]], samples: np.ndarray) -> np.ndarray:
    """Per resample of victims, the smallest evaluated sigma above the largest one that leaked.

    Args:
        unions: sigma (as text; ``"0"``: no noise) -> per victim, whether any attack leaked it.
        samples: ``(resamples, victims)`` victim indices.

    Returns:
        ``(resamples,)`` sigmas: ``inf`` where the largest evaluated sigma leaked, ``0`` where no
        resampled victim leaked even without noise.
    """
    keys = sorted(unions, key=float)
    sigmas = np.array([float(key) for key in keys] + [math.inf])
    leaked = np.array([unions[key] for key in keys], dtype=bool)[:, samples].any(axis=-1)  # (sigmas, resamples)
    last = len(keys) - 1 - np.argmax(leaked[::-1], axis=0)
    return np.where(leaked.any(axis=0), sigmas[last + 1], 0.0)


def bootstrap_ratio(
    numerator: Mapping[str, Sequence[bool]],
    denominator: Mapping[str, Sequence[bool]],
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """The ratio of two families' protective sigmas, with a paired bootstrap interval over victims.

    Args:
        numerator: the ``unions`` of one calibration (e.g. ppp).
        denominator: the ``unions`` of the other (e.g. noise_all), over the same victims.
        resamples: bootstrap resamples.
        seed: the resampling seed.

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
    sigma, sigma_all = float(thresholds(numerator, everyone)[0]), float(thresholds(denominator, everyone)[0])
    ratios = _ratios(thresholds(numerator, samples), thresholds(denominator, samples))
    defined = ratios[~np.isnan(ratios)]
    quantiles = np.quantile(defined, [0.5, 0.025, 0.975], method="inverted_cdf") if defined.size else [None] * 3
    point = float(_ratios(np.array([sigma]), np.array([sigma_all]))[0])
    return {"sigma": sigma, "sigma_all": sigma_all, "ratio": None if math.isnan(point) else point,
            **{key: None if q is None else float(q) for key, q in zip(("median", "low", "high"), quantiles)},
            "undefined": int(ratios.size - defined.size), "resamples": resamples}  # fmt: skip


def _ratios(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return numerator / denominator


# --------------------------------------------------------------------------- tables


def leak_rows(evidence: Evidence, arch: str, state: str) -> list[dict[str, str]]:
    """Section 1: per defense and attack, the leak rate, the control and the outcome."""
    grid = evidence.grid[arch]
    rows = []
    for family in grid.families:
        if family in AUDITED:
            rows += _audit_rows(family, evidence.audit(arch, family, state))
        else:
            rows += _noise_rows(family, evidence.calibration(arch, family, state))
    for family, batch_size in grid.batch_rows:
        rows += _audit_rows(f"{family} (batch {batch_size})", evidence.audit(arch, family, state, batch_size))
    return [{"arch": arch, "state": state, **row} for row in rows]


def _row(defense: str, attack: str, leaked: str, control: str, outcome: str) -> dict[str, str]:
    return {"defense": defense, "attack": attack, "leaked": leaked, "control": control, "outcome": outcome}


def _audit_rows(defense: str, audit: Optional[dict[str, Any]]) -> list[dict[str, str]]:
    if audit is None:
        return [_row(defense, "-", MISSING, "-", MISSING)]
    rows = [_row(defense, r["label"], str(LeakRate.of(r["successes"])), _control_text(r), r["outcome"])
            for r in audit["records"]]  # fmt: skip
    if len(audit["records"]) > 1:
        rows.append(_union_row(defense, audit["records"]))
    return rows


def _control_text(record: dict[str, Any]) -> str:
    return str(LeakRate.of(record["control"]["successes"])) if "control" in record else "none ran"


def _union_row(defense: str, records: list[dict[str, Any]]) -> dict[str, str]:
    """Victims leaked by any attack; the control is the union of the controls (where every attack has one)."""
    union = LeakRate.of(union_over_attacks({r["label"]: r["successes"] for r in records}))
    controls = {r["label"]: r["control"]["successes"] for r in records if "control" in r}
    control = LeakRate.of(union_over_attacks(controls)) if len(controls) == len(records) else None
    return _row(defense, "any (union)", str(union), str(control or "none ran"), judge(union, control).outcome)


def _noise_rows(family: str, calibration: Optional[dict[str, Any]]) -> list[dict[str, str]]:
    """The no-noise baseline (the union over every attack) and the union at the protective sigma."""
    if calibration is None:
        return [_row(family, "-", MISSING, "-", MISSING)]
    unions = calibration["unions"]
    baseline = LeakRate.of(unions["0"])
    rows = [_row(f"{family}, no noise", "any (union)", str(baseline), "-", judge(baseline, None).outcome)]
    sigma = _reported_sigma(calibration)
    if sigma is None:
        return rows
    rate = LeakRate.of(unions[f"{sigma:.6g}"])
    which = "protective" if calibration["outcome"] == "calibrated" else "largest tried: not found"
    attacks = "union of " + ", ".join(calibration["leaking_attacks"])
    return rows + [_row(f"{family}, sigma {sigma:.3g} ({which})", attacks, str(rate), str(baseline),
                        judge(rate, baseline).outcome)]  # fmt: skip


def _reported_sigma(calibration: dict[str, Any]) -> Optional[float]:
    """The protective sigma, or where none was found the largest tried (``None``: no search ran)."""
    if calibration["outcome"] == "calibrated":
        return calibration["search"]["sigma"]
    return max((sigma for sigma, _ in calibration["search"]["evaluations"]), default=None)


def sigma_row(evidence: Evidence, arch: str, family: str, state: str) -> dict[str, Any]:
    """Section 2: a noise family's protective sigma at one state, with the noise it adds."""
    row: dict[str, Any] = {"arch": arch, "family": family, "state": state}
    calibration = evidence.calibration(arch, family, state)
    if calibration is None:
        return {**row, "outcome": MISSING}
    search, noise = calibration["search"], calibration["noise"]
    return {**row, "outcome": calibration["outcome"], "explanation": _outcome_text(calibration),
            "sigma": search["sigma"], "leaking": search["leaking"], "absolute": noise.get("absolute"),
            "relative": noise.get("relative"), "noise_to_signal": noise.get("noise_to_signal"),
            "upper_bound": calibration["upper_bound"], "attacks": calibration["leaking_attacks"],
            "victims": calibration["victims"]}  # fmt: skip


def _outcome_text(calibration: dict[str, Any]) -> str:
    if calibration["outcome"] == "calibrated":
        return "calibrated"
    if calibration["outcome"] == "inconclusive":
        return "inconclusive: no attack leaked without noise, so no protection can be claimed"
    largest = _reported_sigma(calibration)
    return f"not found: the attacks still leaked at the largest sigma tried ({_num(largest)})"


def ratio_row(evidence: Evidence, arch: str, family: str, state: str, resamples: int = RESAMPLES,
              seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:  # fmt: skip
    """Section 3: a PPP family's protective sigma over noise_all's at one state, with its bootstrap interval."""
    row: dict[str, Any] = {"arch": arch, "family": family, "state": state}
    mine, base = evidence.calibration(arch, family, state), evidence.calibration(arch, "noise_all", state)
    if mine is None or base is None:
        return {**row, "status": MISSING}
    unsure = [c["family"] for c in (mine, base) if c["outcome"] == "inconclusive"]
    if unsure:
        return {**row, "status": f"inconclusive: no attack leaked {' or '.join(unsure)} without noise"}
    if mine["victims"] != base["victims"]:
        return {**row, "status": f"inconclusive: {mine['victims']} and {base['victims']} victims"}
    noise = [c["noise"].get("absolute") for c in (mine, base)]
    absolute = noise[0] / noise[1] if None not in noise else None
    return {**row, "status": "measured", **bootstrap_ratio(mine["unions"], base["unions"], resamples, seed),
            "absolute_ratio": absolute}  # fmt: skip


def accuracy_row(evidence: Evidence, arch: str, family: str) -> dict[str, Any]:
    """Section 4: test accuracy over seeds after training at the family's protective sigma."""
    row: dict[str, Any] = {"arch": arch, "family": family}
    records = evidence.accuracy(arch, family)
    trained = [r for r in records if "test_acc" in r]
    if not trained:
        return {**row, "status": records[0]["outcome"] if records else MISSING}
    expected = evidence.grid[arch].seeds
    status = "measured" if {r["seed"] for r in records} >= set(expected) else f"partial: seeds {expected} expected"
    sampled = spread([r["test_acc"] for r in trained])
    mean_eval = [r["test_acc_mean"] for r in trained if "test_acc_mean" in r]
    return {**row, "status": status, "sigma": trained[0]["sigma"], "seeds": [r["seed"] for r in trained],
            "epochs": [r["epochs"] for r in trained], "test_acc": sampled,
            "test_acc_mean": spread(mean_eval) if mean_eval else None}  # fmt: skip


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean over seeds with min-max, and a 95% t-interval where there are 3 seeds or more."""
    stats: dict[str, Any] = {"n": len(values), "mean": statistics.fmean(values), "min": min(values), "max": max(values)}
    if len(values) >= 3:
        half = student_t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
        return {**stats, "interval": "95% t", "low": stats["mean"] - half, "high": stats["mean"] + half}
    return {**stats, "interval": "min-max", "low": stats["min"], "high": stats["max"]}


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
    verdict = {"protected": HOLDS, "leaked": FAILS}.get(record["outcome"], UNSURE)
    text = f"{state}: {record['outcome']}, {LeakRate.of(record['successes'])} leaked, control {_control_text(record)}"
    return Finding(verdict, text)


def targeted_attacks(evidence: Evidence, arch: str, state: str) -> Finding:
    """C2 at one state."""
    audit = evidence.audit(arch, "precode", state)
    if audit is None:
        return Finding(MISSING, f"{state}: {MISSING}")
    ran = [r for r in audit["records"] if r["label"] in TARGETED]
    if not ran:
        return Finding(UNSURE, f"{state}: no targeted attack ran")
    text = ", ".join(f"{r['label']} {sum(r['successes'])}/{len(r['successes'])}" for r in ran)
    return Finding(HOLDS if any(any(r["successes"]) for r in ran) else FAILS, f"{state}: {text}")


def ppp_stops_targeted(evidence: Evidence, arch: str, state: str) -> Finding:
    """C3 at one state."""
    calibration = evidence.calibration(arch, "ppp", state)
    if calibration is None:
        return Finding(MISSING, f"{state}: {MISSING}")
    targeted = [a for a in calibration["leaking_attacks"] if a in TARGETED]
    outcome, search = calibration["outcome"], calibration["search"]
    if outcome == "not found":
        return Finding(FAILS, f"{state}: {_outcome_text(calibration)}")
    if outcome != "calibrated":
        return Finding(UNSURE, f"{state}: {_outcome_text(calibration)}")
    leaked = sum(calibration["unions"][f"{search['sigma']:.6g}"])
    text = (f"{state}: sigma {_num(search['sigma'])} (leaks at {_num(search['leaking'])}), "
            f"union {leaked}/{calibration['victims']} "
            f"(95% upper bound {_num(calibration['upper_bound'])}), targeted attacks that leaked without noise: "
            f"{', '.join(targeted) or 'none'}")  # fmt: skip
    return Finding(HOLDS if targeted else UNSURE, text)


def less_noise(ratio: dict[str, Any]) -> Finding:
    """C4's noise part at one state, from a :func:`ratio_row`."""
    state = ratio["state"]
    if ratio["status"] != "measured":
        return Finding(MISSING if ratio["status"] == MISSING else UNSURE, f"{state}: {ratio['status']}")
    if ratio["median"] is None:
        return Finding(UNSURE, f"{state}: the ratio is undefined in every resample")
    text = (f"{state}: sigma_ppp/sigma_all = {_num(ratio['sigma'])}/{_num(ratio['sigma_all'])} = "
            f"{_num(ratio['ratio'])}, 95% bootstrap {_num(ratio['low'])}-{_num(ratio['high'])}")  # fmt: skip
    verdict = HOLDS if ratio["high"] < 1 else FAILS if ratio["low"] >= 1 else UNSURE
    return Finding(verdict, text)


def same_accuracy(ppp: dict[str, Any], noise_all: dict[str, Any]) -> Finding:
    """C4's accuracy part, from two :func:`accuracy_row` s."""
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


# --------------------------------------------------------------------------- the report


def write_report(
    folders: Sequence[Path],
    out: Optional[Path] = None,
    expect: Sequence[str] = (),
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """Write ``summary.md``, ``summary.json`` and the figures; return the summary.

    Args:
        folders: results folders of :mod:`benchmarks.evidence`.
        out: where to write (default: the first folder).
        expect: presets whose every cell is expected (the rest is "not yet measured").
        resamples: bootstrap resamples.
        seed: the bootstrap's seed.
    """
    out = Path(out or folders[0])
    out.mkdir(parents=True, exist_ok=True)
    evidence = load(folders, expect)
    summary = summarise(evidence, resamples, seed)
    summary["figures"] = [path.name for path in draw_figures(evidence, summary["accuracy"], out)]
    (out / "summary.json").write_text(json.dumps(_plain(summary), indent=1))
    (out / "summary.md").write_text(markdown(summary))
    return summary


def summarise(evidence: Evidence, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Every table and the claims, as plain values (``findings`` holds :class:`Finding` objects)."""
    grid = evidence.grid
    cells = [(arch, state) for arch in grid for state in grid[arch].states]
    noise = [(arch, f, state) for arch, state in cells for f in grid[arch].families if f in NOISE_FAMILIES]
    ratios = [ratio_row(evidence, arch, family, state, resamples, seed) for arch, state in cells
              for family in PPP_FAMILIES if family in grid[arch].families]  # fmt: skip
    accuracy = [accuracy_row(evidence, arch, family) for arch in grid for family in grid[arch].families]
    findings = claims(evidence, ratios, accuracy)
    leaks = [row for arch, state in cells for row in leak_rows(evidence, arch, state)]
    return {"sources": evidence.sources, "unreadable_lines": evidence.unreadable, "replaced": evidence.replaced,
            "archs": list(grid), "states": {arch: grid[arch].states for arch in grid}, "claims": _claims_dict(findings),
            "findings": findings, "leaks": leaks, "sigmas": [sigma_row(evidence, *cell) for cell in noise],
            "ratios": ratios, "accuracy": accuracy, "missing": _missing(leaks, accuracy),
            "bootstrap": {"resamples": resamples, "seed": seed,
                          "method": BOOTSTRAP_METHOD.format(resamples=resamples, seed=seed)}}  # fmt: skip


def _claims_dict(findings: dict[str, dict[str, Finding]]) -> dict[str, Any]:
    return {claim: {**CLAIMS[claim], "per_arch": {arch: f.to_dict() for arch, f in by_arch.items()}}
            for claim, by_arch in findings.items()}  # fmt: skip


def _missing(leaks: list[dict[str, Any]], accuracy: list[dict[str, Any]]) -> list[str]:
    """Every cell not yet measured, in words."""
    cells = [f"{r['arch']} {r['state']} {r['defense']}" for r in leaks if r["outcome"] == MISSING]
    return cells + [f"{r['arch']} accuracy of {r['family']}" for r in accuracy if r["status"] == MISSING]


def _plain(value: Any) -> Any:
    """JSON-safe values: no :class:`Finding` objects, no infinite floats."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items() if key != "findings"}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4g}"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows] + [""]


def markdown(summary: dict[str, Any]) -> str:
    """The whole ``summary.md``."""
    sections = (_claims_md, _leaks_md, _sigmas_md, _ratios_md, _accuracy_md, _figures_md)
    lines = ["# Evidence report", "", "Sources: " + ", ".join(f"`{s}`" for s in summary["sources"]) + "."]
    if summary["unreadable_lines"]:
        lines.append(f"{summary['unreadable_lines']} unreadable line(s) skipped (a line being written?).")
    if summary["replaced"]:
        lines.append(f"{summary['replaced']} record(s) replaced an earlier record of the same cell (later wins).")
    for section in sections:
        lines += ["", *section(summary)]
    return "\n".join(lines) + "\n"


def _claims_md(summary: dict[str, Any]) -> list[str]:
    archs, findings = summary["archs"], summary["findings"]
    lines = ["## Claims", ""]
    lines += _table(["claim", *archs], [[f"{c}: {CLAIMS[c]['claim']}", *(f"**{findings[c][a]}**" for a in archs)]
                                        for c in CLAIMS])  # fmt: skip
    for claim, text in CLAIMS.items():
        lines += [f"### {claim}: {text['claim']}", "", f"Rule: {text['rule']}", ""]
        lines += _table(["arch", "verdict", "numbers"], [[a, str(findings[claim][a]), findings[claim][a].evidence]
                                                          for a in archs])  # fmt: skip
    return lines


def _leaks_md(summary: dict[str, Any]) -> list[str]:
    lines = ["## 1. Leak rate per defense and attack", "",
             "Leaked: k/n victims with the 95% Clopper-Pearson interval. Control: the same attack and victims "
             "without the audited defense (none ran: a leak needs no control). Noise families: the union over "
             "every attack without noise (per attack it is not recorded), then the union over the attacks that "
             "leaked without noise at the protective sigma, with the no-noise union as its control.", ""]  # fmt: skip
    for arch in summary["archs"]:
        for state in summary["states"][arch]:
            rows = [r for r in summary["leaks"] if r["arch"] == arch and r["state"] == state]
            lines += [f"### {arch}, {state}", ""]
            lines += _table(["defense", "attack", "leaked", "control", "outcome"],
                            [[r[k] for k in ("defense", "attack", "leaked", "control", "outcome")] for r in rows])
    return lines


def _sigmas_md(summary: dict[str, Any]) -> list[str]:
    header = ["arch", "family", "state", "outcome", "sigma (relative)", "leaks at", "noise RMS per entry",
              "noise / gradient RMS", "noise-to-signal", "95% upper bound", "attacks searched"]  # fmt: skip
    rows = [[r["arch"], r["family"], r["state"], r.get("explanation", r["outcome"]),
             *(_num(r.get(k)) for k in ("sigma", "leaking", "absolute", "relative", "noise_to_signal", "upper_bound")),
             ", ".join(r.get("attacks", [])) or "-"] for r in summary["sigmas"]]  # fmt: skip
    return ["## 2. Protective sigma", "",
            "The smallest sigma measured not to leak any victim to any attack that leaked without noise "
            "(leaks at: the largest measured to leak). Noise at that sigma, medians over victims. The 95% upper "
            "bound is the Clopper-Pearson bound of the union's leak rate there.", "", *_table(header, rows)]


def _ratios_md(summary: dict[str, Any]) -> list[str]:
    header = ["arch", "state", "family", "sigma", "sigma noise_all", "ratio", "bootstrap median", "2.5%", "97.5%",
              "undefined resamples", "ratio of noise RMS per entry"]  # fmt: skip
    rows = [[r["arch"], r["state"], r["family"], *(_num(r.get(k)) for k in ("sigma", "sigma_all", "ratio", "median",
             "low", "high")), r.get("undefined", "-"), _num(r.get("absolute_ratio"))] if r["status"] == "measured"
            else [r["arch"], r["state"], r["family"], r["status"], *["-"] * 7] for r in summary["ratios"]]  # fmt: skip
    return ["## 3. PPP over noise on all layers", "", "Ratio of relative sigmas (each family's units: noise std "
            "over each perturbed tensor's gradient RMS). " + summary["bootstrap"]["method"], "",
            *_table(header, rows)]  # fmt: skip


def _accuracy_md(summary: dict[str, Any]) -> list[str]:
    header = ["arch", "family", "sigma", "seeds", "test acc (sampled)", "test acc (z = mu)", "epochs", "status"]
    rows = [[r["arch"], r["family"], _num(r.get("sigma")), len(r.get("seeds", [])), _acc(r.get("test_acc")),
             _acc(r.get("test_acc_mean")), ", ".join(map(str, r.get("epochs", []))) or "-", r["status"]]
            for r in summary["accuracy"]]  # fmt: skip
    return ["## 4. Accuracy at the protective sigma", "",
            "Test accuracy after training to the plateau with the defense on (noise families at their largest "
            "protective sigma over states): mean over seeds, with min-max below 3 seeds and a 95% t-interval "
            "from 3 (the column says which). PRECODE models: sampled at test time as the reference does, and "
            "with z = mu.", "", *_table(header, rows)]  # fmt: skip


def _acc(stats: Optional[dict[str, Any]]) -> str:
    if stats is None:
        return "-"
    return f"{stats['mean']:.3f} ({stats['interval']} {stats['low']:.3f}-{stats['high']:.3f})"


def _figures_md(summary: dict[str, Any]) -> list[str]:
    lines = ["## Figures", "", *(f"![{name}]({name})" for name in summary["figures"]), ""]
    lines += [f"## {MISSING.capitalize()}", ""]
    return lines + ([f"- {cell}" for cell in summary["missing"]] or ["Nothing: every expected cell has a record."])


# --------------------------------------------------------------------------- figures


def draw_figures(evidence: Evidence, accuracy: list[dict[str, Any]], out: Path) -> list[Path]:
    """Per architecture: leak rate against sigma (one panel per state) and accuracy against sigma."""
    paths = []
    for arch in evidence.grid:
        paths.append(_save(_leak_figure(evidence, arch), out / f"leak_vs_sigma_{arch}.png"))
        paths.append(_save(_accuracy_figure([r for r in accuracy if r["arch"] == arch], arch),
                           out / f"accuracy_vs_sigma_{arch}.png"))  # fmt: skip
    return paths


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def _leak_figure(evidence: Evidence, arch: str) -> Figure:
    states = evidence.grid[arch].states or ["(no state)"]
    calibrations = {(f, s): evidence.calibration(arch, f, s) for f in NOISE_FAMILIES for s in states}
    positive = [float(k) for c in calibrations.values() if c for k in c["unions"] if float(k) > 0]
    origin = min(positive, default=1.0) / 4  # where sigma 0 is drawn on the log axis
    figure = Figure(figsize=(5 * len(states), 4))
    for ax, state in zip(figure.subplots(1, len(states), squeeze=False)[0], states):
        for index, family in enumerate(NOISE_FAMILIES):
            if calibrations[(family, state)]:
                _leak_curve(ax, calibrations[(family, state)], origin * 1.15**index)
        ax.axvline(origin * 2, color="grey", linestyle=":", linewidth=1)
        ax.text(origin, 1.08, "no\nnoise", ha="center", va="bottom", fontsize=7)
        ax.set(xscale="log", ylim=(-0.05, 1.2), title=f"{arch}, {state}", ylabel="victims leaked (any attack)",
               xlabel="relative sigma (log); left of the dotted line: no noise")  # fmt: skip
        _legend_or_note(ax)
    return figure


def _leak_curve(ax: Any, calibration: dict[str, Any], origin: float) -> None:
    """One family's leak rate per sigma with its 95% Clopper-Pearson band; sigma 0 drawn at ``origin``."""
    unions, color = calibration["unions"], _color(calibration["family"])
    sigmas = sorted((float(key) for key in unions if float(key) > 0))
    rates = [LeakRate.of(unions[f"{sigma:.6g}"]) for sigma in sigmas]
    bands = np.array([clopper_pearson(r.leaked, r.total) for r in rates]).reshape(-1, 2)
    label = f"{calibration['family']} ({_outcome_text(calibration).split(':')[0]}"
    label += f", sigma {_num(calibration['search']['sigma'])})" if calibration["outcome"] == "calibrated" else ")"
    ax.plot(sigmas, [r.rate for r in rates], "o-", color=color, label=label)
    ax.fill_between(sigmas, bands[:, 0], bands[:, 1], color=color, alpha=0.15)
    zero = LeakRate.of(unions["0"])
    low, high = zero.interval
    ax.errorbar([origin], [zero.rate], yerr=[[zero.rate - low], [high - zero.rate]], fmt="s", color=color, capsize=3)


def _accuracy_figure(rows: list[dict[str, Any]], arch: str) -> Figure:
    """Mean test accuracy at each noise family's sigma (bars: seeds' min-max), baselines as bands."""
    figure = Figure(figsize=(6, 4))
    ax = figure.subplots()
    for row in (r for r in rows if "test_acc" in r):
        color = _color(row["family"])
        for key, marker, name in (("test_acc", "o", "sampled"), ("test_acc_mean", "D", "z = mu")):
            stats = row.get(key)
            name = f" ({name})" if row["test_acc_mean"] else ""
            if stats and row["sigma"] is not None:
                bars = [[stats["mean"] - stats["min"]], [stats["max"] - stats["mean"]]]
                ax.errorbar([row["sigma"]], [stats["mean"]], yerr=bars, fmt=marker, color=color, capsize=3,
                            mfc="none" if key == "test_acc_mean" else color, label=f"{row['family']}{name}")
            elif stats:
                ax.axhline(stats["mean"], color=color, linestyle="--" if key == "test_acc" else ":",
                           label=f"{row['family']}, no noise{name}")  # fmt: skip
                ax.axhspan(stats["min"], stats["max"], color=color, alpha=0.1)
    ax.set(xscale="log", title=f"{arch}: accuracy at the protective sigma", xlabel="relative sigma (log)",
           ylabel="test accuracy (mean; bars: min-max over seeds)")  # fmt: skip
    _legend_or_note(ax)
    return figure


def _color(family: str) -> str:
    """The same colour for a family in every figure."""
    return f"C{_position(family, FAMILIES)[0]}"


def _legend_or_note(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, MISSING, ha="center", va="center", transform=ax.transAxes)


def main(argv: Optional[list[str]] = None) -> None:
    """Write the report of the results folders named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="results folders of benchmarks.evidence")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the first folder)")
    parser.add_argument("--expect", nargs="*", default=[], choices=sorted(PRESETS),
                        help="presets whose every cell is expected (missing ones: not yet measured)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=BOOTSTRAP_SEED, help="bootstrap seed")
    args = parser.parse_args(argv)
    absent = [str(folder) for folder in args.folders if not folder.is_dir()]
    if absent:
        parser.error(f"no such folder: {', '.join(absent)}")
    write_report(args.folders, args.out, args.expect, args.resamples, args.seed)
    print(f"report: {(args.out or args.folders[0]) / 'summary.md'}")


if __name__ == "__main__":
    main()
