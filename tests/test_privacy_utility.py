"""The privacy-utility benchmark's quick preset: shape and sanity of its output, and resuming."""

import copy
import json

import pytest

from benchmarks.privacy_utility import QUICK, run
from benchmarks.report import write_report


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    config = copy.deepcopy(QUICK)
    results = run(config, out)
    return config, out, [json.loads(line) for line in results.read_text().splitlines()]


def test_every_applicable_attack_of_every_cell_is_recorded(quick):
    _, _, records = quick
    cells = {(r["defense"], r["attack"]) for r in records}
    assert cells == {
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
    assert len(records) == len(cells)
    for record in records:
        assert len(record["victims"]) == 2 and record["seed"] == 0 and record["state"] == "init"
        assert 0 <= record["test_acc"] <= 1
        # The trivial reconstruction (the mean image) never counts as a success.
        assert all(0 <= v["ncc"] <= 1 + 1e-5 and v["floor_ncc"] < 0.85 for v in record["victims"])


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


def test_rerun_skips_finished_cells_and_report_is_written(quick):
    config, out, records = quick
    run(config, out)
    assert len((out / "results.jsonl").read_text().splitlines()) == len(records)
    summary = write_report(out)
    assert {p["family"] for p in summary["protection"]} == {"noise_all", "ppp"}
    assert len(summary["rows"]) == len(records)
    assert "| mlp | init | ppp@1 | analytic |" in (out / "results.md").read_text()
    assert all((out / name).stat().st_size > 10_000 for name in ("ssim_accuracy_vs_sigma.png", "reconstructions_mlp_init.png"))
