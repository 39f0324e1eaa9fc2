"""The ``ppp-lightning`` command: Lightning's CLI over any LightningModule and datamodule."""

from __future__ import annotations

import netrc
import os
from typing import Optional
from urllib.parse import urlparse

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningCLI
from pytorch_lightning.utilities import rank_zero_info

__all__ = ["main", "use_offline_wandb_unless_logged_in"]

# The default logger of every run (a config's ``trainer.logger`` replaces it).
WANDB_LOGGER = {
    "class_path": "pytorch_lightning.loggers.WandbLogger",
    "init_args": {"project": "ppp-lightning", "save_dir": "runs"},
}


def use_offline_wandb_unless_logged_in() -> None:
    """Set ``WANDB_MODE=offline`` when W&B has no credentials and no mode was chosen.

    Without an API key ``wandb.init`` fails at once; offline runs keep everything on disk and can
    be uploaded later with ``wandb sync``.
    """
    if "WANDB_MODE" in os.environ or os.environ.get("WANDB_API_KEY"):
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        credentials = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        credentials = None
    if credentials is None:
        os.environ["WANDB_MODE"] = "offline"
        rank_zero_info("W&B: not logged in, logging offline (upload later with `wandb sync`).")


def main(args: Optional[list[str]] = None) -> None:
    """Run ``fit``, ``validate``, ``test`` or ``predict`` from YAML configs and flags.

    Any LightningModule and LightningDataModule can be chosen with ``class_path`` (ours are
    ``ppp_lightning.ImageClassifier`` and the classes in ``datamodules``). Runs log to W&B
    (offline unless logged in) under ``runs/``; re-running in the same folder overwrites the saved
    ``config.yaml`` instead of failing.

    Args:
        args: command-line arguments; ``None`` reads ``sys.argv``.
    """
    use_offline_wandb_unless_logged_in()
    LightningCLI(
        pl.LightningModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        trainer_defaults={"logger": WANDB_LOGGER},
        args=args,
    )
