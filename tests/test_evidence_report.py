"""The evidence report: bootstrap ratios, claim verdicts (C4 per unit and by Welch's test), tables, figures,
partial files, the comparison with other records and the cost tables."""

import copy
import json

import numpy as np
import pytest
from PIL import Image

from benchmarks.evidence_claims import (
    NOT_RECORDED,
    Finding,
    bootstrap_ratio,
    every,
    in_units,
    less_noise,
    same_accuracy,
    some,
    thresholds,
)
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
A_NOISE_ALL, B_NOISE_ALL = [0.91, 0.93, 0.92], [0.90, 0.91, 0.92]
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


def _calibration(arch, family, state, unions, leaking=("inverting/before_bottleneck",), noise=None, **extra):
    """A calibration record from its unions (sigma -> per-victim reconstructions; each leaking attack identified
    the victims it reconstructed), outcome and search as calibrate makes them; ``noise`` replaces the default
    noise (v2: no whole-gradient ratio) and ``extra`` adds fields (e.g. ``budget_shares``)."""
    sigmas = sorted(unions)
    leaked = [s for s in sigmas if s > 0 and any(unions[s])]
    safe = [s for s in sigmas if s > 0 and not any(unions[s])]
    outcome = "inconclusive" if not any(unions[0]) else "calibrated" if safe else "not found"
    record = {"kind": "calibration", "arch": arch, "family": family, "state": state,
            "defense": {"layers": "all", "sigma": min(safe, default=1.0), "relative": True}, "outcome": outcome,
            "search": {"sigma": min(safe, default=None), "leaking": max(leaked, default=None),
                       "evaluations": [[s, any(unions[s])] for s in sigmas if s > 0]},
            "leaking_attacks": list(leaking) if outcome != "inconclusive" else [], "victims": VICTIMS,
            "upper_bound": 0.6023646356164 if outcome == "calibrated" else None,
            "noise": {"absolute": 0.01 * min(safe), "relative": 0.98 * min(safe), "noise_to_signal": min(safe)}
            if outcome == "calibrated" else {},
            "unions": {f"{s:.6g}": u for s, u in unions.items()}, "pool_size": POOL,
            "identified": {f"{s:.6g}": {attack: u for attack in leaking} for s, u in unions.items()}}  # fmt: skip
    return {**record, **({"noise": noise} if noise is not None else {}), **extra}


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
    records += _accuracy("a", "none", [0.95, 0.96, 0.97]) + _accuracy("a", "precode", [0.93, 0.94, 0.95], None, True)
    # a: a gap of 0.01 that Welch's test does not find (p 0.29); b: a gap of 0.1 that it does (p 0.00026)
    records += _accuracy("a", "ppp", [0.90, 0.92, 0.91], 4.0, True) + _accuracy("a", "noise_all", A_NOISE_ALL, 16.0)
    records += _accuracy("b", "ppp", [0.80, 0.81, 0.82], 16.0, True) + _accuracy("b", "noise_all", B_NOISE_ALL, 4.0)
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
    # where the held-out victims leaked, every resample leaks (as the search judged it); elsewhere they change nothing
    held_out = {"2": {"leaking": ["inverting"], "reconstructed": [False]}, "4": {"leaking": [], "reconstructed": [False]}}
    assert thresholds(unions, samples, held_out=held_out).tolist() == [4.0, 4.0, 4.0]
    assert thresholds(unions, samples, held_out={"1": {"leaking": [], "reconstructed": [True]}}).tolist() == [2.0] * 3


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
    parts = {v: Finding(v, v) for v in ("holds", "does not hold", "inconclusive", NOT_RECORDED, MISSING)}

    def of(*verdicts):
        return [(f"s{i}", parts[v]) for i, v in enumerate(verdicts)]

    # where the states disagree, the verdict says which state found what (grouped, in order of first appearance)
    assert str(every(of("holds", "inconclusive", "does not hold", MISSING))) == (
        "does not hold (s0: holds; s1: inconclusive; s2: does not hold)")
    assert str(every(of("holds", "does not hold", "does not hold"))) == (
        "does not hold (s0: holds; s1, s2: does not hold)")
    assert str(every(of("holds", "inconclusive", MISSING))) == (
        f"inconclusive so far (s0: holds; s1: inconclusive; {MISSING}: s2)")
    assert str(every(of("holds", "holds"))) == "holds" and every(of(MISSING)).verdict == MISSING
    assert str(some(of("does not hold", "holds", MISSING))) == "holds (s0: does not hold; s1: holds)"
    assert str(some(of("does not hold", MISSING))) == f"does not hold so far ({MISSING}: s1)"
    # a unit not recorded: so if no state recorded it, inconclusive beside a recorded state, outweighed by a failure
    assert str(every(of(NOT_RECORDED, NOT_RECORDED))) == NOT_RECORDED
    assert str(every(of(NOT_RECORDED, "holds"))) == "inconclusive (s0: not recorded; s1: holds)"
    assert every(of(NOT_RECORDED, "does not hold")).verdict == "does not hold"
    assert every(of("holds", "does not hold")).to_dict()["by_part"] == "s0: holds; s1: does not hold"


def test_claim_verdicts_follow_their_rules(report):
    _, summary = report
    verdicts = {c: {a: f["verdict"] for a, f in v["per_arch"].items()} for c, v in summary["claims"].items()}
    assert verdicts == {
        "C1": {"a": "holds", "b": "does not hold", "c": "inconclusive"},
        "C2": {"a": "holds", "b": "does not hold", "c": "inconclusive"},  # c: the targeted attack's control failed
        "C3": {"a": "holds", "b": "does not hold", "c": "inconclusive"},  # c: the calibration is inconclusive
        "C4-relative": {"a": "holds", "b": "does not hold", "c": "inconclusive"},
        "C4-absolute": {"a": "holds", "b": NOT_RECORDED, "c": "inconclusive"},  # b: ppp has no protective sigma
        "C4-whole": {"a": NOT_RECORDED, "b": NOT_RECORDED, "c": "inconclusive"},  # v2 noise: no whole-gradient ratio
        "C4-accuracy": {"a": "holds", "b": "does not hold", "c": "inconclusive"},
    }
    c4 = summary["claims"]["C4-relative"]["per_arch"]
    assert c4["a"]["evidence"] == ("init: sigma_ppp/sigma_all = 4/16 = 0.25, 95% bootstrap 0.25-0.25; "
                                   "epoch1: sigma_ppp/sigma_all = 4/16 = 0.25, 95% bootstrap 0.25-0.25")  # fmt: skip
    assert summary["claims"]["C4-whole"]["per_arch"]["b"]["evidence"].startswith(
        "init: whole-gradient noise-to-signal not recorded (ppp: no protective sigma; noise_all: no "
        "`noise_to_whole_signal` recorded); epoch1: ")
    accuracy = summary["claims"]["C4-accuracy"]["per_arch"]
    assert accuracy["a"]["evidence"] == ("accuracy: ppp 0.910 (seeds 0, 1, 2), noise_all 0.920 (seeds 0, 1, 2), "
                                         "gap +0.010, Welch p 0.2879: no significant deficit")  # fmt: skip
    assert accuracy["b"]["evidence"] == ("accuracy: ppp 0.810 (seeds 0, 1, 2), noise_all 0.910 (seeds 0, 1, 2), "
                                         "gap +0.100, Welch p 0.0002552: PPP is clearly less accurate")  # fmt: skip
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
    less = "PPP protects with less noise than noise on all layers"
    assert f"| C4 (relative sigma): {less} | **holds** | **does not hold** | **inconclusive** |" in text
    assert f"| C4 (noise RMS per entry): {less} | **holds** | **not recorded** | **inconclusive** |" in text
    whole = "| C4 (whole-gradient noise-to-signal):"
    assert f"{whole} {less} | **not recorded** | **not recorded** | **inconclusive** |" in text
    assert ("| C4 (accuracy at equal protection): PPP is not less accurate than noise on all layers | **holds** | "
            "**does not hold** | **inconclusive** |") in text  # fmt: skip
    assert "| C4:" not in text and "## Changes from the compared evidence" not in text and "compare" not in summary
    assert f"| precode | inverting | {NOTHING} | {EVERYONE} | protected |" in text
    # the union of two attacks is two guesses per victim: chance 1 - 0.99^2
    union = ("identified 4/4 above chance (95% CI 0.40-1.00; chance 0.020, p 1.6e-07), "
             "reconstructed 4/4 (95% CI 0.40-1.00)")  # fmt: skip
    assert f"| precode | any (union) | {union} | {union} | leaked |" in text
    # a calibration that recorded no stop reasons (before v3): nothing at its protective sigma reads "protected"
    assert (f"| ppp, sigma 4 (protective) | union of inverting/before_bottleneck | {NOTHING} | {EVERYONE} "
            "| inconclusive (how the attack stopped was not recorded) |") in text  # fmt: skip
    assert "| a | ppp | init | calibrated | 4 | 2 | 0.04 | 3.92 | 4 | - | 0.6024 | inverting/before_bottleneck |" in (
        text)  # v2 noise: no whole-gradient noise-to-signal
    assert "| b | ppp | init | not found: the attacks still leaked at the largest sigma tried (16) |" in text
    assert "| c | ppp | init | inconclusive: no attack leaked without noise, so no protection can be claimed |" in text
    assert "| a | init | ppp | 4 | 16 | 0.25 | 0 | 0.25 | 0.25-0.25 | 0.25 | 0.25-0.25 | not recorded | - |" in text
    assert "| b | init | ppp | inf | 4 | inf | 0 | inf | 4-inf | not recorded | - | not recorded | - |" in text
    assert ("| a | ppp | 4 | 3 | 0.910 (95% t 0.885-0.935) | 0.920 (95% t 0.895-0.945) | 3, 3, 3 | "
            "measured |") in text  # fmt: skip
    tested = [(r["family"], r["seeds"], r["test_acc_values"]) for r in summary["accuracy"] if "test_acc" in r]
    assert tested[-2:] == [("noise_all", [0, 1, 2], B_NOISE_ALL), ("ppp", [0, 1, 2], [0.80, 0.81, 0.82])]
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
    assert summary["claims"]["C4-relative"]["per_arch"]["a"]["missing"] == ["epoch1"]
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
    # the quick grid repeats ppp at init on a second draw: a row beside the first answer, not an accuracy seed
    [repeat] = summary["repeats"]
    first = next(r for r in summary["sigmas"] if (r["family"], r["state"]) == ("ppp", "init"))
    assert (repeat["family"], repeat["state"], repeat["seeds"], repeat["sigmas"][0]) == ("ppp", "init", [0, 1],
                                                                                         first["sigma"])  # fmt: skip
    assert "## 2b. The threshold on a second draw" in text
    assert [r["seeds"] for r in summary["accuracy"] if r["family"] == "ppp"] == [[0]]


def test_a_repeat_sets_its_threshold_beside_the_first_with_the_spread_and_the_grids_resolution(tmp_path):
    first = _calibration("a", "ppp", "init", _threshold_unions(4))
    repeat = {**_calibration("a", "ppp", "init", _threshold_unions(16)), "kind": "repeat", "seed": 1}
    (tmp_path / "evidence.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (first, repeat)))
    summary = write_report([tmp_path])
    # thresholds 4 (leaks at 2) and 16 (leaks at 8): a spread of 4 against a grid step of 2
    assert summary["repeats"] == [{"arch": "a", "family": "ppp", "state": "init", "seeds": [0, 1],
                                   "sigmas": [4, 16], "spread": 4.0, "resolution": 2.0}]  # fmt: skip
    assert "| a | ppp | init | 0, 1 | 4, 16 | 4 | 2 |" in (tmp_path / "summary.md").read_text()
    assert summary["sigmas"][0]["sigma"] == 4  # the repeat does not replace the first calibration


def test_the_cost_tables_sum_wall_and_cpu_hours_by_kind_by_family_and_by_attack(tmp_path):
    wall, cpu = (360.0, 720.0, 1800.0, 3600.0), (None, None, 3600.0, 7200.0)  # the audits recorded no CPU time
    timed = [{**record, "seconds": w, **({"cpu_seconds": c} if c else {})}
             for record, w, c in zip(_holds("init"), wall, cpu)]  # fmt: skip
    accuracies = _accuracy("a", "none", [0.95, 0.96])
    timed += [{**accuracies[0], "seconds": 1080.0, "cpu_seconds": 540.0}, {**accuracies[1], "seconds": 1080.0}]
    timed += [{**_audit("c", "none", "init", _attack("inverting", T)), "seconds": 36.0}]
    repeat = {**_calibration("a", "ppp", "init", _threshold_unions(4)), "kind": "repeat", "seed": 1}
    timed += [{**repeat, "seconds": 720.0, "cpu_seconds": 360.0}]
    folder = _write(tmp_path, timed)
    # the attacks' own records (of a state the report does not re-read): an audit, a search's sigma and its
    # held-out victims, a repeat; a cut-short line
    attack_records = {"audits/a/none": [("inverting", 4, 900.0), ("adaptive", 4, 1800.0)],
                      "calibrations/a/ppp/epoch1/sigma=4": [("analytic", 4, 360.0)],
                      "calibrations/a/ppp/epoch1/sigma=4/held_out": [("inverting", 16, 540.0)],
                      "repeats/a/ppp/epoch1/seed=1/sigma=4": [("adaptive", 4, 0.0)],
                      "audits/c/none": [("dlg", 2, 36.0)]}  # fmt: skip
    for where, records in attack_records.items():
        (folder / where).mkdir(parents=True)
        lines = [json.dumps({"label": label, "victims": v, "seconds": seconds}) for label, v, seconds in records]
        (folder / where / "results.jsonl").write_text("\n".join(lines) + '\n{"label": "cut')
    summary = write_report([folder], resamples=10)

    def hours(cells, wall, cpu=None, cpu_cells=0):
        return {"cells": cells, "wall": pytest.approx(wall), "cpu": cpu and pytest.approx(cpu), "cpu_cells": cpu_cells}

    nothing = hours(0, 0.0)
    assert summary["cost"] == [
        {"arch": "a", "audits": hours(2, 0.3), "calibrations": hours(2, 1.5, 3.0, 2), "repeats": hours(1, 0.2, 0.1, 1),
         "accuracies": hours(2, 0.6, 0.15, 1), "total": hours(7, 2.6, 3.25, 4)},
        {"arch": "c", "audits": hours(1, 0.01), "calibrations": nothing, "repeats": nothing, "accuracies": nothing,
         "total": hours(1, 0.01)}]  # fmt: skip
    assert summary["family_cost"] == [
        {"arch": "a", "family": "none", **hours(3, 0.7, 0.15, 1)}, {"arch": "a", "family": "precode", **hours(1, 0.2)},
        {"arch": "a", "family": "noise_all", **hours(1, 0.5, 1.0, 1)},
        {"arch": "a", "family": "ppp", **hours(2, 1.2, 2.1, 2)}, {"arch": "c", "family": "none", **hours(1, 0.01)}]
    text = (tmp_path / "summary.md").read_text()
    assert "| a | 7 | 0.30 | 1.50 | 0.20 | 0.60 | 2.60 | - | 3.00 | 0.10 | 0.15 (1/2 cells) | 3.25 (4/7 cells) |" in text
    assert "| c | 1 | 0.01 | 0.00 | 0.00 | 0.00 | 0.01 | - | - | - | - | - |" in text
    assert "| a | none | 3 | 0.70 | 0.15 (1/3 cells) |" in text and "| a | ppp | 2 | 1.20 | 2.10 |" in text
    # grouped by architecture: c's attack comes after every one of a's, though a's analytic was met after it
    assert summary["attack_cost"] == [
        {"arch": "a", "attack": "inverting", "audits": 2, "victims": 20, "hours": pytest.approx(0.4),
         "seconds_per_victim": pytest.approx(72.0), "share": pytest.approx(0.4)},
        {"arch": "a", "attack": "adaptive", "audits": 2, "victims": 8, "hours": pytest.approx(0.5),
         "seconds_per_victim": pytest.approx(225.0), "share": pytest.approx(0.5)},
        {"arch": "a", "attack": "analytic", "audits": 1, "victims": 4, "hours": pytest.approx(0.1),
         "seconds_per_victim": pytest.approx(90.0), "share": pytest.approx(0.1)},
        {"arch": "c", "attack": "dlg", "audits": 1, "victims": 2, "hours": pytest.approx(0.01),
         "seconds_per_victim": pytest.approx(18.0), "share": 1.0}]  # fmt: skip
    assert "| a | inverting | 2 | 20 | 0.40 | 40% | 72.0 |" in text
    assert "| c | dlg | 1 | 2 | 0.01 | 100% | 18.0 |" in text


# the noise of a v3 calibration in every unit: relative sigma 4 (ppp) and 16 (noise_all); per entry ppp 0.5 and
# noise_all 4 (factor (0.5/4) / (4/16) = 0.5); whole-gradient ppp 8 and noise_all 4 (factor (8/4) / (4/16) = 8)
PPP_NOISE = {"absolute": 0.5, "relative": 3.9, "noise_to_signal": 4.0, "noise_to_whole_signal": 8.0}
ALL_NOISE = {"absolute": 4.0, "relative": 15.7, "noise_to_signal": 16.0, "noise_to_whole_signal": 4.0}


def _without_whole(noise):
    return {unit: value for unit, value in noise.items() if unit != "noise_to_whole_signal"}


def test_c4_is_judged_per_unit_and_a_unit_not_recorded_says_so(tmp_path):
    """PPP needs a quarter of noise_all's relative sigma and half its noise per entry, but twice its
    whole-gradient noise-to-signal: C4 is contradicted in that unit alone (at init; epoch1's v2 noise lacks it)."""
    records = []
    for state, ppp_noise, all_noise in (("init", PPP_NOISE, ALL_NOISE),
                                        ("epoch1", _without_whole(PPP_NOISE), _without_whole(ALL_NOISE))):
        records += [_calibration("a", "ppp", state, _threshold_unions(4), noise=ppp_noise),
                    _calibration("a", "noise_all", state, _threshold_unions(16), ("inverting",), all_noise)]
    summary = write_report([_write(tmp_path, records)], resamples=50)
    init, epoch1 = (row["units"] for row in summary["ratios"])
    assert init == {"relative": {"factor": 1.0, "ratio": 0.25, "median": 0.25, "low": 0.25, "high": 0.25},
                    "absolute": {"factor": 0.5, "ratio": 0.125, "median": 0.125, "low": 0.125, "high": 0.125},
                    "whole": {"factor": 8.0, "ratio": 2.0, "median": 2.0, "low": 2.0, "high": 2.0}}  # fmt: skip
    assert epoch1["whole"] == {"missing": "ppp: no `noise_to_whole_signal` recorded; noise_all: no "
                                          "`noise_to_whole_signal` recorded"}  # fmt: skip
    verdicts = {claim: found["per_arch"]["a"]["text"] for claim, found in summary["claims"].items()}
    assert [verdicts[f"C4-{unit}"] for unit in ("relative", "absolute", "whole", "accuracy")] == [
        "holds", "holds", "does not hold (init: does not hold; epoch1: not recorded)", MISSING]
    assert summary["claims"]["C4-whole"]["per_arch"]["a"]["evidence"] == (
        "init: whole-gradient noise-to-signal ppp/noise_all = 2 (sigma ratio 0.25 x factor 8), 95% bootstrap 2-2; "
        "epoch1: whole-gradient noise-to-signal not recorded (ppp: no `noise_to_whole_signal` recorded; noise_all: "
        "no `noise_to_whole_signal` recorded)")
    text = (tmp_path / "summary.md").read_text()
    assert ("| C4 (whole-gradient noise-to-signal): PPP protects with less noise than noise on all layers | "
            "**does not hold (init: does not hold; epoch1: not recorded)** |") in text  # fmt: skip
    assert "| a | init | ppp | 4 | 16 | 0.25 | 0 | 0.25 | 0.25-0.25 | 0.125 | 0.125-0.125 | 2 | 2-2 |" in text
    assert "| a | epoch1 | ppp | 4 | 16 | 0.25 | 0 | 0.25 | 0.25-0.25 | 0.125 | 0.125-0.125 | not recorded | - |" in (
        text)
    # section 2 shows the whole-gradient noise-to-signal (8), or "-" where it was not recorded
    searched = "0.6024 | inverting/before_bottleneck |"
    assert f"| a | ppp | init | calibrated | 4 | 2 | 0.5 | 3.9 | 4 | 8 | {searched}" in text
    assert f"| a | ppp | epoch1 | calibrated | 4 | 2 | 0.5 | 3.9 | 4 | - | {searched}" in text


def test_a_unit_scales_the_whole_interval_and_names_the_calibration_without_it():
    ratio = {"ratio": 0.5, "median": 0.5, "low": 0.125, "high": 1.0}
    ppp = {"family": "ppp", "search": {"sigma": 2.0}, "noise": {"absolute": 1.0}}
    noise_all = {"family": "noise_all", "search": {"sigma": 4.0},
                 "noise": {"absolute": 0.5, "noise_to_whole_signal": 2.0}}  # fmt: skip
    units = in_units(ratio, ppp, noise_all)  # per entry: (1 / 2) / (0.5 / 4) = 4
    assert units == {"relative": {"factor": 1.0, **ratio},
                     "absolute": {"factor": 4.0, "ratio": 2.0, "median": 2.0, "low": 0.5, "high": 4.0},
                     "whole": {"missing": "ppp: no `noise_to_whole_signal` recorded"}}  # fmt: skip
    not_found = {"family": "ppp", "search": {"sigma": None}, "noise": {}}
    assert in_units(ratio, not_found, noise_all)["absolute"] == {"missing": "ppp: no protective sigma"}
    row = {"state": "init", "status": "measured", "sigma": 2.0, "sigma_all": 4.0, **ratio, "units": units}
    assert less_noise(row, "absolute") == Finding(
        "inconclusive", "init: noise RMS per entry ppp/noise_all = 2 (sigma ratio 0.5 x factor 4), 95% bootstrap 0.5-4")
    assert less_noise(row) == Finding("inconclusive", "init: sigma_ppp/sigma_all = 2/4 = 0.5, 95% bootstrap 0.125-1")
    assert less_noise(row, "whole") == Finding(
        NOT_RECORDED, "init: whole-gradient noise-to-signal not recorded (ppp: no `noise_to_whole_signal` recorded)")
    # noise on all layers leaks at every sigma tried: PPP's finite sigma is below its threshold in every resample
    unbounded = {**row, "sigma_all": float("inf"), "ratio": 0.0, "units": {"relative": {**ratio, "low": 0.0,
                                                                                       "high": 0.0}}}  # fmt: skip
    assert less_noise(unbounded) == Finding(
        "holds", "init: sigma_ppp/sigma_all = 2/inf (none found) = 0, 95% bootstrap 0-0")


def _accuracy_row(family, values):
    return {"family": family, "status": "measured", "test_acc": spread(values), "test_acc_values": values,
            "seeds": list(range(len(values)))}  # fmt: skip


def test_accuracy_is_judged_by_welch_test_on_three_seeds_or_more():
    ppp = [0.90, 0.91, 0.92]
    two_seeds = same_accuracy(_accuracy_row("ppp", [0.80, 0.81]), _accuracy_row("noise_all", [0.90, 0.91]))
    assert two_seeds == Finding("inconclusive", "accuracy: ppp 0.805 (seeds 0, 1), noise_all 0.905 (seeds 0, 1), "
                                                "gap +0.100; 3+ seeds needed")  # fmt: skip
    small_gap = same_accuracy(_accuracy_row("ppp", ppp), _accuracy_row("noise_all", [0.91, 0.93, 0.95]))
    assert small_gap == Finding("holds", "accuracy: ppp 0.910 (seeds 0, 1, 2), noise_all 0.930 (seeds 0, 1, 2), "
                                         "gap +0.020, Welch p 0.2209: no significant deficit")  # fmt: skip
    # a significant difference in PPP's favour is no deficit
    better = same_accuracy(_accuracy_row("ppp", ppp), _accuracy_row("noise_all", [0.80, 0.81, 0.82]))
    assert better == Finding("holds", "accuracy: ppp 0.910 (seeds 0, 1, 2), noise_all 0.810 (seeds 0, 1, 2), "
                                      "gap -0.100, Welch p 0.0002552: no significant deficit")  # fmt: skip
    worse = same_accuracy(_accuracy_row("ppp", [0.80, 0.81, 0.82]), _accuracy_row("noise_all", ppp))
    assert worse.verdict == "does not hold"
    assert worse.evidence.endswith("gap +0.100, Welch p 0.0002552: PPP is clearly less accurate")


def test_c1_and_c3_say_which_state_holds_where_states_disagree(tmp_path):
    """Protected at initialisation, not after a training epoch: the combined verdict stays "does not hold"."""
    records = _holds("init") + [
        _audit("a", "precode", "epoch1", _attack("inverting", T, T)),
        _calibration("a", "ppp", "epoch1", {0: T, 4: T, 16: T}),
        _calibration("a", "noise_all", "epoch1", _threshold_unions(16), leaking=("inverting",))]  # fmt: skip
    summary = write_report([_write(tmp_path, records)], resamples=10)
    texts = {claim: summary["claims"][claim]["per_arch"]["a"]["text"] for claim in ("C1", "C2", "C3")}
    assert texts == {"C1": "does not hold (init: holds; epoch1: does not hold)",
                     "C2": "holds (init: holds; epoch1: inconclusive)",  # epoch1 ran no targeted attack
                     "C3": "does not hold (init: holds; epoch1: does not hold)"}  # fmt: skip
    text = (tmp_path / "summary.md").read_text()
    assert ("| C1: PRECODE stops the plain attack (inverting) | **does not hold (init: holds; epoch1: does not "
            "hold)** |") in text  # fmt: skip
    assert "| a | does not hold (init: holds; epoch1: does not hold) | init: protected, " in text


def test_the_protective_row_is_controlled_by_the_attacks_that_leaked_without_noise(tmp_path):
    """Without noise the targeted attack identifies 1 of 4 victims (p 0.039 against 1/100) and the plain attack
    none: above chance for the targeted attack alone, not for the union of two guesses (chance 0.020). The row at
    the protective sigma, which unites only the attack that leaked, is controlled by that attack without noise."""
    one = [True, False, False, False]
    record = _calibration("a", "ppp", "init", _threshold_unions(4), leaking=("inverting/before_decoder",),
                          budget_shares={"0": 0.0, "4": 0.0})  # fmt: skip
    record["unions"]["0"] = F
    record["identified"]["0"] = {"inverting": F, "inverting/before_decoder": one}
    write_report([_write(tmp_path, [record])], resamples=10)
    text = (tmp_path / "summary.md").read_text()
    alone = ("identified 1/4 above chance (95% CI 0.01-0.81; chance 1/100, p 0.039), "
             "reconstructed 0/4 (95% CI 0.00-0.60)")  # fmt: skip
    united = "reconstructed 0/4 (95% CI 0.00-0.60), identified 1/4 not above chance (95% CI 0.01-0.81; chance 0.020"
    assert f"| ppp, no noise | any (union) | {united}, p 0.077) | - | inconclusive" in text
    row = f"| ppp, sigma 4 (protective) | union of inverting/before_decoder | {NOTHING} | {alone} | protected |"
    assert row in text


def test_c3_is_inconclusive_where_the_attacks_stopped_at_their_budget(tmp_path):
    """Arch a: 75% of the union's problems stopped at the budget at the protective sigma; b: 25%; c: not recorded
    (judged as before, without stop reasons)."""
    sigmas = (0, 1, 2, 4, 8, 16, 32)
    records = [_calibration(arch, "ppp", "init", _threshold_unions(4),
                            **({"budget_shares": {f"{s:g}": share for s in sigmas}} if share is not None else {}))
               for arch, share in (("a", 0.75), ("b", 0.25), ("c", None))]  # fmt: skip
    summary = write_report([_write(tmp_path, records)], resamples=10)
    c3 = {arch: (f["verdict"], f["evidence"]) for arch, f in summary["claims"]["C3"]["per_arch"].items()}
    head = (f"init: sigma 4 (leaks at 2); union: {NOTHING}; 95% upper bound of its reconstruction rate 0.6024; "
            "targeted attacks that leaked without noise: inverting/before_bottleneck")  # fmt: skip
    assert c3 == {
        "a": ("inconclusive", f"{head}; 75% of the attacks' problems stopped at their budget; the attacks stopped at "
                              "their budget"),
        "b": ("holds", f"{head}; 25% of the attacks' problems stopped at their budget"),
        "c": ("holds", head)}  # fmt: skip
    rule = summary["claims"]["C3"]["rule"]
    assert "(`budget_shares`), a share above 50% makes a protective finding inconclusive" in rule
    assert "Calibrations record no stop reasons" not in rule
    # the same share decides the section-1 outcome at the protective sigma, as in audits
    text = (tmp_path / "summary.md").read_text()
    row = f"| ppp, sigma 4 (protective) | union of inverting/before_bottleneck | {NOTHING} | {EVERYONE} |"
    assert f"{row} inconclusive (the attack stopped at its budget (75% of its problems)) |" in text
    assert f"{row} protected |" in text


def _sigma_audit(folder, arch, sigma, attacks, held_out=False):
    """One sigma's per-attack records of a ppp calibration at init: attack -> (reconstructed, identified)."""
    where = folder / "calibrations" / arch / "ppp" / "init" / f"sigma={sigma:.6g}" / ("held_out" if held_out else "")
    where.mkdir(parents=True, exist_ok=True)
    lines = [{"label": label, "successes": found, "identified": named, "pool_size": POOL, "convergence": CONVERGED,
              "mean": {}} for label, (found, named) in attacks.items()]  # fmt: skip
    (where / "results.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_where_no_sigma_stops_the_suite_c3_reads_the_targeted_attacks_own_records(tmp_path):
    """Arch a: the targeted attack stops from 8 while plain inverting still identifies 2 of 4 at 16 (the suite: not
    found); b: the targeted attack itself leaks at the top (on its held-out victims); c: no sigma folders."""
    unions = {0: T, 4: T, 8: F, 16: F}
    records = [_calibration(arch, "ppp", "init", unions, leaking=("inverting", "inverting/before_bottleneck"))
               for arch in ("a", "b", "c")]  # fmt: skip
    for record in records:
        record.update(outcome="not found", search={**record["search"], "sigma": None, "leaking": 16})
    folder = _write(tmp_path, records)
    two = [True, True, False, False]
    for arch in ("a", "b"):
        _sigma_audit(folder, arch, 4, {"inverting": (F, two), "inverting/before_bottleneck": (T, T)})
        _sigma_audit(folder, arch, 8, {"inverting": (F, F), "inverting/before_bottleneck": (F, F)})
        _sigma_audit(folder, arch, 16, {"inverting": (F, two), "inverting/before_bottleneck": (F, F)})
    _sigma_audit(folder, "b", 16, {"inverting": (F, F), "inverting/before_bottleneck": (F, two)}, held_out=True)
    c3 = {arch: (f["verdict"], f["evidence"]) for arch, f in
          write_report([folder], resamples=10)["claims"]["C3"]["per_arch"].items()}  # fmt: skip
    head = "init: not found: the attacks still leaked at the largest sigma tried (16)"
    assert c3 == {
        "a": ("holds", f"{head}; the targeted attacks alone (inverting/before_bottleneck) leak nothing from sigma 8 "
                       "(leak at 4): the whole suite is not stopped because other attacks leak (at sigma 16 inverting "
                       "leaked)"),
        "b": ("does not hold", f"{head}; the targeted attacks leak up to the largest sigma tried (at sigma 16 "
                               "inverting, inverting/before_bottleneck leaked)"),
        "c": ("does not hold", head)}  # fmt: skip


def test_compare_sets_the_compared_claims_and_sigmas_beside_these(tmp_path):
    """The compared records: a ppp calibration that found no protective sigma, and an arch z of their own."""
    old = _write(tmp_path / "v2", [_calibration("a", "ppp", "init", {0: T, 4: T, 16: T}),
                                   _calibration("a", "noise_all", "init", _threshold_unions(16), ("inverting",)),
                                   _calibration("z", "ppp", "init", _threshold_unions(4))])  # fmt: skip
    new = _write(tmp_path / "v3", _holds("init"))
    out = tmp_path / "report"
    main([str(new), "--out", str(out), "--resamples", "50", "--compare", str(old)])
    compare = json.loads((out / "summary.json").read_text())["compare"]
    assert compare["sources"] == [str(old / "evidence.jsonl")]
    rows = {(r["claim"], r["arch"]): (r["compared"], r["this"], r["changed"]) for r in compare["claims"]}
    assert len(rows) == 2 * 7 and rows[("C3", "a")] == ("does not hold", "holds", True)
    assert rows[("C1", "a")] == (MISSING, "holds", True) and rows[("C3", "z")] == ("holds", MISSING, True)
    assert rows[("C4-relative", "a")] == ("does not hold", "holds", True)
    assert rows[("C4-accuracy", "a")] == (MISSING, MISSING, False)
    assert compare["sigmas"] == [
        {"family": "noise_all", "arch": "a", "state": "init", "compared": "16", "this": "16"},
        {"family": "ppp", "arch": "a", "state": "init", "compared": "not found", "this": "4"},
        {"family": "ppp", "arch": "z", "state": "init", "compared": "4", "this": MISSING}]
    text = (out / "summary.md").read_text()
    assert text.index("## Claims") < text.index("## Changes from the compared evidence") < text.index("## 1.")
    assert "| C3 | a | does not hold | holds | yes |" in text
    assert f"| C4 (accuracy at equal protection) | a | {MISSING} | {MISSING} | no |" in text
    assert "| ppp | a | init | not found | 4 |" in text and f"| ppp | z | init | 4 | {MISSING} |" in text
