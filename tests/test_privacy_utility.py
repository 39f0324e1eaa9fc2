"""The privacy-utility benchmark's quick preset: its measured output, resuming, and its configuration."""

import copy
import json

import pytest
from matplotlib.image import imread

from benchmarks.defenses import Defense, expand_defenses
from benchmarks.privacy_utility import QUICK, parse_attacks, run
from benchmarks.report import attach_verdicts, summarise, union_by_cell, write_report


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    config = copy.deepcopy(QUICK)
    results = run(config, out)
    return config, out, [json.loads(line) for line in results.read_text().splitlines()]


def test_every_applicable_attack_of_every_cell_is_recorded(quick):
    _, _, records = quick
    by = {(r["defense"], r["attack"]): r for r in records}
    assert set(by) == {
        ("none", "inverting"),
        ("none", "analytic"),
        ("noise_all@1", "inverting"),
        ("noise_all@1", "analytic"),
        ("precode", "inverting"),
        ("precode", "analytic"),
        ("ppp@1", "inverting"),
        ("ppp@1", "analytic"),
        ("ppp@1", "targeted_before_decoder"),
    }
    assert len(records) == len(by)
    for record in records:
        assert len(record["victims"]) == 2 and record["seed"] == 0 and record["state"] == "init"
        # The trivial reconstruction (the mean image) never counts as a success.
        assert all(0 <= v["ncc"] <= 1 + 1e-5 and v["floor_ncc"] < 0.85 for v in record["victims"])
    # Untrained ("init", 0 epochs): near chance (measured 0.088 and 0.074), the same model whatever the noise.
    assert by[("none", "inverting")]["test_acc"] == by[("noise_all@1", "inverting")]["test_acc"] < 0.2
    assert by[("precode", "inverting")]["test_acc"] == by[("ppp@1", "inverting")]["test_acc"] < 0.2
    # The same victims in every cell: the floor (the mean training image) scores alike (measured 0.48, 0.43).
    floors = {tuple(v["floor_ncc"] for v in r["victims"]) for r in records}
    assert len(floors) == 1 and all(0.3 < ncc < 0.6 for ncc in floors.pop())


def test_analytic_recovery_is_exact_without_noise_and_noise_is_relative(quick):
    _, _, records = quick
    by = {(r["defense"], r["attack"]): r for r in records}
    for defense in ("none", "precode"):
        assert all(v["psnr"] > 60 and v["success"] for v in by[(defense, "analytic")]["victims"])
    assert by[("none", "inverting")]["perturbed_share"] == 0
    assert by[("noise_all@1", "inverting")]["perturbed_share"] == 1
    assert 0.5 < by[("ppp@1", "inverting")]["perturbed_share"] < 1  # the head and decoder stay clean
    for defense in ("noise_all@1", "ppp@1"):
        gradient = by[(defense, "inverting")]["gradient"]
        assert 0.5 < gradient["noise_std"] / gradient["clean_rms"] < 2  # sigma = 1 relative to the RMS
    assert by[("precode", "inverting")]["gradient"]["kl"] > 0 and by[("none", "inverting")]["gradient"]["kl"] == 0
    # the control: the same victims' unperturbed gradients, attacked in the same call (analytic is exact on them)
    assert all(v["success"] and v["psnr"] > 60 for v in by[("noise_all@1", "analytic")]["control_victims"])
    assert "control_victims" not in by[("none", "analytic")] and "control_victims" not in by[("precode", "analytic")]


def test_rerun_skips_finished_cells_and_report_is_written(quick):
    config, out, records = quick
    run(config, out)
    assert len((out / "results.jsonl").read_text().splitlines()) == len(records)
    summary = write_report(out)
    assert {p["family"] for p in summary["protection"]} == {"noise_all", "ppp"}
    assert len(summary["rows"]) == len(records)
    report = (out / "results.md").read_text()
    assert (
        "| mlp | init | ppp@1 | analytic |" in report
        and "## Any attack: victims leaked by at least one attack" in report
    )
    # 110 dpi: one column of 5 x 7 inches; 4 defenses x (truth + 3 attacks) panels of 1.6 inches.
    for name, shape in (("ssim_accuracy_vs_sigma.png", (770, 550)), ("reconstructions_mlp_init.png", (704, 704))):
        image = imread(out / name)
        assert image.shape[:2] == shape and image.std() > 0.05, name


def test_attacks_are_validated_before_anything_runs(tmp_path):
    attacks = parse_attacks(QUICK["attacks"])
    targeted = attacks["targeted_before_decoder"]
    assert targeted.families == ("ppp",) and targeted.spec.get("target") == "before_decoder"
    assert attacks["inverting"].spec.settings["progress"] is False  # the benchmark shows one bar per cell
    assert attacks["analytic"].spec.settings == {} and attacks["inverting"].families is None
    config = {**copy.deepcopy(QUICK), "attacks": {"analytic": {"attack": "analytic", "iterations": 5}}}
    with pytest.raises(ValueError, match=r"attack='analytic' does not take \['iterations'\]"):
        run(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_attacks_apply_to_the_cells_where_they_tell_something():
    extra = {"adaptive": {"attack": "adaptive", "iterations": 1}, "clean": {"attack": "clean_layer", "iterations": 1}}
    attacks = parse_attacks({**QUICK["attacks"], **extra})
    applicable = {
        (arch, defense.key): sorted(name for name, attack in attacks.items() if attack.applies(arch, defense))
        for arch in ("mlp", "cnn")
        for defense in (Defense("none"), Defense("precode"), Defense("ppp", 1.0))
    }
    assert applicable[("mlp", "none")] == ["analytic", "inverting"]
    assert applicable[("mlp", "precode")] == ["adaptive", "analytic", "inverting"]
    assert applicable[("mlp", "ppp@1")] == ["adaptive", "analytic", "clean", "inverting", "targeted_before_decoder"]
    assert applicable[("cnn", "ppp@1")] == ["adaptive", "clean", "inverting", "targeted_before_decoder"]
    told = attacks["clean"].for_defense(Defense("ppp", 1.0))
    assert told.get("defense") == Defense("ppp", 1.0).spec().to_dict() and told.get("iterations") == 1
    assert attacks["inverting"].for_defense(Defense("ppp", 1.0)) is attacks["inverting"].spec


def test_defenses_are_defense_specs():
    specs = {
        d.key: d.spec()
        for d in expand_defenses(["none", "precode", "noise_all", "ppp", "ppp_no_encoder", "prune"], [3.0], [0.1])
    }
    assert specs["none"] is None and specs["precode"] is None
    assert (specs["noise_all@3"].layers, specs["noise_all@3"].sigma, specs["noise_all@3"].relative) == (
        "all",
        3.0,
        True,
    )
    assert (specs["ppp@3"].layers, specs["ppp@3"].include_encoder) == ("before_bottleneck", True)
    assert specs["ppp_no_encoder@3"].to_dict() == {**specs["ppp@3"].to_dict(), "include_encoder": False}
    assert (specs["prune@0.1"].mechanism, specs["prune@0.1"].keep_ratio, specs["prune@0.1"].sigma) == ("none", 0.1, 0.0)
    with pytest.raises(ValueError, match=r"defenses \['dp'\] unknown"):
        expand_defenses(["dp"], [1.0], [0.1])


@pytest.mark.parametrize(("metric", "threshold"), [("ncc", 0.9), ("mse", 0.05)])
def test_report_judges_success_from_the_stored_scores(metric, threshold):
    """Two of three victims succeed by either metric (the rule of ``metrics.is_success``, mse lower is better)."""
    scores = {"ssim": (0.9, 0.8, 0.1), "psnr": (30.0, 25.0, 10.0), "ncc": (0.95, 0.92, 0.5), "mse": (0.001, 0.01, 0.1)}
    victims = [{**{k: v[i] for k, v in scores.items()}, **{f"floor_{k}": 0.0 for k in scores}} for i in range(3)]
    record = {"arch": "mlp", "defense": "none", "family": "none", "sigma": 0.0, "state": "init", "attack": "inverting"}
    record |= {"test_acc": 0.1, "victims": victims, "perturbed_share": 0.0, "seconds": 1.0}
    record["gradient"] = {"noise_std": 0.0, "ce": 2.3, "kl": 0.0}
    row = summarise(record, {"success_metric": metric, "success_threshold": threshold})
    assert row["success_rate"] == pytest.approx(2 / 3) and row["successes"] == [True, True, False]
    assert row["leaked"] == "2/3 (95% CI 0.09-0.99)"
    other = summarise(
        {**record, "attack": "analytic", "victims": victims[::-1]},
        {"success_metric": metric, "success_threshold": threshold},
    )
    assert union_by_cell([row, other])[("mlp", "init", "none")] == {
        "attacks": ["analytic", "inverting"],
        "leaked": "3/3 (95% CI 0.29-1.00)",
    }
    # verdicts against the positive control: in-cell for noise, the undefended architecture for PRECODE
    none = {**row, "family": "none", "successes": [True, True, True]}
    noisy = {**row, "family": "noise_all", "defense": "noise_all@3", "successes": [False] * 3, "control_successes": [True] * 3}
    weak = {**noisy, "control_successes": [False] * 3}
    precode = {**row, "family": "precode", "defense": "precode", "successes": [False] * 3}
    orphan = {**precode, "attack": "targeted"}
    attach_verdicts(rows := [none, noisy, weak, precode, orphan])
    assert [r["outcome"] for r in rows] == ["undefended", "protected", "inconclusive", "protected", "inconclusive"]
    assert weak["verdict"] == "inconclusive: the attack did not succeed without the defense either (0/3)"
    assert (row["ncc_max"], row["mse_median"], row["psnr_mean"]) == (0.95, 0.01, pytest.approx(65 / 3))
