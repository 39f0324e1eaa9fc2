"""The evidence report: bootstrap ratios, claim verdicts, tables, figures and partial files."""

import copy
import json

import numpy as np
import pytest
from PIL import Image

from benchmarks.evidence_claims import Finding, bootstrap_ratio, every, some, thresholds
from benchmarks.evidence_records import MISSING, load
from benchmarks.evidence_report import main, spread, write_report
from ppp_lightning.assessment.verdicts import Findings, Identification, LeakRate, judge

VICTIMS = 4
POOL = 100
STATES = ("init", "epoch1")
T, F = [True] * VICTIMS, [False] * VICTIMS
# the findings texts of no victim and of every victim found (4 victims, 100 candidates each)
NOTHING = ("reconstructed 0/4 (95% CI 0.00-0.60), identified 0/4 not above chance (95% CI 0.00-0.60; "
           "chance 1/100, p 1)")  # fmt: skip
EVERYONE = ("identified 4/4 above chance (95% CI 0.40-1.00; chance 1/100, p 1e-08), "
            "reconstructed 4/4 (95% CI 0.40-1.00)")  # fmt: skip
CONVERGED = {"iterations": [[30]] * VICTIMS, "stop_reasons": [["converged"]] * VICTIMS}


def _findings(reconstructed, identified, budget_share=0.0):
    return Findings(LeakRate.of(reconstructed), Identification.of(identified, POOL), budget_share)


def _attack(label, successes, control=None, identified=None):
    """An audit's compact attack record as benchmarks.evidence writes it (identified: as reconstructed unless given;
    every problem converged), with the outcome and verdict its producer stores (the report derives its own)."""
    identified = successes if identified is None else identified
    record = {"label": label, "successes": successes, "identified": identified, "pool_size": POOL,
              "convergence": CONVERGED, "mean": {}}  # fmt: skip
    if control is not None:
        record["control"] = {"successes": control, "identified": control, "mean": {}}
    verdict = judge(_findings(successes, identified), None if control is None else _findings(control, control, None))
    return {**record, "findings": verdict.defended.to_dict(), "outcome": verdict.outcome, "verdict": str(verdict)}


def _audit(arch, family, state, *records):
    return {"kind": "audit", "arch": arch, "family": family, "state": state, "records": list(records)}


def _calibration(arch, family, state, unions, leaking=("inverting/before_bottleneck",)):
    """A calibration record from its unions (sigma -> per-victim reconstructions; each leaking attack identified
    the victims it reconstructed), outcome and search as calibrate makes them."""
    sigmas = sorted(unions)
    leaked = [s for s in sigmas if s > 0 and any(unions[s])]
    safe = [s for s in sigmas if s > 0 and not any(unions[s])]
    outcome = "inconclusive" if not any(unions[0]) else "calibrated" if safe else "not found"
    return {"kind": "calibration", "arch": arch, "family": family, "state": state,
            "defense": {"layers": "all", "sigma": min(safe, default=1.0), "relative": True}, "outcome": outcome,
            "search": {"sigma": min(safe, default=None), "leaking": max(leaked, default=None),
                       "evaluations": [[s, any(unions[s])] for s in sigmas if s > 0]},
            "leaking_attacks": list(leaking) if outcome != "inconclusive" else [], "victims": VICTIMS,
            "upper_bound": 0.6023646356164 if outcome == "calibrated" else None,
            "noise": {"absolute": 0.01 * min(safe), "relative": 0.98 * min(safe), "noise_to_signal": min(safe)}
            if outcome == "calibrated" else {},
            "unions": {f"{s:.6g}": u for s, u in unions.items()}, "pool_size": POOL,
            "identified": {f"{s:.6g}": {attack: u for attack in leaking} for s, u in unions.items()}}  # fmt: skip


def _accuracy(arch, family, values, sigma=None, mean_eval=False):
    return [{"kind": "accuracy", "arch": arch, "family": family, "seed": seed, "sigma": sigma, "epochs": 3,
             "test_acc": value, **({"test_acc_mean": value + 0.01} if mean_eval else {})}
            for seed, value in enumerate(values)]  # fmt: skip


def _threshold_unions(threshold, sigmas=(1, 2, 4, 8, 16, 32)):
    """Every victim leaks below ``threshold`` and none from it on."""
    return {0: T, **{s: (T if s < threshold else F) for s in sigmas}}


def _holds(state):
    """Arch ``a``: every claim holds."""
    return [
        _audit("a", "none", state, _attack("inverting", T)),
        _audit("a", "precode", state, _attack("inverting", F, T), _attack("inverting/before_bottleneck", T, T)),
        _calibration("a", "noise_all", state, _threshold_unions(16), leaking=("inverting",)),
        _calibration("a", "ppp", state, _threshold_unions(4)),
    ]


def _fails(state):
    """Arch ``b``: every claim fails."""
    return [
        _audit("b", "precode", state, _attack("inverting", [True, True, False, False], T),
               _attack("inverting/before_bottleneck", F, T), _attack("adaptive", F, T)),
        _calibration("b", "noise_all", state, _threshold_unions(4), leaking=("inverting",)),
        _calibration("b", "ppp", state, {0: T, 1: T, 4: T, 16: [False, True, False, False]}),
    ]  # fmt: skip


def _unsure(state):
    """Arch ``c``: the attacks are too weak for any claim."""
    return [
        _audit("c", "precode", state, _attack("inverting", F, F), _attack("inverting/before_decoder", F, F),
               _attack("analytic", T, T)),
        _calibration("c", "noise_all", state, _threshold_unions(16), leaking=("inverting",)),
        _calibration("c", "ppp", state, {0: F}),
    ]


def _records():
    records = [r for state in STATES for scenario in (_holds, _fails, _unsure) for r in scenario(state)]
    records += _accuracy("a", "none", [0.95, 0.96]) + _accuracy("a", "precode", [0.93, 0.94], mean_eval=True)
    records += _accuracy("a", "ppp", [0.90, 0.92], 4.0, True) + _accuracy("a", "noise_all", [0.91, 0.93], 16.0)
    records += _accuracy("b", "ppp", [0.80, 0.81], 16.0, True) + _accuracy("b", "noise_all", [0.90, 0.91], 4.0)
    records += [{"kind": "accuracy", "arch": "c", "family": "ppp", "seed": 0, "sigma": None,
                 "outcome": "no protective sigma"}]  # fmt: skip
    return records


def _write(folder, records, tail=""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evidence.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail)
    return folder


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = _write(tmp_path_factory.mktemp("evidence"), _records())
    summary = write_report([folder], resamples=500)
    return folder, summary


def test_thresholds_follow_the_largest_leaking_sigma_per_resample():
    unions = {"0": [True, False], "1": [True, False], "2": [False, False], "4": [False, False]}
    samples = np.array([[0, 1], [1, 1], [0, 0]])
    assert thresholds(unions, samples).tolist() == [2.0, 0.0, 2.0]  # victim 1 alone never leaked: no noise needed
    assert thresholds({"0": [True], "8": [True]}, np.array([[0]])).tolist() == [np.inf]  # still leaks at the top
    # identification above chance leaks too: 1 of 2 identified among 100 (p 0.02) at sigma 2, 0 of 2 is chance
    identified = {"2": {"inverting": [True, False]}, "4": {"inverting": None}}
    assert thresholds(unions, samples, identified).tolist() == [4.0, 0.0, 4.0]
    assert thresholds(unions, samples, identified, pool_size=2).tolist() == [2.0, 0.0, 2.0]  # 1 of 2 at chance 1/2


def test_the_bootstrap_of_a_known_ratio_is_degenerate_and_brackets_it():
    ppp = {f"{k:g}": v for k, v in _threshold_unions(4).items()}
    noise_all = {f"{k:g}": v for k, v in _threshold_unions(16).items()}
    ratio = bootstrap_ratio(ppp, noise_all, resamples=200)
    assert (ratio["sigma"], ratio["sigma_all"], ratio["ratio"]) == (4.0, 16.0, 0.25)
    assert (ratio["median"], ratio["low"], ratio["high"], ratio["undefined"]) == (0.25, 0.25, 0.25, 0)
    # victims with different thresholds: the interval widens and still brackets the ratio on all victims
    mixed = {"0": T, "2": [True, True, False, False], "4": [True, False, False, False], "8": F}
    spread_out = bootstrap_ratio(mixed, noise_all, resamples=500)
    assert spread_out["ratio"] == 0.5 and spread_out["low"] < 0.5 <= spread_out["high"]
    with pytest.raises(ValueError, match="different numbers of victims"):
        bootstrap_ratio({"0": [True]}, noise_all)


def test_seed_spreads_use_min_max_below_three_seeds_and_a_t_interval_from_three():
    assert spread([0.9, 0.92]) == pytest.approx({"n": 2, "mean": 0.91, "min": 0.9, "max": 0.92, "interval": "min-max",
                                                 "low": 0.9, "high": 0.92})  # fmt: skip
    three = spread([0.90, 0.91, 0.92])
    assert three["interval"] == "95% t" and three["high"] - three["mean"] == pytest.approx(4.3027 * 0.01 / 3**0.5, 1e-4)


def test_states_combine_one_counterexample_first_and_a_single_leak_suffices():
    parts = {v: Finding(v, v) for v in ("holds", "does not hold", "inconclusive", MISSING)}

    def of(*verdicts):
        return [(f"s{i}", parts[v]) for i, v in enumerate(verdicts)]

    assert str(every(of("holds", "inconclusive", "does not hold", MISSING))) == "does not hold"
    assert str(every(of("holds", "inconclusive", MISSING))) == f"inconclusive so far ({MISSING}: s2)"
    assert str(every(of("holds", "holds"))) == "holds" and every(of(MISSING)).verdict == MISSING
    assert str(some(of("does not hold", "holds", MISSING))) == "holds"
    assert str(some(of("does not hold", MISSING))) == f"does not hold so far ({MISSING}: s1)"


def test_claim_verdicts_follow_their_rules(report):
    _, summary = report
    verdicts = {c: {a: f["verdict"] for a, f in v["per_arch"].items()} for c, v in summary["claims"].items()}
    assert verdicts == {
        "C1": {"a": "holds", "b": "does not hold", "c": "inconclusive"},
        "C2": {"a": "holds", "b": "does not hold", "c": "inconclusive"},  # c: the targeted attack's control failed
        "C3": {"a": "holds", "b": "does not hold", "c": "inconclusive"},  # c: the calibration is inconclusive
        "C4": {"a": "holds", "b": "does not hold", "c": "inconclusive"},
    }
    c4 = summary["claims"]["C4"]["per_arch"]
    assert "sigma_ppp/sigma_all = 4/16 = 0.25, 95% bootstrap 0.25-0.25" in c4["a"]["evidence"]
    assert "gap +0.010, spread 0.020" in c4["a"]["evidence"]
    assert "does not hold" in summary["claims"]["C2"]["rule"] and all(f["complete"] for f in c4.values())
    c2 = summary["claims"]["C2"]["per_arch"]["b"]["evidence"]
    # both findings of every targeted attack and of its control (the verdicts are identification-aware)
    assert c2.startswith(f"init: inverting/before_bottleneck {NOTHING}, adaptive {NOTHING}; with the sampling off: "
                         f"inverting/before_bottleneck {EVERYONE}, adaptive {EVERYONE}; epoch1: ")  # fmt: skip
    c1 = summary["claims"]["C1"]["per_arch"]["a"]["evidence"]
    assert c1.startswith(f"init: protected, {NOTHING}, control {EVERYONE}; epoch1: ")
    c2_unsure = summary["claims"]["C2"]["per_arch"]["c"]["evidence"]
    assert c2_unsure.startswith(f"init: inverting/before_decoder {NOTHING}; no protection shown (inverting/"
                                "before_decoder: the attack did not leak without the defense either); ")
    c3 = summary["claims"]["C3"]["per_arch"]["a"]["evidence"]
    assert c3.startswith(f"init: sigma 4 (leaks at 2); union: {NOTHING}; 95% upper bound of its reconstruction "
                         "rate 0.6024; targeted attacks that leaked without noise: inverting/before_bottleneck; "
                         "epoch1: ")  # fmt: skip
    assert "control leaked by the same rule" in summary["claims"]["C1"]["rule"]


def test_tables_hold_the_expected_rows(report):
    folder, summary = report
    text = (folder / "summary.md").read_text()
    assert text.index("## Claims") < text.index("## 1.")
    claim = "| C1: PRECODE stops the plain attack (inverting) |"
    assert f"{claim} **holds** | **does not hold** | **inconclusive** |" in text
    assert f"| precode | inverting | {NOTHING} | {EVERYONE} | protected |" in text
    # the union of two attacks is two guesses per victim: chance 1 - 0.99^2
    union = ("identified 4/4 above chance (95% CI 0.40-1.00; chance 0.020, p 1.6e-07), "
             "reconstructed 4/4 (95% CI 0.40-1.00)")  # fmt: skip
    assert f"| precode | any (union) | {union} | {union} | leaked |" in text
    # a calibration records no stop reasons, so nothing at its protective sigma can read "protected" any more
    assert (f"| ppp, sigma 4 (protective) | union of inverting/before_bottleneck | {NOTHING} | {EVERYONE} "
            "| inconclusive (how the attack stopped was not recorded) |") in text  # fmt: skip
    assert "| a | ppp | init | calibrated | 4 | 2 | 0.04 | 3.92 | 4 | 0.6024 | inverting/before_bottleneck |" in text
    assert "| b | ppp | init | not found: the attacks still leaked at the largest sigma tried (16) |" in text
    assert "| c | ppp | init | inconclusive: no attack leaked without noise, so no protection can be claimed |" in text
    assert "| a | init | ppp | 4 | 16 | 0.25 | 0.25 | 0.25 | 0.25 | 0 | 0.25 |" in text
    assert "| a | ppp | 4 | 2 | 0.910 (min-max 0.900-0.920) | 0.920 (min-max 0.910-0.930) | 3, 3 | measured |" in text
    assert "| c | ppp | - | 0 | - | - | - | no protective sigma |" in text
    stored = json.loads((folder / "summary.json").read_text())
    assert stored["claims"] == summary["claims"] and stored["ratios"][0]["median"] == 0.25
    assert "Victims are resampled with replacement (500 resamples" in text


def test_identification_above_chance_is_a_leak_without_any_reconstruction(tmp_path):
    """3 of 4 victims identified among 100 candidates (p 4e-06), none reconstructed: leaked. The stored outcome
    (here the reconstruction-only "protected" of an earlier version) is not read; the old record's
    ``reidentified`` (no pool size: 100) is read as ``identified``."""
    three = [True, True, True, False]
    new = {**_attack("inverting", F, T, identified=three), "outcome": "protected", "verdict": "protected"}
    old = {"label": "adaptive", "successes": F, "reidentified": three, "control": {"successes": T, "mean": {}},
           "outcome": "protected", "verdict": "protected: 0/4 (95% CI 0.00-0.60)", "mean": {}}  # fmt: skip
    old_calibration = _calibration("a", "ppp", "init", _threshold_unions(4))
    del old_calibration["identified"], old_calibration["pool_size"]
    summary = write_report([_write(tmp_path, [_audit("a", "precode", "init", new, old), old_calibration])],
                           resamples=10)  # fmt: skip
    text = (tmp_path / "summary.md").read_text()
    found = ("identified 3/4 above chance (95% CI 0.19-0.99; chance 1/100, p 4e-06), "
             "reconstructed 0/4 (95% CI 0.00-0.60)")  # fmt: skip
    assert f"| precode | inverting | {found} | {EVERYONE} | leaked |" in text
    assert f"| precode | adaptive | {found} | reconstructed 4/4 (95% CI 0.40-1.00) | leaked |" in text
    assert [r["outcome"] for r in summary["leaks"] if r["defense"] == "precode"] == ["leaked"] * 3
    assert summary["claims"]["C1"]["per_arch"]["a"]["verdict"] == "does not hold"
    assert summary["claims"]["C2"]["per_arch"]["a"]["verdict"] == "holds"  # adaptive leaked by identification
    # a calibration that did not record identification never reads protected, nor shows PPP stops anything
    assert ("| ppp, sigma 4 (protective) | union of inverting/before_bottleneck | reconstructed 0/4 "
            "(95% CI 0.00-0.60) | reconstructed 4/4 (95% CI 0.40-1.00) | inconclusive (identification was not "
            "scored (no candidates); how the attack stopped was not recorded) |") in text  # fmt: skip
    assert summary["claims"]["C3"]["per_arch"]["a"]["verdict"] == "inconclusive"
    assert summary["claims"]["C3"]["per_arch"]["a"]["evidence"].endswith(
        "identification was not scored (calibrated by reconstruction alone)")
    assert ("| a | ppp | init | calibrated by reconstruction alone: identification was not scored | 4 | 2 |") in text


def test_figures_are_pngs(report):
    folder, summary = report
    assert summary["figures"] == [f"{kind}_vs_sigma_{arch}.png" for arch in "abc" for kind in ("leak", "accuracy")]
    for name in summary["figures"]:
        with Image.open(folder / name) as figure:  # a readable plot: large enough, and not blank
            pixels = np.asarray(figure.convert("L"))
        assert figure.format == "PNG" and min(figure.size) >= 300
        assert (pixels < 128).mean() > 0.005 and len(np.unique(pixels)) > 20  # axes, labels and curves drawn


def test_a_partial_file_reports_what_exists_and_marks_the_rest(tmp_path):
    records = [r for r in _records() if r["arch"] == "a" and r.get("state") != "epoch1"]
    records.append(_audit("a", "none", "epoch1", _attack("inverting", T)))  # epoch1 has begun
    folder = _write(tmp_path / "partial", records, tail='{"kind": "audit", "arch": "a"')  # a line being written
    out = tmp_path / "report"
    main([str(folder), "--out", str(out), "--expect", "quick", "--resamples", "100"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unreadable_lines"] == 1 and summary["archs"] == ["a", "mlp"]
    c1 = summary["claims"]["C1"]["per_arch"]
    assert c1["a"]["text"] == f"holds so far ({MISSING}: epoch1)" and c1["mlp"]["verdict"] == MISSING
    assert summary["claims"]["C4"]["per_arch"]["a"]["missing"] == ["epoch1"]
    assert "a epoch1 precode" in summary["missing"] and "mlp accuracy of ppp" in summary["missing"]
    text = (out / "summary.md").read_text()
    assert f"| precode | - | {MISSING} | - | {MISSING} |" in text
    assert not (folder / "summary.md").exists()  # --out leaves the results folder alone
    twice = load([folder, folder])
    assert twice.grid["a"].states == ["init", "epoch1"] and twice.replaced == len(records)


@pytest.mark.slow
def test_the_report_of_the_quick_grid(tmp_path):
    from benchmarks.evidence import PRESETS, run

    run(copy.deepcopy(PRESETS["quick"]), tmp_path, progress=False)
    summary = write_report([tmp_path])
    text = (tmp_path / "summary.md").read_text()
    assert "| claim | mlp |" in text and "## 4. Accuracy at the protective sigma" in text
    # 10 steps of the plain attack leak nothing even without PRECODE's sampling; only analytic leaks (no targeted)
    assert summary["claims"]["C1"]["per_arch"]["mlp"]["verdict"] == "inconclusive"
    assert summary["claims"]["C3"]["per_arch"]["mlp"]["verdict"] == "inconclusive"
    assert not summary["missing"] and len(summary["figures"]) == 2


def test_the_cost_table_sums_each_architectures_cells_by_kind(tmp_path):
    timed = [{**record, "seconds": seconds} for record, seconds in zip(_holds("init"), (360.0, 720.0, 1800.0, 3600.0))]
    timed += [{**record, "seconds": 1080.0} for record in _accuracy("a", "none", [0.95, 0.96])]
    timed += [{**_audit("c", "none", "init", _attack("inverting", T)), "seconds": 36.0}]
    summary = write_report([_write(tmp_path, timed)], resamples=10)
    assert summary["cost"] == [
        {"arch": "a", "cells": 6, "audits": 0.3, "calibrations": 1.5, "accuracies": 0.6, "total": 2.4},
        {"arch": "c", "cells": 1, "audits": 0.01, "calibrations": 0.0, "accuracies": 0.0, "total": 0.01}]
    assert "| a | 6 | 0.30 | 1.50 | 0.60 | 2.40 |" in (tmp_path / "summary.md").read_text()
