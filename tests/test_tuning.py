"""Tuning on the control (``audit --tune N``): Optuna searches each optimisation attack's settings on
other victims' control gradient, and the audit runs with the best."""

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import TensorDataset

from callbacks import LeakageAudit
from datamodules import OfflineMNISTDataModule
from ppp_lightning.attacks import AttackSpec
from ppp_lightning.attacks.matching import GradientMatchingAttack
from ppp_lightning.auditing import tuning
from ppp_lightning.auditing.audit import audit
from ppp_lightning.auditing.noise_search import HELD_OUT_SEED_OFFSET, calibrate
from ppp_lightning.auditing.tuning import check_tune, draw_tuning_victims, search_space
from ppp_lightning.defenses.spec import DefenseSpec
from ppp_lightning.lightning.cli import main
from ppp_lightning.models import build_network
from ppp_lightning.victims import victim_indices

# Normalised far from unit scale: a digit's pixels lie in [-50, 50] while the random start is about
# N(0, 1), so a reconstruction must move far; signed Adam moves a pixel by at most lr per step.
MEAN, STD = (0.5,), (0.01,)
NOISE = DefenseSpec(layers="all", sigma=10.0, relative=True)
# A budget in which the default lr 0.1 stalls (a pixel moves by about 0.25) and lr near 1 does not;
# the spec's own iterations cap the search.
SHORT = AttackSpec("inverting", {"iterations": 4, "progress": False})


def _digits(count: int = 400) -> TensorDataset:
    """The first ``count`` offline digits, one channel at 16x16, normalised with :data:`MEAN` and :data:`STD`."""
    data = OfflineMNISTDataModule()
    data.setup("fit")
    images, labels = zip(*(data.train_set[i] for i in range(count)))
    unit = F.avg_pool2d(torch.stack(images)[:, :1] * data.std[0] + data.mean[0], 2)
    return TensorDataset((unit - MEAN[0]) / STD[0], torch.stack(labels))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network("mlp", 10, (1, 16, 16), None, width=16)


def _audit(folder: Path, tune: int, attacks=None, dataset=None, **options):
    dataset = _digits() if dataset is None else dataset
    return audit(_model(), dataset, attacks or {"inverting": SHORT}, folder, NOISE, MEAN, STD, victims=8,
                 progress=False, pool_size=20, tune=tune, **options)  # fmt: skip


def test_tuning_on_the_control_finds_settings_that_leak_where_the_defaults_do_not(tmp_path):
    (untuned,) = _audit(tmp_path / "untuned", tune=0)
    assert untuned.control.reconstructed == [False] * 8 and sum(untuned.control.identified) <= 1
    assert not untuned.control.findings().leaked  # the control fails: nothing can be called protected
    assert "the attack did not leak without the defense either" in untuned.verdict.reason
    (tuned,) = _audit(tmp_path / "tuned", tune=12)
    assert sum(tuned.control.reconstructed) >= 4 and sum(tuned.control.identified) >= 6
    assert tuned.control.findings().leaked and "did not leak without the defense" not in str(tuned.verdict)
    assert tuned.attack.reconstructed == [False] * 8  # the noise still protects the defended gradient
    (written,) = [json.loads(line) for line in (tmp_path / "tuned" / "results.jsonl").read_text().splitlines()]
    trials = written["tuning"]["trials"]
    assert [trial["number"] for trial in trials] == list(range(12)) and written["tune"] == 12
    own = {"lr": 0.1, "tv_weight": 0.01, "restarts": 1, "iterations": 4, "initialisation": "normal"}
    assert trials[0]["settings"] == own  # the attack's own settings come first
    best = max(trials, key=lambda trial: trial["value"])
    assert written["tuning"]["chosen"] == best["settings"] and best["value"] > 2 * trials[0]["value"]
    assert written["spec"] == SHORT.replace(**best["settings"]).to_dict() == tuned.context["spec"]
    assert best["settings"]["lr"] > 0.3 and best["settings"]["iterations"] <= 4
    assert written["tuning"]["untuned"] == SHORT.to_dict() and len(written["tuning"]["victims"]) == 4
    report = (tmp_path / "tuned" / "report.md").read_text()
    assert "| inverting (tuned) |" in report
    assert f"tuned: lr {best['settings']['lr']:.3g}, tv_weight" in report
    assert "the best of 12 trials on the control of 4 other victims" in report  # 4: the default
    (again,) = _audit(tmp_path / "again", tune=12)  # a seeded sampler: a rerun tunes identically
    assert again.context["tuning"]["chosen"] == written["tuning"]["chosen"]


def test_tuning_victims_are_never_audited_or_reserved_ones(tmp_path):
    labels = torch.arange(10)
    dataset = TensorDataset(torch.randn(10, 1, 16, 16), labels)  # one image per class
    audited = victim_indices(dataset, 6, seed=0, stratified=True)
    drawn = draw_tuning_victims(dataset, 4, seed=0, audited=6)
    assert sorted(drawn.indices) == sorted(set(range(10)) - set(audited))  # exactly the images left
    assert drawn.seed == tuning.TUNING_SEED_OFFSET and torch.equal(drawn.labels, labels[drawn.indices])
    apart = draw_tuning_victims(dataset, 2, seed=0, audited=6, reserved=drawn.indices[:2])
    assert sorted(apart.indices) == sorted(drawn.indices[2:])  # reserved images are left out too
    with pytest.raises(ValueError, match=r"count=5 victims; allowed: 1 to 4 \(the dataset's size less 6 excluded\)"):
        draw_tuning_victims(dataset, 5, seed=0, audited=6)
    digits = _digits()
    (record,) = _audit(tmp_path, tune=2, dataset=digits)
    tuned_on = record.context["tuning"]["victims"]
    audited = victim_indices(digits, 8, 0, stratified=True)
    assert not set(tuned_on) & set(audited)
    audited_images = torch.stack([digits[i][0] for i in audited])
    assert all(not torch.equal(digits[i][0], image) for i in tuned_on for image in audited_images)
    assert sorted(int(digits[i][1]) for i in tuned_on) == [0, 1, 2, 3]  # class-stratified too


def test_tuning_without_optuna_stops_before_any_work_with_the_install_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if not installed: importing it fails
    message = 'tune=3 needs Optuna: pip install -e ".[tune]"'
    with pytest.raises(ValueError, match=f"^{message}$".replace("[", r"\[").replace(".", r"\.")):
        _audit(tmp_path / "audit", tune=3)
    assert not (tmp_path / "audit").exists()
    for refused in (lambda: LeakageAudit(tune=3), lambda: check_tune(3)):
        with pytest.raises(ValueError, match=r"tune=3 needs Optuna"):
            refused()
    assert check_tune(0) == 0  # no tuning needs no Optuna
    with pytest.raises(ValueError, match=r"tune=-1; allowed: an integer >= 0"):
        check_tune(-1)


def test_the_cli_says_tuning_needs_optuna_with_a_usage_exit_status(monkeypatch, capsys):
    config = {"model": {"class_path": "ppp_lightning.ImageClassifier", "init_args": {"arch": "mlp"}},
              "data": {"class_path": "datamodules.OfflineMNISTDataModule"}, "trainer": {"logger": False}}  # fmt: skip
    Path("tiny.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(SystemExit) as exit_info:
        main(["audit", "--config", "tiny.yaml", "--attacks=[inverting]", "--victims=2", "--tune=3", "--folder=audit"])
    assert exit_info.value.code == 2
    assert 'tune=3 needs Optuna: pip install -e ".[tune]"' in capsys.readouterr().err


def _counted_tunings(monkeypatch) -> list[str]:
    """The labels of the attacks tuned from now on, in order."""
    calls, real = [], tuning.tune_attack

    def counted(spec, *args, **kwargs):
        calls.append(spec.label)
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(tuning, "tune_attack", counted)
    return calls


def test_a_rerun_reuses_the_recorded_choice_and_a_changed_tune_is_refused(tmp_path, monkeypatch):
    calls = _counted_tunings(monkeypatch)
    attacks = {"inverting": SHORT, "analytic": AttackSpec("analytic")}  # the analytic attack takes no lr
    first = _audit(tmp_path, tune=3, attacks=attacks)
    assert calls == ["inverting"] and "tuning" not in first[1].context
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    again = _audit(tmp_path, tune=3, attacks=attacks)
    assert calls == ["inverting"]  # not tuned again
    assert (tmp_path / "results.jsonl").read_text().splitlines() == lines and again == first
    with pytest.raises(ValueError, match=r"holds an audit with other tune"):
        _audit(tmp_path, tune=0, attacks=attacks)


def test_calibrate_tunes_once_and_every_sigma_audit_uses_the_tuned_settings(tmp_path, monkeypatch):
    calls = _counted_tunings(monkeypatch)
    digits = _digits()
    result = calibrate(_model(), digits, {"inverting": SHORT}, NOISE, tmp_path, MEAN, STD, victims=8, factor=4,
                       progress=False, pool_size=20, held_out=4, tune=6)  # fmt: skip
    assert calls == ["inverting"] and len(result.search.evaluations) >= 2 and result.held_out  # held-out audits ran
    chosen = result.tuning["inverting"]["chosen"]
    assert result.to_dict()["tuning"]["inverting"]["chosen"] == chosen and result.leaking_attacks == ["inverting"]
    tuned = SHORT.replace(**chosen).to_dict()
    records = [json.loads(line) for path in tmp_path.glob("**/results.jsonl") for line in path.read_text().splitlines()]
    assert len(records) > 2 and all(record["spec"] == tuned for record in records)  # no noise, every sigma, held out
    assert [record["label"] for record in records if "tuning" in record] == ["inverting"]  # tuned once, without noise
    held_out = victim_indices(digits, 4, HELD_OUT_SEED_OFFSET, stratified=True)
    audited = victim_indices(digits, 8, 0, stratified=True)
    assert not set(result.tuning["inverting"]["victims"]) & set(held_out + audited)


def test_the_initialisation_option_is_checked_and_uniform_draws_in_minus_one_to_one():
    with pytest.raises(ValueError, match=r"initialisation='zeros'; allowed: normal, uniform"):
        AttackSpec("inverting", {"initialisation": "zeros"})
    model = _model()
    images = torch.zeros(1, 1, 16, 16)
    gradients = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for initialisation, low, high in (("uniform", -1.0, 1.0), ("normal", -5.0, 5.0)):
        attack = GradientMatchingAttack(1, 0.1, restarts=64, initialisation=initialisation, seed=3)
        problems = attack.problems(model, [gradients], [torch.tensor([1])], tuple(images.shape))
        start = attack.initial_variables(problems, tuple(images.shape), None, torch.Generator().manual_seed(3))
        drawn = start["images"]
        assert drawn.shape == (64, 1, 1, 16, 16) and low <= drawn.min() and drawn.max() <= high
        if initialisation == "uniform":
            assert drawn.min() < -0.99 and drawn.max() > 0.99 and abs(drawn.mean()) < 0.03  # fills [-1, 1]
        else:
            assert drawn.abs().max() > 3  # a normal draw leaves [-1, 1]
    space = search_space(AttackSpec("inverting"))
    assert space["initialisation"].choices == ("normal", "uniform") and space["iterations"].high == 1000
    assert "initialisation" not in search_space(AttackSpec("feature_inversion"))  # only options it takes
