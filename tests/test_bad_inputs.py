"""Bad settings and non-finite data stop early with one clear message: a defense is never silently off."""

import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from callbacks import GradientInversionAttack, PartialPerturbation
from ppp_lightning import PRECODE, ImageClassifier
from ppp_lightning.assessment.metrics import ReconstructionMetrics
from ppp_lightning.attacks import AttackSpec, InvertingGradients
from ppp_lightning.auditing.audit import audit
from ppp_lightning.auditing.folders import folder_lock
from ppp_lightning.auditing.noise_search import calibrate
from ppp_lightning.defenses.perturbation import GradientPerturbation
from ppp_lightning.defenses.spec import DefenseSpec

NAN, INF = float("nan"), float("inf")

BUILDERS = {
    "PRECODE.beta": lambda v: PRECODE(4, 2, beta=v),
    "ImageClassifier.lr": lambda v: ImageClassifier("mlp", lr=v),
    "PartialPerturbation.sigma": lambda v: PartialPerturbation(sigma=v),
    "PartialPerturbation.clip_norm": lambda v: PartialPerturbation(clip_norm=v),
    "PartialPerturbation.keep_ratio": lambda v: PartialPerturbation(keep_ratio=v),
    "GradientPerturbation.sigma": lambda v: GradientPerturbation(sigma=v),
    "DefenseSpec.sigma": lambda v: DefenseSpec(sigma=v),
    "InvertingGradients.lr": lambda v: InvertingGradients(lr=v),
    "InvertingGradients.tv_weight": lambda v: InvertingGradients(tv_weight=v),
    "InvertingGradients.std": lambda v: InvertingGradients(std=(v,)),
    "AttackSpec.lr": lambda v: AttackSpec("dlg", {"lr": v}),
    "ReconstructionMetrics.success_threshold": lambda v: ReconstructionMetrics(success_threshold=v),
    "GradientInversionAttack.success_threshold": lambda v: GradientInversionAttack(success_threshold=v),
    "GradientInversionAttack.tv_weight": lambda v: GradientInversionAttack(tv_weight=v),
}


@pytest.mark.parametrize("value", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("setting", list(BUILDERS))
def test_non_finite_settings_are_refused_naming_the_value(setting, value):
    option = setting.split(".")[1]
    with pytest.raises(ValueError, match=rf"^{option}={value}; allowed: a finite number"):
        BUILDERS[setting](value)


def test_nan_sigma_never_reaches_a_run():
    with pytest.raises(ValueError, match="sigma=nan; allowed: a finite number >= 0"):
        PartialPerturbation(sigma=math.nan)


def _loader(poison_batch: int) -> DataLoader:
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    images[4 * poison_batch] = math.nan
    return DataLoader(TensorDataset(images, torch.arange(16) % 10), batch_size=4)


def _fit(tmp_path, callbacks, poison_batch=2):
    trainer = pl.Trainer(
        max_epochs=1, logger=CSVLogger(tmp_path), log_every_n_steps=1, default_root_dir=tmp_path,
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1), *callbacks],
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(ImageClassifier("mlp", precode={"latent_dim": 8}), _loader(poison_batch))
    return trainer


def test_a_nan_batch_stops_the_run_at_its_step_with_no_nan_logged_or_checkpointed(tmp_path):
    with pytest.raises(FloatingPointError, match="train loss is nan at global step 2, batch 2 .*the batch holds non-finite values"):
        _fit(tmp_path, [PartialPerturbation(sigma=0.1)])
    checkpoints = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert checkpoints  # steps 1 and 2 were fine
    for path in checkpoints:
        state = torch.load(path, weights_only=False)["state_dict"]
        assert all(torch.isfinite(t).all() for t in state.values()), path
    logged = "\n".join(p.read_text() for p in tmp_path.rglob("metrics.csv"))
    assert "train/loss" in logged and "nan" not in logged.lower()


def test_the_attack_callback_refuses_a_non_finite_victim_gradient(tmp_path):
    attack = GradientInversionAttack(iterations=2, num_images=4, every_n_steps=1, before_training=False)
    with pytest.raises(ValueError, match="the victims' gradient at step 2 has .* non-finite values"):
        _fit(tmp_path, [attack])


class _Unguarded(pl.LightningModule):
    """A user's module that does not check its loss: the perturbation must still refuse NaN."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_partial_perturbation_stops_on_a_non_finite_gradient_naming_step_and_parameter(tmp_path):
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         callbacks=[PartialPerturbation(layers="all", sigma=0.1)], default_root_dir=tmp_path)
    model = _Unguarded()
    with pytest.raises(FloatingPointError, match=r"gradient of 'net.1.weight' is non-finite at global step 1"):
        trainer.fit(model, _loader(1))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("callback", [PartialPerturbation(sigma=0.1), GradientInversionAttack(iterations=2)], ids=["ppp", "attack"])
def test_accumulation_below_one_is_refused_before_any_attack_or_step(tmp_path, callback):
    trainer = pl.Trainer(max_steps=1, accumulate_grad_batches=0, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[callback], default_root_dir=tmp_path)
    with pytest.raises(ValueError, match="accumulate_grad_batches=0; allowed: >= 1"):
        trainer.fit(ImageClassifier("mlp", precode={"latent_dim": 8}), _loader(0))
    assert not list(tmp_path.rglob("*.jsonl"))


# Bad inputs refused before any work (issue 28): each test fails on the behaviour before the fix.


def test_num_images_above_a_plain_dataloaders_batch_is_refused_at_the_first_batch(tmp_path):
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(images, torch.arange(8) % 10), batch_size=4)  # no datamodule: no batch_size
    attack = GradientInversionAttack(iterations=2, num_images=100, before_training=True)
    trainer = pl.Trainer(max_steps=1, logger=CSVLogger(tmp_path), enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[attack], default_root_dir=tmp_path)  # fmt: skip
    with pytest.raises(ValueError) as info:
        trainer.fit(ImageClassifier("mlp"), loader)
    assert str(info.value) == (
        "num_images=100 but the training batches hold 4 images; allowed: num_images <= batch_size, or victims='fixed'"
    )
    assert attack.last_step is None and not list(tmp_path.rglob("*.jsonl"))  # nothing was attacked


def _read_only_folder(tmp_path) -> str:
    """A folder no file can be written in: read-only by mode, or (as root, whom modes do not stop) /sys/kernel."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        return str(folder)
    if os.path.isdir("/sys/kernel") and not _can_write("/sys/kernel"):
        return "/sys/kernel"
    pytest.skip("no folder this user cannot write")


def _can_write(folder: str) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _folder_cases(tmp_path) -> dict[str, tuple[str, str]]:
    (tmp_path / "a_file").write_text("not a folder")
    return {
        "file": (str(tmp_path / "a_file"), "is a file, not a folder"),
        "under a file": (str(tmp_path / "a_file" / "audit"), "cannot be written (Not a directory)"),
        "read-only": (None, "cannot be written (Permission denied)"),
    }


@pytest.mark.parametrize("case", ["file", "under a file", "read-only"])
def test_audit_refuses_a_folder_it_cannot_write_before_any_work(tmp_path, case):
    folder, cause = _folder_cases(tmp_path)[case]
    folder = folder or _read_only_folder(tmp_path)
    with pytest.raises(ValueError) as info:
        audit(None, [], {}, Path(folder))  # no model or data needed: refused first
    allowed = "allowed: a folder that can be created and written; pass another one"
    assert str(info.value) == f"folder={folder} {cause}; {allowed}"


HOLD_LOCK = """
import fcntl, os, sys, time
handle = open(sys.argv[1], "a+")
fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
handle.write(f"{os.getpid()}\\n")
handle.flush()
print("held", flush=True)
time.sleep(120)
"""


def test_a_folder_being_audited_by_another_process_is_refused_and_free_again_after(tmp_path):
    folder = tmp_path / "audit"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError) as info:
            audit(None, [], {}, folder)
        assert str(info.value) == (
            f"folder {folder} is being audited by another process (pid {holder.pid}); wait or pass another folder"
        )
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(folder) as locked:  # the lock went with the process
        assert (locked / ".lock").read_text() == f"{os.getpid()}\n"


def test_the_audit_lock_is_exclusive_within_a_process_too(tmp_path):
    with folder_lock(tmp_path / "audit"):
        with pytest.raises(ValueError, match=rf"^folder {tmp_path / 'audit'} is being audited by another process \(pid {os.getpid()}\)"):
            audit(None, [], {}, tmp_path / "audit")


SEED = "allowed: an integer from 0 to 4294967295 (2**32 - 1, as seed_everything)"
CALIBRATION_SETTINGS = {
    "factor=1": ({"factor": 1}, "factor=1; allowed: a finite number > 1"),
    "factor=0.5": ({"factor": 0.5}, "factor=0.5; allowed: a finite number > 1"),
    "start=0": ({"start": 0.0}, "start=0.0; allowed: a finite number > 0"),
    "held_out=-1": ({"held_out": -1}, "held_out=-1; allowed: an integer >= 0 (0: no held-out victims)"),
    "victims=0": ({"victims": 0}, "victims=0; allowed: an integer >= 1"),
    "seed=-1": ({"seed": -1}, f"seed=-1; {SEED}"),
    "seed=1e23": ({"seed": 10**23}, f"seed={10**23}; {SEED}"),
}


@pytest.mark.parametrize(("settings", "message"), CALIBRATION_SETTINGS.values(), ids=CALIBRATION_SETTINGS.keys())
def test_calibrate_refuses_its_settings_before_the_audit_without_noise(tmp_path, settings, message):
    with pytest.raises(ValueError) as info:
        calibrate(None, [], {}, DefenseSpec(), tmp_path / "cal", **settings)  # no model or data needed: refused first
    assert str(info.value) == message
    assert not (tmp_path / "cal").exists()


@pytest.mark.parametrize(("settings", "message"), [
    ({"seed": -1}, f"seed=-1; {SEED}"),
    ({"seed": 10**23}, f"seed={10**23}; {SEED}"),
    ({"seed": 1.5}, f"seed=1.5; {SEED}"),
    ({"victims": 0}, "victims=0; allowed: an integer >= 1"),
], ids=["seed=-1", "seed=1e23", "seed=1.5", "victims=0"])  # fmt: skip
def test_audit_refuses_its_seed_and_victims_before_any_work(tmp_path, settings, message):
    with pytest.raises(ValueError) as info:
        audit(None, [], {}, tmp_path / "audit", **settings)
    assert str(info.value) == message
    assert not (tmp_path / "audit").exists()
