"""The audit: an attack suite on fixed victims with positive controls, resumable, with a report."""

import json
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from datamodules import OfflineMNISTDataModule
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.attacks.suite import attack_suite
from ppp_lightning.auditing.audit import audit, audited_gradients
from ppp_lightning.auditing.report import write_report
from ppp_lightning.defenses.precode import PRECODE
from ppp_lightning.defenses.spec import DefenseSpec
from ppp_lightning.gradients import client_gradient
from ppp_lightning.models import build_network
from ppp_lightning.victims import draw_victims


def _setup():
    data = OfflineMNISTDataModule()
    data.setup("fit")
    torch.manual_seed(0)
    model = build_network("mlp", 10, (3, 32, 32), None, width=32)
    return data, model, {"analytic": AttackSpec("analytic")}


def _audit(data, model, attacks, folder, defense=None, victims=4):
    return audit(model, data.train_set, attacks, folder, defense, data.mean, data.std, True, victims, progress=False)


def test_an_undefended_mlp_leaks_and_strong_noise_protects_with_a_passing_control(tmp_path):
    data, model, attacks = _setup()
    (leaky,) = _audit(data, model, attacks, tmp_path / "none")
    assert leaky.attack.reconstructed == [True] * 4 and leaky.attack.identified == [True] * 4  # exact recovery
    assert str(leaky.verdict).startswith("leaked: identified 4/4 above chance")
    noisy = DefenseSpec(layers="all", sigma=100.0, relative=True)
    (shielded,) = _audit(data, model, attacks, tmp_path / "noise", noisy, victims=8)
    # one victim's noise happens to correlate most with it (ncc 0.085): 1/8 is chance among 100 candidates
    assert shielded.attack.reconstructed == [False] * 8
    assert shielded.attack.identified == [False, False, True] + [False] * 5
    assert shielded.control.reconstructed == [True] * 8 and shielded.verdict.outcome == "protected"
    assert shielded.attack.convergence.stop_reasons == [[]] * 8 and shielded.attack.findings().budget_share == 0
    report = (tmp_path / "noise" / "report.md").read_text()
    assert (
        "| analytic | 1/8 not above chance (95% CI 0.00-0.53; chance 1/100, p 0.077) | 0/8 (95% CI 0.00-0.37) | "
        "identified 8/8 above chance (95% CI 0.63-1.00; chance 1/100, p 1e-16), reconstructed 8/8 (95% CI 0.63-1.00) "
        "| protected |"
    ) in report
    assert "Any attack (per victim): reconstructed 0/8 (95% CI 0.00-0.37), identified 1/8 not above chance" in report
    (four,) = _audit(data, model, attacks, tmp_path / "four", noisy)  # the same chance hit among 4 victims: p 0.039
    assert str(four.verdict).startswith("leaked: identified 1/4 above chance (95% CI 0.01-0.81; chance 1/100, p 0.039)")
    assert Image.open(tmp_path / "noise" / "analytic.png").size[1] >= 3 * 96  # truth, attack, control rows


def test_a_rerun_skips_finished_attacks(tmp_path):
    data, model, attacks = _setup()
    first = _audit(data, model, attacks, tmp_path)
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    more = {**attacks, "inverting": AttackSpec("inverting", {"iterations": 2, "progress": False})}
    started = time.perf_counter()
    second = _audit(data, model, more, tmp_path)
    elapsed = time.perf_counter() - started
    records = [json.loads(line) for line in Path(tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["attack"] for r in records] == ["analytic", "inverting"] and records[0] == json.loads(lines[0])
    assert second[0] == first[0] and second[1].context["attack"] == "inverting"
    assert records[0]["seconds"] == first[0].context["seconds"]  # the first attack did not run again
    assert isinstance(records[1]["seconds"], float) and records[1]["seconds"] <= round(elapsed, 1)  # what it cost
    assert records[1]["convergence"] == {"iterations": [[2]] * 4, "stop_reasons": [["budget"]] * 4, "budget_share": 1.0}
    assert second[1].verdict.outcome != "protected"  # two iterations: stopped by the budget


def test_precode_is_audited_against_its_own_sampling_switched_off():
    torch.manual_seed(0)
    model = build_network("mlp", 10, (3, 32, 32), {"latent_dim": 8}, width=32).train()
    images, labels = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    gradients = audited_gradients(model, images, labels, None, seed=0)
    assert gradients.audited == "precode sampling"
    plain = gradients.control_model
    assert [m.samples for m in plain.modules() if isinstance(m, PRECODE)] == [False]
    assert [m.samples for m in model.modules() if isinstance(m, PRECODE)] == [True]  # the original is untouched
    for i in range(2):
        twice = client_gradient(plain, images[i : i + 1], labels[i : i + 1])
        assert all(torch.equal(gradients.control[i][name], twice[name]) for name in twice)  # deterministic
        assert not torch.allclose(gradients.shared[i]["head.weight"], gradients.control[i]["head.weight"])
    without_precode = build_network("mlp", 10, (3, 32, 32), None, width=32)
    assert audited_gradients(without_precode, images, labels, None, seed=0).control is None


def test_batched_victims_share_one_gradient_per_batch_and_are_matched_within_it(tmp_path):
    data, model, _ = _setup()
    suite = attack_suite(model, data.train_set[0][0][None], batch_size=2, tie_channels=True)
    assert list(suite) == ["inverting", "dlg"]  # the analytic recovery needs one image per gradient
    inverting = {"inverting": suite["inverting"].replace(iterations=200)}
    (record,) = audit(model, data.train_set, inverting, tmp_path, None, data.mean, data.std, True, victims=4,
                      progress=False, batch_size=2)  # fmt: skip
    assert record.context["batch_size"] == 2 and len(record.attack.reconstructed) == 4
    assert len(record.attack.convergence.stop_reasons) == 2  # one problem per shared gradient
    report = (tmp_path / "report.md").read_text()
    assert "4 class-stratified victims, in batches of 2 (one shared gradient each)" in report
    images, labels = draw_victims(data.train_set, 4, 0, stratified=True)
    gradients = audited_gradients(model, images, labels, None, 0, batch_size=2)
    assert len(gradients.shared) == 2
    assert torch.equal(gradients.shared[1]["head.bias"], client_gradient(model, images[2:], labels[2:])["head.bias"])
    with pytest.raises(ValueError, match=r"victims=3, batch_size=2; allowed: victims a multiple of batch_size >= 1"):
        audit(model, data.train_set, inverting, tmp_path / "odd", victims=3, batch_size=2)


def test_a_resumed_audit_without_its_kept_images_still_reports(tmp_path):
    data, model, attacks = _setup()
    first = _audit(data, model, attacks, tmp_path)
    for kept in (tmp_path / "reconstructions").iterdir():  # as in a fresh clone of committed results
        kept.unlink()
    assert _audit(data, model, attacks, tmp_path) == first
    assert Image.open(tmp_path / "sheet.png").size[1] < 2 * 96  # only the victims' row is left to draw
    written = (tmp_path / "report.md").read_text()
    (tmp_path / "report.md").unlink()  # as in a clone without the per-cell reports
    assert write_report(tmp_path).read_text() == written and "| analytic | 4/4 above chance" in written


def test_a_record_cut_short_by_a_crash_is_dropped_and_its_attack_runs_again(tmp_path):
    data, model, attacks = _setup()
    (first,) = _audit(data, model, attacks, tmp_path)
    results = tmp_path / "results.jsonl"
    results.write_text(results.read_text()[:-40])  # killed while appending
    (again,) = _audit(data, model, attacks, tmp_path)
    assert again.attack.reconstructed == first.attack.reconstructed
    assert [json.loads(line)["label"] for line in results.read_text().splitlines()[1:]] == ["analytic"]
