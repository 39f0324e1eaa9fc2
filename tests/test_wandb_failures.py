"""W&B edge cases (issue 28): an unreachable server fails fast with one clear line and leaves no run behind;
``--trainer.default_root_dir`` is checked and the default logger saves there."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from ppp_lightning.lightning.cli import PPPLightningCLI, main
from ppp_lightning.lightning.errors import describe_error, exit_status
from ppp_lightning.lightning.wandb_policy import INIT_TIMEOUT_ENV, use_short_wandb_init_timeout
from tests.test_cli_errors import run_failing, tiny_config

# The default logger of the CLI (tiny_config's logger=False would turn it off).
DEFAULT_LOGGER = {"class_path": "pytorch_lightning.loggers.WandbLogger",
                  "init_args": {"project": "ppp-lightning", "save_dir": "runs"}}  # fmt: skip
CLOSED_PORT = "http://127.0.0.1:9"  # nothing listens there: connection refused at once


def _wandb_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.name == "wandb" or "run-" in p.name)


@pytest.fixture
def unreachable_wandb(monkeypatch):
    """Logged in (a dummy API key) to a W&B server that cannot be reached; no WANDB_MODE.

    wandb's service process outlives a test and opens an online run's relative paths from its own
    working directory (an earlier test's): a fresh one per test, as in a command-line run.
    """
    import wandb

    wandb.teardown()
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0123456789" * 4)
    monkeypatch.setenv("WANDB_BASE_URL", CLOSED_PORT)
    monkeypatch.setenv(INIT_TIMEOUT_ENV, "5")
    yield
    wandb.teardown()


def test_an_unreachable_wandb_server_fails_fast_with_one_line_naming_offline_mode(capsys, unreachable_wandb):
    started = time.monotonic()
    code, lines = run_failing(capsys, ["fit", "--config", tiny_config(logger=DEFAULT_LOGGER), "--trainer.max_steps=1"])
    elapsed = time.monotonic() - started
    assert code == 1, lines
    error = lines[-2]
    assert error.startswith("ppp-lightning: error: W&B could not reach 127.0.0.1:9 (connection refused"), lines
    assert "set WANDB_MODE=offline to log offline and sync later, or check the network" in error
    assert "Traceback" not in "\n".join(lines)
    assert elapsed < 90, elapsed  # wandb's own default waits 90 s and retries beyond
    assert not Path("runs").exists(), sorted(Path("runs").rglob("*"))
    assert _wandb_folders(Path(".")) == []


def test_a_failed_wandb_init_without_save_dir_leaves_no_wandb_folder(capsys, unreachable_wandb):
    logger = {"class_path": "WandbLogger", "init_args": {"project": "p", "save_dir": None}}  # wandb's ./wandb
    code, lines = run_failing(capsys, ["fit", "--config", tiny_config(logger=logger), "--trainer.max_steps=1"])
    assert code == 1 and "W&B could not reach 127.0.0.1:9" in lines[-2], lines
    assert _wandb_folders(Path(".")) == []


def test_a_failed_wandb_init_keeps_earlier_runs(capsys, monkeypatch, unreachable_wandb):
    earlier = Path("runs/wandb/offline-run-20240101_000000-earlier")
    (earlier / "files").mkdir(parents=True)
    code, lines = run_failing(capsys, ["fit", "--config", tiny_config(logger=DEFAULT_LOGGER), "--trainer.max_steps=1"])
    assert code == 1, lines
    assert [p for p in Path("runs/wandb").iterdir() if not p.is_symlink()] == [earlier]


def test_main_sets_a_short_wandb_init_timeout_unless_the_user_set_one(monkeypatch):
    monkeypatch.delenv(INIT_TIMEOUT_ENV, raising=False)
    use_short_wandb_init_timeout()
    assert float(os.environ[INIT_TIMEOUT_ENV]) == 20
    monkeypatch.setenv(INIT_TIMEOUT_ENV, "300")
    use_short_wandb_init_timeout()
    assert os.environ[INIT_TIMEOUT_ENV] == "300"


def test_main_sets_the_timeout_before_running(monkeypatch, capsys):
    monkeypatch.delenv(INIT_TIMEOUT_ENV, raising=False)
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    capsys.readouterr()
    assert float(os.environ[INIT_TIMEOUT_ENV]) == 20


def test_wandb_communication_errors_are_described_others_are_not(monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_BASE_URL", "https://api.example.org")
    err = wandb.errors.CommError('Timed out while retrying: Post "https://api.example.org/graphql": dial tcp: '
                                 "lookup api.example.org: no such host\nConsider increasing the init_timeout")  # fmt: skip
    message = describe_error(RuntimeError("wrapped").with_traceback(None))
    assert "W&B" not in message
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = err
    for error in (err, wrapped):
        text = describe_error(error)
        assert text == ("W&B could not reach api.example.org (no such host; timed out); set WANDB_MODE=offline to "
                        "log offline and sync later, or check the network"), text  # fmt: skip
        assert exit_status(error) == 1
    assert "could not reach" not in describe_error(wandb.errors.AuthenticationError("invalid API key"))


# --trainer.default_root_dir


def test_an_unwritable_default_root_dir_is_refused_before_any_work(capsys, tmp_path):
    Path("file").write_text("a regular file")
    code, lines = run_failing(capsys, ["fit", "--config", tiny_config(logger=DEFAULT_LOGGER), "--trainer.max_steps=1",
                                       "--trainer.default_root_dir=file/sub"])  # fmt: skip
    assert code == 2, lines
    assert lines[-2].startswith("ppp-lightning: error: --trainer.default_root_dir=file/sub cannot be written"), lines
    assert "Traceback" not in "\n".join(lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "tiny.yaml"]


def test_a_default_root_dir_that_is_a_file_is_refused(capsys):
    Path("file").write_text("a regular file")
    code, lines = run_failing(capsys, ["fit", "--config", tiny_config(logger=DEFAULT_LOGGER), "--trainer.default_root_dir=file"])
    assert code == 2 and "--trainer.default_root_dir=file is a file, not a folder" in lines[-2], lines


def test_the_default_logger_saves_in_the_default_root_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = ["fit", "--config", tiny_config(logger=DEFAULT_LOGGER), "--trainer.max_steps=1", "--trainer.default_root_dir=out"]
    cli = PPPLightningCLI(args=args)
    assert Path(cli.trainer.logger.save_dir) == Path("out")
    sys.modules["wandb"].finish()
    assert not Path("runs").exists()
    assert (Path("out") / "config.yaml").is_file() and list(Path("out/wandb").glob("offline-run-*"))
    assert list(Path("out").rglob("*.ckpt"))


def test_the_default_logger_without_a_root_dir_still_saves_in_runs(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cli = PPPLightningCLI(args=["fit", "--config", tiny_config(logger=DEFAULT_LOGGER), "--trainer.max_steps=1"])
    assert Path(cli.trainer.logger.save_dir) == Path("runs")


def test_a_logger_save_dir_the_user_chose_is_kept_with_a_root_dir(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = {"class_path": "WandbLogger", "init_args": {"project": "p", "save_dir": "mine"}}
    args = ["fit", "--config", tiny_config(logger=logger), "--trainer.max_steps=1", "--trainer.default_root_dir=out"]
    cli = PPPLightningCLI(args=args)
    assert Path(cli.trainer.logger.save_dir) == Path("mine")
