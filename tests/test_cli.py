import configparser
import inspect
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import pytorch_lightning as pl
import torch
import wandb
import yaml
from pytorch_lightning.cli import LightningCLI

from ppp_lightning.lightning.cli import PPPLightningCLI, main
from ppp_lightning.lightning.wandb_policy import use_offline_wandb_unless_logged_in

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
# Lightning CLI configs; configs/federated/ holds Flower experiments (tests/test_federated*.py).
CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.yaml") if "federated" not in p.parts)
# LightningCLI method -> its parameters, as PPPLightningCLI overrides (or, for _get, calls) it.
LIGHTNING_CLI_METHODS = {
    "subcommands": [],
    "add_arguments_to_parser": ["self", "parser"],
    "parse_arguments": ["self", "parser", "args"],
    "_parse_ckpt_path": ["self"],
    "before_instantiate_classes": ["self"],
    "after_instantiate_classes": ["self"],
    "_run_subcommand": ["self", "subcommand"],
    "_get": ["self", "config", "key", "default"],
}
FILE_DATASETS = {"datamodules.MNISTDataModule": "mnist_root", "datamodules.CIFAR10DataModule": "cifar10_root"}


def test_configs_cover_every_paper_setting():
    names = {p.stem for p in (CONFIG_DIR / "paper").glob("*.yaml")}
    assert names == {
        f"{arch}_{data}_{defense}"
        for arch in ("mlp", "cnn", "resnet18", "vit")
        for data in ("mnist", "cifar10")
        for defense in ("none", "precode")
    }


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_config_runs_fast_dev_run(config, request, monkeypatch):
    finished = []
    fit = pl.Trainer.fit

    def recording_fit(trainer, model, *args, **kwargs):
        fit(trainer, model, *args, **kwargs)
        finished.append((trainer.global_step, trainer.state.status, all(torch.isfinite(p).all() for p in model.parameters())))

    monkeypatch.setattr(pl.Trainer, "fit", recording_fit)
    data_class = yaml.safe_load(config.read_text())["data"]["class_path"]
    args = ["fit", "--config", str(config), "--trainer.fast_dev_run=true", "--data.init_args.batch_size=4"]
    if data_class in FILE_DATASETS:
        root = request.getfixturevalue(FILE_DATASETS[data_class])
        args += [f"--data.init_args.data_dir={root}", "--data.init_args.val_size=4"]
    main(args)
    assert finished == [(1, "finished", True)]  # one optimizer step ran, to the end, with finite weights
    assert not list(Path().rglob("*.ckpt"))


def _quickstart_without_attacks() -> str:
    """The quickstart config minus its attack callbacks (they have tests of their own and cost minutes)."""
    config = yaml.safe_load((CONFIG_DIR / "quickstart.yaml").read_text())
    callbacks = config["trainer"]["callbacks"]
    config["trainer"]["callbacks"] = [c for c in callbacks if not c["class_path"].endswith("LeakageAudit")]
    assert len(config["trainer"]["callbacks"]) < len(callbacks)
    Path("quickstart.yaml").write_text(yaml.safe_dump(config))
    return "quickstart.yaml"


def test_quickstart_saves_config_and_checkpoints_and_reruns_in_the_same_folder():
    args = ["fit", "--config", _quickstart_without_attacks(), "--trainer.max_epochs=1"]
    main(args + ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2"])
    wandb.finish()  # as when the first process exits
    main(args + ["--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2"])
    assert yaml.safe_load(Path("runs/config.yaml").read_text())["trainer"]["limit_train_batches"] == 3
    checkpoints = sorted(Path("runs").rglob("epoch=0-step=*.ckpt"))
    assert sorted(p.name for p in checkpoints) == ["epoch=0-step=2.ckpt", "epoch=0-step=3.ckpt"]
    assert len(list(Path("runs").rglob("last.ckpt"))) == 2
    from ppp_lightning import ImageClassifier

    model = ImageClassifier.load_from_checkpoint(checkpoints[0])
    assert model.hparams.arch == "cnn" and model.hparams.precode == {"latent_dim": 256, "beta": 0.001}


def test_fast_dev_run_of_quickstart_writes_no_checkpoint():
    config = yaml.safe_load(Path(_quickstart_without_attacks()).read_text())
    assert config["trainer"]["callbacks"][0]["init_args"]["save_last"] is True
    main(["fit", "--config", "quickstart.yaml", "--trainer.fast_dev_run=true"])
    assert not list(Path().rglob("*.ckpt")) and not list(Path().rglob("checkpoints"))


def test_one_epoch_of_quickstart_reaches_real_accuracy():
    from datamodules import OfflineMNISTDataModule
    from ppp_lightning import ImageClassifier

    pl.seed_everything(0)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    model = ImageClassifier("cnn", precode={})
    trainer.fit(model, OfflineMNISTDataModule())
    assert trainer.callback_metrics["val/acc"].item() > 0.8


def test_print_config_shows_the_chosen_classes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIG_DIR / "quickstart.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "ppp_lightning.ImageClassifier"
    assert printed["model"]["init_args"]["precode"] == {"latent_dim": 256, "beta": 0.001}
    assert printed["data"]["class_path"] == "datamodules.OfflineMNISTDataModule"
    assert printed["trainer"]["logger"]["class_path"] == "pytorch_lightning.loggers.WandbLogger"


ENTRY_POINTS = {"module": [sys.executable, "-m", "ppp_lightning"], "script": ["ppp-lightning"]}


@pytest.mark.parametrize("command", ENTRY_POINTS.values(), ids=ENTRY_POINTS)
def test_both_entry_points_offer_our_subcommands(command):
    out = subprocess.run([*command, "--help"], capture_output=True, text=True, check=True).stdout
    assert "{fit,validate,test,predict,audit,calibrate}" in out  # Lightning's and our two, and nothing else
    audit_help = subprocess.run([*command, "audit", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--fail_on_leak" in audit_help and "--victims" in audit_help


def test_wandb_goes_offline_only_without_credentials(tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("")
    monkeypatch.setenv("NETRC", str(netrc))
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    use_offline_wandb_unless_logged_in()
    assert os.environ["WANDB_MODE"] == "offline"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    # logged in to the server the installed wandb uses (wandb 0.31: not api.wandb.ai)
    default_host = urlparse(wandb.sdk.wandb_settings.Settings.model_fields["base_url"].default).hostname
    netrc.write_text(f"machine {default_host} login user password secret\n")
    use_offline_wandb_unless_logged_in()
    assert "WANDB_MODE" not in os.environ
    netrc.write_text("machine elsewhere.example login user password secret\n")  # another server only
    use_offline_wandb_unless_logged_in()
    assert os.environ["WANDB_MODE"] == "offline"
    monkeypatch.delenv("WANDB_MODE")
    netrc.write_text("machine api.wandb.ai login user password secret\n")
    monkeypatch.setenv("WANDB_BASE_URL", "https://api.wandb.ai")  # the classic server, chosen
    use_offline_wandb_unless_logged_in()
    assert "WANDB_MODE" not in os.environ
    monkeypatch.setenv("WANDB_MODE", "disabled")
    use_offline_wandb_unless_logged_in()
    assert os.environ["WANDB_MODE"] == "disabled"


def test_the_cli_overrides_only_lightning_cli_methods_that_exist_with_the_parameters_it_relies_on():
    # _parse_ckpt_path first appeared in pytorch-lightning 2.5.5: setup.cfg's lower bound.
    ours = {name for name in vars(PPPLightningCLI) if not name.startswith("__")}
    overridden = ours & set(dir(LightningCLI))
    marked = {name for name in ours if getattr(getattr(PPPLightningCLI, name), "__override__", False)}
    assert marked == overridden == set(LIGHTNING_CLI_METHODS) - {"_get"}
    for name, parameters in LIGHTNING_CLI_METHODS.items():
        assert list(inspect.signature(getattr(LightningCLI, name)).parameters) == parameters, name
    requirements = configparser.ConfigParser()
    requirements.read(CONFIG_DIR.parent / "setup.cfg")
    assert "pytorch-lightning>=2.5.5," in requirements["options"]["install_requires"]
