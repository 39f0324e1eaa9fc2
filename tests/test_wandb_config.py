"""The run's loggers hold what the user chose (the whole CLI configuration) and the audits' outcomes."""

from pathlib import Path

import pytorch_lightning as pl
import yaml
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from callbacks import LeakageAudit, PartialPerturbation
from datamodules import OfflineMNISTDataModule
from ppp_lightning import ImageClassifier
from ppp_lightning.lightning.cli import PPPLightningCLI
from ppp_lightning.lightning.logger_sinks import report_summary
from ppp_lightning.lightning.run_config import flat_config

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
SIGMA = "trainer.callbacks.PartialPerturbation.sigma"


def test_flat_config_keys_callbacks_by_class_and_drops_init_args():
    config = {
        "seed_everything": 0,
        "model": {"class_path": "ppp_lightning.ImageClassifier", "init_args": {"arch": "cnn", "precode": {"beta": 0.1}}},
        "trainer": {
            "max_epochs": 5,
            "devices": [0, 1],
            "callbacks": [
                {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"monitor": "val/acc"}},
                {"class_path": "callbacks.PartialPerturbation", "init_args": {"sigma": 226.274, "layers": "all"}},
                {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"monitor": "val/loss"}},
            ],
            "plugins": None,
        },
        "ckpt_path": Path("x.ckpt"),
    }
    assert flat_config(config) == {
        "seed_everything": 0,
        "model.class_path": "ppp_lightning.ImageClassifier",
        "model.arch": "cnn",
        "model.precode.beta": 0.1,
        "trainer.max_epochs": 5,
        "trainer.devices": [0, 1],
        "trainer.callbacks.ModelCheckpoint.class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
        "trainer.callbacks.ModelCheckpoint.monitor": "val/acc",
        "trainer.callbacks.PartialPerturbation.class_path": "callbacks.PartialPerturbation",
        SIGMA: 226.274,
        "trainer.callbacks.PartialPerturbation.layers": "all",
        "trainer.callbacks.ModelCheckpoint_1.class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
        "trainer.callbacks.ModelCheckpoint_1.monitor": "val/loss",
        "trainer.plugins": None,
        "ckpt_path": "x.ckpt",
    }


def _quickstart_without_audit() -> str:
    config = yaml.safe_load(QUICKSTART.read_text())
    config["trainer"]["callbacks"] = [c for c in config["trainer"]["callbacks"] if "LeakageAudit" not in c["class_path"]]
    Path("quickstart.yaml").write_text(yaml.safe_dump(config))
    return "quickstart.yaml"


def test_an_offline_wandb_fit_holds_the_whole_cli_configuration(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    args = ["fit", "--config", _quickstart_without_audit(), "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1", "--trainer.callbacks.init_args.sigma=3.5"]  # fmt: skip
    cli = PPPLightningCLI(args=args)  # the default config callback logs the whole configuration
    config = dict(cli.trainer.logger.experiment.config)  # the run's config, as `wandb sync` uploads it
    assert config[SIGMA] == 3.5 and config["trainer.max_epochs"] == 1
    assert config["trainer.callbacks.PartialPerturbation.layers"] == "before_bottleneck"
    assert config["trainer.callbacks.PartialPerturbation.mechanism"] == "gaussian"
    assert config["model.arch"] == "cnn" and config["data.batch_size"] == 64 and config["seed_everything"] == 0
    assert config["lr"] == 0.001  # Lightning's own: the model's hyperparameters, still there
    assert cli.trainer.logger.experiment.settings.mode in ("offline", "dryrun")  # no server reached


def test_tensorboard_hparams_hold_the_whole_cli_configuration():
    args = ["fit", "--config", _quickstart_without_audit(), "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
            "--trainer.limit_val_batches=1", "--trainer.logger=TensorBoardLogger", "--trainer.logger.save_dir=tb"]  # fmt: skip
    cli = PPPLightningCLI(args=args)  # the default config callback logs the whole configuration
    assert isinstance(cli.trainer.logger, TensorBoardLogger)
    hparams = yaml.safe_load((Path(cli.trainer.logger.log_dir) / "hparams.yaml").read_text())
    assert hparams[SIGMA] == 226.274 and hparams["trainer.max_epochs"] == 1


def test_report_summary_reads_the_outcome_and_counts_by_column_name():
    columns = ("attack", "identified (95% CI; chance, p)", "reconstructed (95% CI)", "control", "outcome")
    rows = [["analytic", "8/8 above chance", "8/8 (95% CI 0.63-1.00)", "-", "leaked"],
            ["inverting", "not scored", "0/8 (95% CI 0.00-0.37)", "-", "inconclusive (not converged)"]]  # fmt: skip
    assert report_summary("audit/x", columns, rows) == {
        "audit/x/analytic/outcome": "leaked",
        "audit/x/analytic/identified": "8/8 above chance",
        "audit/x/analytic/reconstructed": "8/8 (95% CI 0.63-1.00)",
        "audit/x/inverting/outcome": "inconclusive",
        "audit/x/inverting/identified": "not scored",
        "audit/x/inverting/reconstructed": "0/8 (95% CI 0.00-0.37)",
    }


def test_the_audits_outcomes_are_in_the_offline_wandb_runs_summary(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    pl.seed_everything(0)
    logger = WandbLogger(project="ppp-lightning", save_dir="runs")
    audit = LeakageAudit(attacks=["analytic"], victims=8, progress=False, after_training=False)
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=1, logger=logger, enable_checkpointing=False,
        enable_progress_bar=False, callbacks=[PartialPerturbation(layers="all", sigma=100.0, relative=True), audit],
    )  # fmt: skip
    trainer.fit(ImageClassifier("mlp", arch_kwargs={"width": 32}), OfflineMNISTDataModule())
    summary = logger.experiment.summary
    assert summary["audit/before_training-no_noise/analytic/outcome"] == "leaked"
    assert summary["audit/before_training-noise/analytic/outcome"] == "protected"
    assert summary["audit/before_training-noise/analytic/reconstructed"].startswith("0/8")
    assert summary["audit/before_training-no_noise/analytic/reconstructed"].startswith("8/8")
