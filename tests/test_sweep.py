"""The sigma sweep: many sigmas audited from one attack run, read the same as audits one sigma at a time."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from datamodules import OfflineMNISTDataModule
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.auditing import sweep
from ppp_lightning.auditing.audit import audit
from ppp_lightning.auditing.noise_search import calibrate
from ppp_lightning.auditing.sweep import audit_sigmas
from ppp_lightning.defenses.spec import DefenseSpec
from ppp_lightning.models import build_network

FAMILY = DefenseSpec(layers="all", sigma=1.0, relative=True)


@pytest.fixture(scope="module")
def data():
    module = OfflineMNISTDataModule()
    module.setup("fit")
    return module


def _mlp():
    torch.manual_seed(0)
    return build_network("mlp", 10, (3, 32, 32), None, width=32)


def test_one_run_over_three_sigmas_reads_as_three_audits(data, tmp_path):
    attacks = {"inverting": AttackSpec("inverting", {"iterations": 8, "progress": False, "tie_channels": True}),
               "analytic": AttackSpec("analytic", {"tie_channels": True})}  # fmt: skip
    sigmas = [0.01, 1.0, 100.0]
    swept = audit_sigmas(_mlp(), data.train_set, attacks, FAMILY, {s: tmp_path / f"sweep{s}" for s in sigmas},
                         data.mean, data.std, True, 4, progress=False)  # fmt: skip
    for sigma in sigmas:
        alone = audit(_mlp(), data.train_set, attacks, tmp_path / f"alone{sigma}", replace(FAMILY, sigma=sigma),
                      data.mean, data.std, True, 4, control=False, progress=False)  # fmt: skip
        for one, other in zip(swept[sigma], alone):
            assert one.context["defense"]["sigma"] == sigma and one.context["controlled"] is False
            assert one.attack.reconstructed == other.attack.reconstructed
            assert one.attack.identified == other.attack.identified
            assert one.attack.scores["mean"]["ncc"] == pytest.approx(other.attack.scores["mean"]["ncc"], abs=1e-4)
    assert swept[0.01][1].attack.reconstructed == [True] * 4  # analytic through little noise
    assert not any(swept[100.0][1].attack.reconstructed)
    assert (tmp_path / "sweep1.0" / "report.md").exists()


def test_until_leaked_a_sigma_stops_at_its_first_leaking_attack_and_a_rerun_keeps_it_stopped(data, tmp_path):
    analytic = AttackSpec("analytic", {"tie_channels": True})
    attacks = {"first": analytic, "second": analytic}
    folders = {0.01: tmp_path / "little", 100.0: tmp_path / "much"}
    for _ in range(2):  # the rerun resumes from the folders: nothing new runs where the first attack leaked
        swept = audit_sigmas(_mlp(), data.train_set, attacks, FAMILY, folders, data.mean, data.std, True, 4,
                             progress=False, until_leaked=True)  # fmt: skip
        assert [r.context["label"] for r in swept[0.01]] == ["first"]  # it reconstructs through little noise
        assert [r.context["label"] for r in swept[100.0]] == ["first", "second"]  # nothing leaks: both ran
        assert swept[0.01][0].attack.reconstructed == [True] * 4 and not any(swept[100.0][1].attack.reconstructed)


def test_a_calibration_by_sweep_finds_the_bisections_sigma_within_one_step_in_fewer_attack_runs(
    data, tmp_path, monkeypatch
):
    runs = []
    original = sweep.run_attack
    monkeypatch.setattr(sweep, "run_attack", lambda *args, **kwargs: runs.append(1) or original(*args, **kwargs))
    attacks = {"analytic": AttackSpec("analytic", {"tie_channels": True})}
    found = {}
    for method in ("sweep", "bisection"):
        runs.clear()
        found[method] = calibrate(_mlp(), data.train_set, attacks, FAMILY, tmp_path / method, data.mean, data.std,
                                  True, victims=4, held_out=4, progress=False, search=method)  # fmt: skip
        found[method].runs = len(runs)
    sweep_sigma, bisection_sigma = found["sweep"].search.sigma, found["bisection"].search.sigma
    assert found["sweep"].outcome == found["bisection"].outcome == "calibrated"
    assert max(sweep_sigma, bisection_sigma) / min(sweep_sigma, bisection_sigma) <= 1.5
    assert found["sweep"].method == "sweep" and found["bisection"].method == "bisection"
    assert found["sweep"].runs < found["bisection"].runs, (found["sweep"].runs, found["bisection"].runs)
    assert Path(tmp_path / "sweep" / f"sigma={sweep_sigma:.6g}" / "held_out" / "results.jsonl").exists()


def test_families_of_one_model_share_the_audit_without_noise(data, tmp_path):
    attacks = {"analytic": AttackSpec("analytic", {"tie_channels": True})}
    shared = tmp_path / "no_noise"
    for name, layers in (("all", "all"), ("first", ("features.*",))):
        family = DefenseSpec(layers=layers, sigma=1.0, relative=True)
        calibrate(_mlp(), data.train_set, attacks, family, tmp_path / name, data.mean, data.std, True, victims=2,
                  held_out=0, progress=False, baseline=shared)  # fmt: skip
    assert len((shared / "results.jsonl").read_text().splitlines()) == 1  # audited once, resumed by the second
    assert not (tmp_path / "all" / "no_noise").exists() and (tmp_path / "first" / "sigma=1").exists()
