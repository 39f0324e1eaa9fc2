"""The evidence grid's report: claims with explicit rules, tables with intervals, figures.

    python -m benchmarks.evidence_report benchmarks/results/evidence
    python -m benchmarks.evidence_report benchmarks/results/evidence benchmarks/results/evidence_reduced \\
        --expect cpu reduced
    python -m benchmarks.evidence_report benchmarks/results/evidence --out /tmp/report
    python -m benchmarks.evidence_report benchmarks/results/evidence_v3 --compare benchmarks/results/evidence

Reads every folder's ``evidence.jsonl`` (:mod:`benchmarks.evidence`) and writes into the first
folder (or ``--out``) ``summary.md``, ``summary.json`` and the figures ``leak_vs_sigma_<arch>.png``
and ``accuracy_vs_sigma_<arch>.png``. A partial file is fine: every cell of the expected grid that
has no record yet is reported as "not yet measured". The expected grid is what the records show
(their architectures, states, families, batch rows and seeds, per folder) plus, with ``--expect``,
every cell of the named presets. With ``--compare``, the claims and protective sigmas of other folders'
records (computed by the same rules) are set beside these in a section "Changes from the compared
evidence" (and under ``compare`` in ``summary.json``).

C4 is stated per unit of noise (relative sigma, noise RMS per entry, whole-gradient noise-to-signal)
and for accuracy (Welch's t-test over training seeds); C1-C3 say which state found what where the
states disagree. The cost section (:mod:`benchmarks.evidence_cost`) gives wall-clock and, where recorded,
CPU hours per architecture by kind and per architecture and defense family, and the attacks' share of it.
Section 2c re-derives every protective sigma from its per-sigma audits with each attack's identification
tested familywise (:mod:`benchmarks.evidence_chance`).

Plots are drawn on :class:`matplotlib.figure.Figure` objects (no global pyplot state, no backend).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from scipy.stats import t as student_t

from benchmarks.evidence import AUDITED, PRESETS, STATES
from benchmarks.evidence_chance import audit_chance_rows, chance_md, chance_rows
from benchmarks.evidence_claims import (
    BOOTSTRAP_METHOD,
    BOOTSTRAP_SEED,
    CLAIMS,
    NOT_RECORDED,
    RESAMPLES,
    UNITS,
    Finding,
    bootstrap_ratio,
    claims,
    in_units,
)
from benchmarks.evidence_cost import attack_cost_rows, cost_md, cost_rows, family_cost_rows
from benchmarks.evidence_figures import draw_figures
from benchmarks.evidence_records import (
    FAMILIES,
    MISSING,
    NOISE_FAMILIES,
    Evidence,
    calibration_findings,
    control_text,
    load,
    num,
    outcome_text,
    position,
    reported_sigma,
    table_lines,
    union_verdict,
    verdict_of,
    verdict_text,
)
from ppp_lightning.assessment.reidentification import POOL_SIZE
from ppp_lightning.assessment.verdicts import judge

__all__ = [
    "accuracy_row",
    "changes",
    "leak_rows",
    "main",
    "markdown",
    "ratio_row",
    "repeat_rows",
    "sigma_row",
    "spread",
    "summarise",
    "verdicts",
    "write_report",
]

PPP_FAMILIES = ("ppp", "ppp_no_encoder")


# --------------------------------------------------------------------------- tables


def leak_rows(evidence: Evidence, arch: str, state: str) -> list[dict[str, str]]:
    """Section 1: per defense and attack, both findings, the control's and the derived outcome."""
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


def _row(defense: str, attack: str, findings: str, control: str, outcome: str) -> dict[str, str]:
    return {"defense": defense, "attack": attack, "findings": findings, "control": control, "outcome": outcome}


def _audit_rows(defense: str, audit: Optional[dict[str, Any]]) -> list[dict[str, str]]:
    if audit is None:
        return [_row(defense, "-", MISSING, "-", MISSING)]
    rows = []
    for record in audit["records"]:
        verdict = verdict_of(record)
        rows.append(_row(defense, record["label"], str(verdict.defended), control_text(record), verdict_text(verdict)))
    if len(audit["records"]) > 1:
        verdict = union_verdict(audit["records"])
        control = "none ran" if verdict.control is None else str(verdict.control)
        rows.append(_row(defense, "any (union)", str(verdict.defended), control, verdict_text(verdict)))
    return rows


def _noise_rows(family: str, calibration: Optional[dict[str, Any]]) -> list[dict[str, str]]:
    """The no-noise baseline (the union over every attack) and the union at the protective sigma, whose control
    is the union of the same attacks (those that leaked) without noise."""
    if calibration is None:
        return [_row(family, "-", MISSING, "-", MISSING)]
    baseline = calibration_findings(calibration, "0")
    rows = [_row(f"{family}, no noise", "any (union)", str(baseline), "-", verdict_text(judge(baseline, None)))]
    sigma = reported_sigma(calibration)
    if sigma is None:
        return rows
    leaking = calibration["leaking_attacks"]
    found = calibration_findings(calibration, f"{sigma:.6g}")
    control = calibration_findings(calibration, "0", leaking)
    which = "protective" if calibration["outcome"] == "calibrated" else "largest tried: not found"
    return rows + [_row(f"{family}, sigma {sigma:.3g} ({which})", "union of " + ", ".join(leaking), str(found),
                        str(control), verdict_text(judge(found, control)))]  # fmt: skip


def sigma_row(evidence: Evidence, arch: str, family: str, state: str) -> dict[str, Any]:
    """Section 2: a noise family's protective sigma at one state, with the noise it adds."""
    row: dict[str, Any] = {"arch": arch, "family": family, "state": state}
    calibration = evidence.calibration(arch, family, state)
    if calibration is None:
        return {**row, "outcome": MISSING}
    search, noise = calibration["search"], calibration["noise"]
    return {**row, "outcome": calibration["outcome"], "explanation": outcome_text(calibration),
            "sigma": search["sigma"], "leaking": search["leaking"], "absolute": noise.get("absolute"),
            "relative": noise.get("relative"), "noise_to_signal": noise.get("noise_to_signal"),
            "noise_to_whole_signal": noise.get("noise_to_whole_signal"),
            "upper_bound": calibration["upper_bound"], "attacks": calibration["leaking_attacks"],
            "victims": calibration["victims"]}  # fmt: skip


def ratio_row(evidence: Evidence, arch: str, family: str, state: str, resamples: int = RESAMPLES,
              seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:  # fmt: skip
    """Section 3: a PPP family's protective sigma over noise_all's at one state, with its bootstrap interval, in
    relative sigma and (``units``, :func:`~benchmarks.evidence_claims.in_units`) in every unit of C4."""
    row: dict[str, Any] = {"arch": arch, "family": family, "state": state}
    mine, base = evidence.calibration(arch, family, state), evidence.calibration(arch, "noise_all", state)
    if mine is None or base is None:
        return {**row, "status": MISSING}
    unsure = [c["family"] for c in (mine, base) if c["outcome"] == "inconclusive"]
    if unsure:
        return {**row, "status": f"inconclusive: no attack leaked {' or '.join(unsure)} without noise"}
    if mine["victims"] != base["victims"]:
        return {**row, "status": f"inconclusive: {mine['victims']} and {base['victims']} victims"}
    identified = (mine.get("identified"), base.get("identified"))
    pool_sizes = (mine.get("pool_size", POOL_SIZE), base.get("pool_size", POOL_SIZE))
    held_out = (mine.get("held_out"), base.get("held_out"))
    ratio = bootstrap_ratio(mine["unions"], base["unions"], resamples, seed, identified, pool_sizes, held_out)
    return {**row, "status": "measured", **ratio, "units": in_units(ratio, mine, base)}


def repeat_rows(evidence: Evidence) -> list[dict[str, Any]]:
    """Section 2b: each repeated threshold cell's protective sigma beside the first calibration's.

    The spread (the largest protective sigma over the smallest) reads beside the resolution, each
    search's protective over its leaking sigma: a spread within it is the grid's, beyond it the draw's.
    """
    rows = []
    for (arch, family, state), by_seed in sorted(evidence.repeats.items()):
        first = evidence.calibration(arch, family, state)
        searches = [None if first is None else first["search"]] + [by_seed[seed]["search"] for seed in sorted(by_seed)]
        sigmas = [None if search is None else search["sigma"] for search in searches]
        found = [sigma for sigma in sigmas if sigma is not None]
        steps = [search["sigma"] / search["leaking"] for search in searches if search and search["sigma"]
                 and search["leaking"]]  # fmt: skip
        rows.append({"arch": arch, "family": family, "state": state, "seeds": [0, *sorted(by_seed)], "sigmas": sigmas,
                     "spread": max(found) / min(found) if len(found) > 1 else None,
                     "resolution": max(steps) if steps else None})  # fmt: skip
    return rows


def accuracy_row(evidence: Evidence, arch: str, family: str) -> dict[str, Any]:
    """Section 4: test accuracy over seeds after training at the family's protective sigma (``test_acc_values``:
    per seed of ``seeds``, for C4's test)."""
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
            "test_acc_values": [r["test_acc"] for r in trained],
            "test_acc_mean": spread(mean_eval) if mean_eval else None}  # fmt: skip


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean over seeds with min-max, and a 95% t-interval where there are 3 seeds or more."""
    stats: dict[str, Any] = {"n": len(values), "mean": statistics.fmean(values), "min": min(values), "max": max(values)}
    if len(values) >= 3:
        half = student_t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
        return {**stats, "interval": "95% t", "low": stats["mean"] - half, "high": stats["mean"] + half}
    return {**stats, "interval": "min-max", "low": stats["min"], "high": stats["max"]}


# --------------------------------------------------------------------------- the report


def changes(summary: dict[str, Any], compared: dict[str, Any]) -> dict[str, Any]:
    """The section "Changes from the compared evidence": every claim's verdict and every protective sigma of
    other records' (e.g. earlier ones) beside this one's.

    Args:
        summary: this report's summary.
        compared: the compared records' verdicts (:func:`verdicts`, the same rules).

    Returns:
        ``sources`` (the compared files), ``claims`` (per claim and architecture: both verdicts' texts and
        ``changed``, whether the verdicts differ) and ``sigmas`` (per family, architecture and state that
        either records: both protective sigmas, or the outcome where there is none).
    """
    archs = list(dict.fromkeys([*summary["archs"], *compared["archs"]]))
    rows = []
    for claim in CLAIMS:
        for arch in archs:
            before, now = (_claim_of(found, claim, arch) for found in (compared, summary))
            rows.append({"claim": claim, "arch": arch, "compared": before["text"], "this": now["text"],
                         "changed": before["verdict"] != now["verdict"]})  # fmt: skip
    before, now = _sigma_texts(compared), _sigma_texts(summary)
    cells = sorted(now.keys() | before.keys(), key=lambda cell: (position(cell[0], FAMILIES), archs.index(cell[1]),
                                                                 position(cell[2], STATES)))  # fmt: skip
    sigmas = [{**dict(zip(("family", "arch", "state"), cell)), "compared": before.get(cell, MISSING),
               "this": now.get(cell, MISSING)} for cell in cells]  # fmt: skip
    sigmas = [row for row in sigmas if (row["compared"], row["this"]) != (MISSING, MISSING)]
    return {"sources": compared["sources"], "claims": rows, "sigmas": sigmas}


def _claim_of(summary: dict[str, Any], claim: str, arch: str) -> dict[str, Any]:
    return summary["claims"].get(claim, {}).get("per_arch", {}).get(arch) or {"verdict": MISSING, "text": MISSING}


def _sigma_texts(summary: dict[str, Any]) -> dict[tuple[str, str, str], str]:
    """``(family, arch, state)`` -> the protective sigma, or the calibration's outcome where there is none."""
    return {(r["family"], r["arch"], r["state"]): num(r["sigma"]) if r["outcome"] == "calibrated" else r["outcome"]
            for r in summary["sigmas"]}  # fmt: skip


def write_report(
    folders: Sequence[Path],
    out: Optional[Path] = None,
    expect: Sequence[str] = (),
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    compare: Sequence[Path] = (),
) -> dict[str, Any]:
    """Write ``summary.md``, ``summary.json`` and the figures; return the summary.

    Args:
        folders: results folders of :mod:`benchmarks.evidence`.
        out: where to write (default: the first folder).
        expect: presets whose every cell is expected (the rest is "not yet measured").
        resamples: bootstrap resamples.
        seed: the bootstrap's seed.
        compare: results folders whose claims and protective sigmas are set beside these (``compare`` in the
            summary, :func:`changes`; none: no such section).
    """
    out = Path(out or folders[0])
    out.mkdir(parents=True, exist_ok=True)
    evidence = load(folders, expect)
    summary = summarise(evidence, resamples, seed)
    if compare:
        summary["compare"] = changes(summary, verdicts(load(compare), resamples, seed))
    summary["figures"] = [path.name for path in draw_figures(evidence, summary["accuracy"], out)]
    (out / "summary.json").write_text(json.dumps(_plain(summary), indent=1))
    (out / "summary.md").write_text(markdown(summary))
    return summary


def summarise(evidence: Evidence, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """Every table and the claims, as plain values (``findings`` holds :class:`Finding` objects)."""
    summary = verdicts(evidence, resamples, seed)
    grid = evidence.grid
    leaks = [row for arch in grid for state in grid[arch].states for row in leak_rows(evidence, arch, state)]
    return {**summary, "unreadable_lines": evidence.unreadable, "replaced": evidence.replaced,
            "states": {arch: grid[arch].states for arch in grid}, "leaks": leaks,
            "repeats": repeat_rows(evidence), "chance": chance_rows(evidence),
            "chance_audits": audit_chance_rows(evidence), "missing": _missing(leaks, summary["accuracy"]),
            "cost": cost_rows(evidence), "family_cost": family_cost_rows(evidence),
            "attack_cost": attack_cost_rows([Path(source).parent for source in evidence.sources]),
            "bootstrap": {"resamples": resamples, "seed": seed,
                          "method": BOOTSTRAP_METHOD.format(resamples=resamples, seed=seed)}}  # fmt: skip


def verdicts(evidence: Evidence, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """The claims and what they rest on (protective sigmas, C4's ratios, accuracies): all that
    :func:`changes` compares, so a compared folder costs no more than this.

    Args:
        evidence: the loaded records (:func:`~benchmarks.evidence_records.load`).
        resamples: bootstrap resamples of C4's ratios.
        seed: the bootstrap's seed.
    """
    grid = evidence.grid
    cells = [(arch, state) for arch in grid for state in grid[arch].states]
    noise = [(arch, f, state) for arch, state in cells for f in grid[arch].families if f in NOISE_FAMILIES]
    ratios = [ratio_row(evidence, arch, family, state, resamples, seed) for arch, state in cells
              for family in PPP_FAMILIES if family in grid[arch].families]  # fmt: skip
    accuracy = [accuracy_row(evidence, arch, family) for arch in grid for family in grid[arch].families]
    findings = claims(evidence, ratios, accuracy)
    return {"sources": evidence.sources, "archs": list(grid), "claims": _claims_dict(findings), "findings": findings,
            "sigmas": [sigma_row(evidence, *cell) for cell in noise], "ratios": ratios, "accuracy": accuracy}


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


def markdown(summary: dict[str, Any]) -> str:
    """The whole ``summary.md``."""
    sections = (_claims_md, _changes_md, _leaks_md, _sigmas_md, _repeats_md, _chance_md, _ratios_md, _accuracy_md,
                cost_md, _figures_md)  # fmt: skip
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
    lines += table_lines(["claim", *archs], [[_claim_title(c), *(f"**{findings[c][a]}**" for a in archs)]
                                        for c in CLAIMS])  # fmt: skip
    for claim, text in CLAIMS.items():
        lines += [f"### {_claim_title(claim)}", "", f"Rule: {text['rule']}", ""]
        lines += table_lines(["arch", "verdict", "numbers"], [[a, str(findings[claim][a]), findings[claim][a].evidence]
                                                          for a in archs])  # fmt: skip
    return lines


def _claim_title(claim: str) -> str:
    return f"{CLAIMS[claim]['name']}: {CLAIMS[claim]['claim']}"


def _changes_md(summary: dict[str, Any]) -> list[str]:
    """The claims and protective sigmas of the ``--compare`` folders beside these (nothing without them)."""
    if "compare" not in summary:
        return []
    compare = summary["compare"]
    claims_table = [[CLAIMS[r["claim"]]["name"], r["arch"], r["compared"], r["this"], "yes" if r["changed"] else "no"]
                    for r in compare["claims"]]  # fmt: skip
    sigmas_table = [[r[k] for k in ("family", "arch", "state", "compared", "this")] for r in compare["sigmas"]]
    return ["## Changes from the compared evidence", "",
            "Compared: " + ", ".join(f"`{s}`" for s in compare["sources"]) + ". Its claims are computed by the same "
            "rules as this report's; changed: the verdicts differ (not counting which parts are still not yet "
            "measured).", "",
            *table_lines(["claim", "arch", "compared verdict", "this verdict", "changed"], claims_table),
            "Protective sigmas (relative; where none, the calibration's outcome):", "",
            *table_lines(["family", "arch", "state", "compared sigma", "this sigma"], sigmas_table)]  # fmt: skip


def _leaks_md(summary: dict[str, Any]) -> list[str]:
    lines = ["## 1. Findings per defense and attack", "",
             "Findings: victims identified (the nearest of their K candidates; chance 1/K, or for a union over a "
             "attacks 1 - (1 - 1/K)^a; exact one-sided binomial p) and reconstructed (legible by the calibrated "
             "pixel rule), k/n with the 95% Clopper-Pearson interval. Outcome, derived from the findings: leaked "
             "if a victim was reconstructed or identification is above chance (p < 0.05); protected only if "
             "neither, identification was scored, at most half the attack's problems stopped at its budget (as "
             "recorded) and the control leaked by the same rule; else inconclusive, with the reason. Control: "
             "the same attack and victims without the audited defense (none ran: a leak needs no control). "
             "Records written before identification-aware verdicts recorded no stop reasons, so none of them "
             "reads protected. Noise families: the union over every attack without noise (per attack its "
             "reconstructions are not recorded), then the union over the attacks that leaked without noise at "
             "the protective sigma, with the same attacks' union without noise as its control; how the attacks "
             "stopped is the union's share of problems stopped by the budget (`budget_shares`, recorded by "
             "calibrations from v3 on; earlier ones recorded no stop reasons).", ""]  # fmt: skip
    for arch in summary["archs"]:
        for state in summary["states"][arch]:
            rows = [r for r in summary["leaks"] if r["arch"] == arch and r["state"] == state]
            lines += [f"### {arch}, {state}", ""]
            lines += table_lines(["defense", "attack", "findings", "control", "outcome"],
                            [[r[k] for k in ("defense", "attack", "findings", "control", "outcome")] for r in rows])
    return lines


def _sigmas_md(summary: dict[str, Any]) -> list[str]:
    header = ["arch", "family", "state", "outcome", "sigma (relative)", "leaks at", "noise RMS per entry",
              "noise / gradient RMS", "noise-to-signal", "noise-to-whole-signal", "95% upper bound",
              "attacks searched"]  # fmt: skip
    keys = ("sigma", "leaking", "absolute", "relative", "noise_to_signal", "noise_to_whole_signal", "upper_bound")
    rows = [[r["arch"], r["family"], r["state"], r.get("explanation", r["outcome"]), *(num(r.get(k)) for k in keys),
             ", ".join(r.get("attacks", [])) or "-"] for r in summary["sigmas"]]  # fmt: skip
    return ["## 2. Protective sigma", "",
            "The smallest sigma measured not to leak to any attack that leaked without noise: none reconstructs "
            "a victim or identifies victims above chance (calibrations that did not record identification: "
            "reconstruction alone, and they say so). Leaks at: the largest measured to leak. Noise at that "
            "sigma, medians over victims (noise-to-signal: over the perturbed entries' gradient; "
            "noise-to-whole-signal: over the entire gradient, every parameter; '-': not recorded, before v3). The "
            "95% upper bound is the Clopper-Pearson bound of the union's "
            "reconstruction rate there.", "", *table_lines(header, rows)]


def _repeats_md(summary: dict[str, Any]) -> list[str]:
    if not summary["repeats"]:
        return []
    header = ["arch", "family", "state", "seed offsets", "protective sigmas", "spread (largest / smallest)",
              "resolution (protective / leaking sigma)"]  # fmt: skip
    rows = [[r["arch"], r["family"], r["state"], ", ".join(map(str, r["seeds"])), ", ".join(map(num, r["sigmas"])),
             num(r["spread"]), num(r["resolution"])] for r in summary["repeats"]]  # fmt: skip
    return ["## 2b. The threshold on a second draw", "",
            "Threshold cells calibrated again with every random draw shifted by the seed offset: the model's "
            "initial weights, the victims, their candidates, PRECODE samples and the noise (the bootstrap of "
            "section 3 resamples the victims of one draw only). A spread within the resolution is the grid's; "
            "beyond it, the draw's.", "", *table_lines(header, rows)]


def _chance_md(summary: dict[str, Any]) -> list[str]:
    return chance_md(summary["chance"], summary["chance_audits"])


def _ratios_md(summary: dict[str, Any]) -> list[str]:
    units = [f"{name}: {column}" for name, _ in UNITS.values() for column in ("ratio", "95% interval")]
    header = ["arch", "state", "family", "sigma", "sigma noise_all", "bootstrap median", "undefined resamples", *units]
    rows = [[r["arch"], r["state"], r["family"], *(num(r[k]) for k in ("sigma", "sigma_all", "median")), r["undefined"],
             *(cell for unit in UNITS for cell in _unit_cells(r["units"][unit]))] if r["status"] == "measured"
            else [r["arch"], r["state"], r["family"], r["status"], *["-"] * (len(header) - 4)]
            for r in summary["ratios"]]  # fmt: skip
    return ["## 3. PPP over noise on all layers", "",
            "Ratio of protective noise, PPP over noise on all layers, per unit: relative sigma (each family's noise "
            "std over each perturbed tensor's gradient RMS: partial perturbation gets no credit in it), noise RMS "
            "per entry and whole-gradient noise-to-signal (noise L2 norm over the entire clean gradient's). The "
            "bootstrap median is that of relative sigma. " + summary["bootstrap"]["method"], "",
            *table_lines(header, rows)]  # fmt: skip


def _unit_cells(scaled: dict[str, Any]) -> list[str]:
    """A unit's ratio and 95% interval (``not recorded``: a calibration lacks the unit)."""
    if "missing" in scaled:
        return [NOT_RECORDED, "-"]
    interval = "-" if scaled["low"] is None else f"{num(scaled['low'])}-{num(scaled['high'])}"
    return [num(scaled["ratio"]), interval]


def _accuracy_md(summary: dict[str, Any]) -> list[str]:
    header = ["arch", "family", "sigma", "seeds", "test acc (sampled)", "test acc (z = mu)", "epochs", "status"]
    rows = [[r["arch"], r["family"], num(r.get("sigma")), len(r.get("seeds", [])), _acc(r.get("test_acc")),
             _acc(r.get("test_acc_mean")), ", ".join(map(str, r.get("epochs", []))) or "-", r["status"]]
            for r in summary["accuracy"]]  # fmt: skip
    return ["## 4. Accuracy at the protective sigma", "",
            "Test accuracy after training to the plateau with the defense on (noise families at their largest "
            "protective sigma over states): mean over seeds, with min-max below 3 seeds and a 95% t-interval "
            "from 3 (the column says which). PRECODE models: sampled at test time as the reference does, and "
            "with z = mu.", "", *table_lines(header, rows)]  # fmt: skip


def _acc(stats: Optional[dict[str, Any]]) -> str:
    if stats is None:
        return "-"
    return f"{stats['mean']:.3f} ({stats['interval']} {stats['low']:.3f}-{stats['high']:.3f})"


def _figures_md(summary: dict[str, Any]) -> list[str]:
    lines = ["## Figures", "", *(f"![{name}]({name})" for name in summary["figures"]), ""]
    lines += [f"## {MISSING.capitalize()}", ""]
    return lines + ([f"- {cell}" for cell in summary["missing"]] or ["Nothing: every expected cell has a record."])


def main(argv: Optional[list[str]] = None) -> None:
    """Write the report of the results folders named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", type=Path, nargs="+", help="results folders of benchmarks.evidence")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the first folder)")
    parser.add_argument("--expect", nargs="*", default=[], choices=sorted(PRESETS),
                        help="presets whose every cell is expected (missing ones: not yet measured)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=BOOTSTRAP_SEED, help="bootstrap seed")
    parser.add_argument("--compare", type=Path, nargs="+", default=[],
                        help="results folders whose claims and protective sigmas are set beside these")
    args = parser.parse_args(argv)
    absent = [str(folder) for folder in (*args.folders, *args.compare) if not folder.is_dir()]
    if absent:
        parser.error(f"no such folder: {', '.join(absent)}")
    write_report(args.folders, args.out, args.expect, args.resamples, args.seed, args.compare)
    print(f"report: {(args.out or args.folders[0]) / 'summary.md'}")


if __name__ == "__main__":
    main()
