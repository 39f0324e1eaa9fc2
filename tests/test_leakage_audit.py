"""LeakageAudit: audits before and after training with controls, one printed table, training unchanged."""

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from callbacks import LeakageAudit, PartialPerturbation
from datamodules import OfflineMNISTDataModule
from ppp_lightning import ImageClassifier


def _fit(*callbacks):
    pl.seed_everything(0)
    model = ImageClassifier("mlp", arch_kwargs={"width": 32})
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=3, limit_val_batches=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, callbacks=[PartialPerturbation(layers="all", sigma=100.0, relative=True), *callbacks],
    )  # fmt: skip
    trainer.fit(model, OfflineMNISTDataModule())
    return model


def test_the_audits_print_what_leaked_and_what_was_stopped_with_controls(capsys):
    audit = LeakageAudit(attacks=["analytic"], victims=8, progress=False)
    trained = _fit(audit)
    printed = capsys.readouterr().out
    noise = "noise on all (gaussian, relative sigma 100)"
    found = "8/8 above chance (95% CI 0.63-1.00; chance 1/100, p 1e-16)"
    control = f"identified {found}, reconstructed 8/8 (95% CI 0.63-1.00)"
    for when in ("before training", "after training"):
        assert f"| {when} | none | analytic | {found} | 8/8 (95% CI 0.63-1.00) | - | leaked |" in printed
        assert (
            f"| {when} | {noise} | analytic | 0/8 not above chance (95% CI 0.00-0.37; chance 1/100, p 1) | "
            f"0/8 (95% CI 0.00-0.37) | {control} | protected |"
        ) in printed
    assert audit.done == ["before_training", "after_training"] and len(audit.rows) == 4
    # the victims; per audit the attack and its stretched copy, and for the noise audits the control's two rows
    assert Image.open(audit.sheet).size[1] >= 13 * 96
    assert f"Sheet: {audit.sheet}" in printed
    untouched = _fit()
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), untouched.state_dict().values()))


def test_settings_are_checked():
    with pytest.raises(ValueError, match=r"victims=0; allowed: >= 1"):
        LeakageAudit(victims=0)
    with pytest.raises(ValueError, match=r"attacks \['adaptive'\] do not apply to this model and defense"):
        _fit(LeakageAudit(attacks=["adaptive"]))


def test_a_resumed_run_keeps_the_earlier_audits_rows_and_does_not_repeat_them(capsys):
    first = LeakageAudit(attacks=["analytic"], victims=8, progress=False, after_training=False)
    _fit(first)
    state = first.state_dict()
    assert state["done"] == ["before_training"] and len(state["rows"]) == 2  # no noise, then the noise
    resumed = LeakageAudit(attacks=["analytic"], victims=8, progress=False)
    resumed.load_state_dict(state)
    capsys.readouterr()
    _fit(resumed)
    printed = capsys.readouterr().out
    assert resumed.done == ["before_training", "after_training"] and resumed.rows[:2] == first.rows
    assert [line.split(" | ")[0] for line in printed.splitlines() if line.startswith("| before") or
            line.startswith("| after")] == ["| before training"] * 2 + ["| after training"] * 2  # fmt: skip
