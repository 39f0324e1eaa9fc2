"""The command line stops early on bad input with one line, and a failed setup leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import yaml

from ppp_lightning.lightning.cli import TRACEBACK_ENV, main
from tests.fake_data import write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
# Instances built by the CLI in this process (class paths below point at this module).
BUILT: list[str] = []
SEEN_ARCH: list[str] = []


class Recorder(pl.Callback):
    """Notes that the CLI built it, and the architecture it trains."""

    def __init__(self) -> None:
        BUILT.append("Recorder")

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        SEEN_ARCH.append(pl_module.hparams.arch)


class FailInSetup(pl.Callback):
    """Raises in ``setup``, after the loggers started and before any batch."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        raise ValueError("FailInSetup: setup refused on purpose")


def tiny_config(arch: str = "mlp", callbacks: tuple[str, ...] = (), logger: object = False) -> str:
    """A config file for a tiny run on the offline digits; returns its path."""
    config = {
        "model": {"class_path": "ppp_lightning.ImageClassifier", "init_args": {"arch": arch}},
        "data": {"class_path": "datamodules.OfflineMNISTDataModule", "init_args": {"batch_size": 4}},
        "trainer": {
            "logger": logger,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 1,
            "callbacks": [{"class_path": path} for path in callbacks],
        },
    }
    Path("tiny.yaml").write_text(yaml.safe_dump(config))
    return "tiny.yaml"


def run_failing(capsys, args: list[str]) -> tuple[int, list[str]]:
    """Run the CLI in this process; return its exit status and the lines it printed."""
    with pytest.raises(SystemExit) as info:
        main(args)
    captured = capsys.readouterr()
    return info.value.code, (captured.out + captured.err).splitlines()


BAD_VALUES = {
    "lr": (["--model.init_args.lr=-1"], "-1", "lr", 2),
    "arch": (["--model.init_args.arch=foo"], "foo", "'mlp', 'cnn', 'resnet18', 'vit'", 2),
    "lr type": (["--model.init_args.lr=abc"], "abc", "float", 2),
    "unknown option": (["--model.init_args.depth=3"], "depth", "not accepted", 2),
    "callback ValueError": (
        ["--trainer.callbacks+=callbacks.GradientInversionAttack", "--trainer.callbacks.num_images=0"],
        "num_images=0",
        ">= 1",
        2,
    ),
    "lightning callback": (["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.mode=maximum"], "maximum", "min", 2),
    "trainer type": (["--trainer.max_epochs=ten"], "ten", "int", 2),
    "class path": (["--data=datamodules.NoSuchData"], "NoSuchData", "data", 2),
    "accumulate": (["--trainer.accumulate_grad_batches=0"], "accumulate_grad_batches=0", "allowed: >= 1", 2),
}


@pytest.mark.parametrize(("extra", "value", "allowed", "status"), BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_value_prints_one_line_with_the_toolkit_message(capsys, extra, value, allowed, status):
    code, lines = run_failing(capsys, ["fit", "--config", tiny_config(), *extra])
    assert code == status
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and value in errors[0] and allowed in errors[0], lines
    assert len([line for line in lines if value in line]) <= 3
    assert not any("Does not validate" in line or "Traceback" in line or "Given value" in line for line in lines)


def test_accumulate_grad_batches_below_one_is_refused_before_any_callback_is_built(capsys):
    BUILT.clear()
    code, lines = run_failing(capsys, ["fit", "--config", tiny_config(callbacks=("tests.test_cli_errors.Recorder",)), "--trainer.accumulate_grad_batches=-2"])
    assert code == 2 and "trainer.accumulate_grad_batches=-2 is not allowed; allowed: >= 1" in lines[-2]
    assert BUILT == [] and not Path("lightning_logs").exists() and not Path("checkpoints").exists()


@pytest.mark.parametrize("how", ["env", "flag"])
def test_full_traceback_only_when_asked(capsys, monkeypatch, how):
    args = ["fit", "--config", tiny_config(), "--model.init_args.lr=-1"]
    if how == "env":
        monkeypatch.setenv(TRACEBACK_ENV, "1")
    else:
        args.append("--traceback")
    with pytest.raises(ValueError) as info:
        main(args)
    chain, err = [], info.value
    while err is not None:
        chain.append(str(err))
        err = err.__cause__
    assert any("lr" in text and "-1" in text for text in chain)
    assert "error:" not in capsys.readouterr().err


def _last_checkpoint(arch: str) -> Path:
    """A real checkpoint of a one-step run of ``arch`` through the CLI (so it holds ``_class_path``)."""
    callback = {"class_path": "ModelCheckpoint", "init_args": {"dirpath": f"ckpt_{arch}", "save_last": True}}
    main(["fit", "--config", tiny_config(arch), "--trainer.max_steps=1", f"--trainer.callbacks+={yaml.safe_dump(callback)}"])
    return Path(f"ckpt_{arch}", "last.ckpt").resolve()


def test_checkpoint_of_another_model_is_refused_then_used_on_request(capsys):
    checkpoint = _last_checkpoint("mlp")
    capsys.readouterr()
    args = ["fit", "--config", tiny_config("cnn", callbacks=("tests.test_cli_errors.Recorder",)), f"--ckpt_path={checkpoint}", "--trainer.max_steps=2"]
    SEEN_ARCH.clear()
    code, lines = run_failing(capsys, args)
    errors = [line for line in lines if "error:" in line]
    assert code == 1 and len(errors) == 1 and SEEN_ARCH == []
    assert str(checkpoint) in errors[0] and "arch: checkpoint 'mlp', config 'cnn'" in errors[0]
    assert "--use_checkpoint_hparams=true" in errors[0] and "lr:" not in errors[0]
    main(args + ["--use_checkpoint_hparams=true"])
    assert SEEN_ARCH == ["mlp"]


def test_checkpoint_of_the_same_model_resumes_without_the_flag(capsys):
    checkpoint = _last_checkpoint("mlp")
    SEEN_ARCH.clear()
    main(["fit", "--config", tiny_config("mlp", callbacks=("tests.test_cli_errors.Recorder",)), f"--ckpt_path={checkpoint}", "--trainer.max_steps=2"])
    assert SEEN_ARCH == ["mlp"]


def test_handmade_checkpoint_without_class_path_is_compared_by_its_keys(capsys):
    path = write_checkpoint(Path("old.ckpt"), {"arch": "cnn", "lr": 0.5})
    code, lines = run_failing(capsys, ["validate", "--config", tiny_config("cnn"), f"--ckpt_path={path}"])
    error = next(line for line in lines if "error:" in line)
    assert code == 1 and "lr: checkpoint 0.5, config 0.001" in error and "arch" not in error


TB_LOGGER = {"class_path": "TensorBoardLogger", "init_args": {"save_dir": "tb"}}
WANDB_LOGGER = {"class_path": "WandbLogger", "init_args": {"save_dir": "runs", "project": "p"}}


@pytest.mark.parametrize("logger", [TB_LOGGER, WANDB_LOGGER], ids=["tensorboard", "wandb-offline"])
def test_failed_setup_leaves_no_run_behind(capsys, monkeypatch, logger):
    monkeypatch.setenv("WANDB_MODE", "offline")
    save_dir = Path(logger["init_args"]["save_dir"])
    args = ["fit", "--config", tiny_config(callbacks=("tests.test_cli_errors.FailInSetup",), logger=logger)]
    code, lines = run_failing(capsys, args)
    assert code == 1 and "FailInSetup: setup refused on purpose" in lines[-2]
    assert not save_dir.exists(), sorted(save_dir.rglob("*"))


def test_failed_setup_keeps_earlier_runs_as_they_were(capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = {**WANDB_LOGGER, "init_args": {**WANDB_LOGGER["init_args"]}}
    main(["fit", "--config", tiny_config(logger=logger), "--trainer.max_steps=1"])
    sys.modules["wandb"].finish()
    before = {p: (os.readlink(p) if p.is_symlink() else p.is_dir()) for p in Path("runs").rglob("*")}
    config = Path("runs/config.yaml").read_text()
    run_failing(capsys, ["fit", "--config", tiny_config(callbacks=("tests.test_cli_errors.FailInSetup",), logger=logger)])
    after = {p: (os.readlink(p) if p.is_symlink() else p.is_dir()) for p in Path("runs").rglob("*")}
    assert after == before and Path("runs/config.yaml").read_text() == config


def test_the_last_line_on_screen_is_ours_not_wandb(tmp_path):
    """As a user sees it: a fresh process, W&B offline, a run that fails during setup."""
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    env.pop("WANDB_SILENT", None)
    args = ["fit", "--config", tiny_config(logger=WANDB_LOGGER), "--data=datamodules.MNISTDataModule", "--data.init_args.data_dir=nowhere"]
    result = subprocess.run([sys.executable, "-m", "ppp_lightning", *args], capture_output=True, text=True, env=env, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1
    assert lines[-2].startswith("ppp-lightning: error: FileNotFoundError: MNIST files not found") and "nowhere" in lines[-2]
    assert "wandb sync" not in "\n".join(lines[-2:]) and not Path("runs").exists()


# Bad inputs refused before any work, and exit statuses as the README states them (issue 28).

NOISY = {"class_path": "callbacks.PartialPerturbation", "init_args": {"layers": "all", "sigma": 0.1}}
SEED_ALLOWED = "allowed: an integer from 0 to 4294967295 (2**32 - 1, as seed_everything)"


def _error(lines: list[str]) -> str:
    """The one error line, without the prefix."""
    (error,) = [line for line in lines if line.startswith("ppp-lightning: error: ")]
    return error.removeprefix("ppp-lightning: error: ")


def _command(command: str, *flags: str, callbacks: tuple = ()) -> list[str]:
    """A cheap audit or calibrate of the tiny mlp (one analytic attack, two victims) with ``flags``."""
    config = tiny_config()
    data = yaml.safe_load(Path(config).read_text())
    data["trainer"]["callbacks"] = list(callbacks)
    Path(config).write_text(yaml.safe_dump(data))
    return [command, "--config", config, "--attacks=[analytic]", "--victims=2", "--folder=out", *flags]


@pytest.mark.parametrize("args", [
    ["fit", "--trainer.max_epoch=7"],
    ["audit", "--victim=3"],
    ["calibrate", "--fact=2"],
], ids=["fit", "audit", "calibrate"])  # fmt: skip
def test_abbreviated_options_are_refused_as_unknown(capsys, args):
    code, lines = run_failing(capsys, [args[0], "--config", tiny_config(), args[1], "--print_config"])
    assert code == 2 and _error(lines) == f"unrecognized arguments: {args[1]}"


COMMAND_VALUES = {
    "audit seed=-1": (["--seed=-1"], "audit", (), f"seed=-1; {SEED_ALLOWED}"),
    "audit seed=1e23": ([f"--seed={10**23}"], "audit", (), f"seed={10**23}; {SEED_ALLOWED}"),
    "audit victims=0": (["--victims=0"], "audit", (), "victims=0; allowed: an integer >= 1"),
    "calibrate seed=-1": (["--seed=-1"], "calibrate", (NOISY,), f"seed=-1; {SEED_ALLOWED}"),
    "calibrate factor=1": (["--factor=1"], "calibrate", (NOISY,), "factor=1.0; allowed: a finite number > 1"),
    "calibrate factor=0.5": (["--factor=0.5"], "calibrate", (NOISY,), "factor=0.5; allowed: a finite number > 1"),
    "calibrate start=0": (["--start=0"], "calibrate", (NOISY,), "start=0.0; allowed: a finite number > 0"),
    "calibrate held_out=-1": (["--held_out=-1"], "calibrate", (NOISY,),
                              "held_out=-1; allowed: an integer >= 0 (0: no held-out victims)"),
    "calibrate victims=0": (["--victims=0"], "calibrate", (NOISY,), "victims=0; allowed: an integer >= 1"),
    "unknown attack": (["--attacks=[nope]"], "audit", (),
                       "attacks ['nope'] do not apply to this model and defense; allowed: inverting, analytic, dlg, linkage"),
}  # fmt: skip


@pytest.mark.parametrize(("flags", "command", "callbacks", "message"), COMMAND_VALUES.values(), ids=COMMAND_VALUES.keys())
def test_a_commands_bad_argument_is_refused_before_any_work_with_status_2(capsys, flags, command, callbacks, message):
    code, lines = run_failing(capsys, _command(command, *flags, callbacks=callbacks))
    assert (code, _error(lines)) == (2, message)
    assert not list(Path(".").rglob("results.jsonl"))  # no attack ran


@pytest.mark.parametrize("command", ["audit", "calibrate"])
def test_a_folder_that_is_a_file_is_refused_naming_folder(capsys, command):
    Path("out").write_text("a file")
    code, lines = run_failing(capsys, _command(command, callbacks=(NOISY,)))
    allowed = "allowed: a folder that can be created and written; pass another one"
    assert (code, _error(lines)) == (2, f"--folder=out is a file, not a folder; {allowed}")


def test_a_ckpt_path_that_is_a_directory_is_named_as_one(capsys):
    Path("ckpts").mkdir()
    code, lines = run_failing(capsys, _command("audit", "--ckpt_path=ckpts"))
    fix = "Pass the path of a checkpoint file (a .ckpt)"
    assert (code, _error(lines)) == (1, f"bad checkpoint --ckpt_path={Path('ckpts').resolve()}: it is a directory. {fix}.")


def test_a_bad_checkpoints_entry_is_named_as_one(capsys):
    Path("ckpts").mkdir()
    code, lines = run_failing(capsys, _command("calibrate", "--checkpoints=[ckpts]", callbacks=(NOISY,)))
    fix = "Pass the path of a checkpoint file (a .ckpt)"
    assert (code, _error(lines)) == (1, f"bad checkpoint --checkpoints entry ckpts: it is a directory. {fix}.")
    assert not list(Path(".").rglob("results.jsonl"))  # refused before the first audit


EXIT_STATUSES = {
    "bad lr in the config": (["fit", "--config", "CONFIG", "--model.init_args.lr=-1"], 2),
    "unknown attack in --attacks": (["audit", "--config", "CONFIG", "--attacks=[nope]"], 2),
    "--victims 0": (["audit", "--config", "CONFIG", "--victims=0"], 2),
    "a Lightning callback's refusal": (["fit", "--config", "CONFIG", "--trainer.callbacks+=ModelCheckpoint",
                                        "--trainer.callbacks.mode=maximum"], 2),
    "run-time failure": (["fit", "--config", "CONFIG", "--trainer.callbacks+=tests.test_cli_errors.FailInSetup"], 1),
}  # fmt: skip


@pytest.mark.parametrize(("args", "status"), EXIT_STATUSES.values(), ids=EXIT_STATUSES.keys())
def test_exit_status_is_2_for_configured_values_refused_and_1_for_failures_during_the_run(capsys, args, status):
    code, _ = run_failing(capsys, [tiny_config() if arg == "CONFIG" else arg for arg in args])
    assert code == status
