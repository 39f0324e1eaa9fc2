"""Undo what a run that failed before completing a batch wrote: run folders, W&B links, config."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from typing_extensions import override

from ppp_lightning.lightning.wandb_policy import finish_wandb

__all__ = ["RunFootprint", "undone_if_no_batch_completes"]

# Loggers whose run folders a failed setup removes.
FOLDER_LOGGERS = (WandbLogger, TensorBoardLogger, CSVLogger)
# The folders wandb keeps a run in, inside its ``wandb/`` folder (also when ``wandb.init`` failed).
WANDB_RUN_DIRS = ("run-*", "offline-run-*")


def _version_dir(logger: Logger) -> Optional[Path]:
    """The folder a logger keeps this run's files in (``save_dir/name/version``), if known yet."""
    if logger.save_dir is None or logger.version is None:
        return None
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(logger.save_dir, str(logger.name), version)


def _wandb_run_dir(save_dirs: list[Path]) -> Optional[Path]:
    """The current W&B run's own folder (``.../wandb/offline-run-*``) when it lies in a save dir."""
    run = getattr(sys.modules.get("wandb"), "run", None)
    folder = Path(run.dir).resolve().parent if run is not None and getattr(run, "dir", None) else None
    if folder is None or not any(root.resolve() in folder.parents for root in save_dirs):
        return None
    return folder


class _BatchSeen(Callback):
    """Notes whether any batch was completed (the sanity check does not count)."""

    def __init__(self) -> None:
        self.seen = False

    def _note(self, trainer: pl.Trainer, *args: Any) -> None:
        self.seen = self.seen or not trainer.sanity_checking

    # One hook body for the four batch-end hooks it overrides.
    on_train_batch_end = on_validation_batch_end = on_test_batch_end = on_predict_batch_end = override(_note)


class RunFootprint:
    """What a run may write, recorded before it starts, so a run that fails in setup can be undone.

    Undoing removes the run's own folders (the W&B run, the logger's version folder), the shared
    folders it created if they are left empty, restores W&B's ``latest-run`` links and the saved
    ``config.yaml`` as they were. Nothing that existed before the run is removed.

    Args:
        trainer: the Trainer about to run.
    """

    def __init__(self, trainer: pl.Trainer) -> None:
        self.trainer = trainer
        self.existed = {path: path.exists() for path in self._own_dirs() + self._shared_dirs()}
        self.wandb_runs = set(self._wandb_run_dirs())
        self.links = {link: os.readlink(link) for link in self._links()}
        self.config_file = self._config_file()
        self.config_bytes = self.config_file.read_bytes() if self.config_file and self.config_file.is_file() else None

    def _loggers(self) -> list[Logger]:
        # Only loggers whose folders can be named without side effects (others may start runs).
        return [logger for logger in self.trainer.loggers if isinstance(logger, FOLDER_LOGGERS) and logger.save_dir]

    def _save_dirs(self) -> list[Path]:
        return [Path(logger.save_dir) for logger in self._loggers()]

    def _own_dirs(self) -> list[Path]:
        dirs = [path for path in map(_version_dir, self._loggers()) if path is not None]
        wandb_dir = _wandb_run_dir(self._save_dirs())
        return dirs + ([wandb_dir] if wandb_dir else [])

    def _shared_dirs(self) -> list[Path]:
        dirs = [Path(cb.dirpath) for cb in self.trainer.checkpoint_callbacks if getattr(cb, "dirpath", None)]
        for logger in self._loggers():
            dirs += [Path(logger.save_dir, "wandb"), Path(logger.save_dir, str(logger.name)), Path(logger.save_dir)]
        return dirs + self._wandb_dirs()

    def _wandb_dirs(self) -> list[Path]:
        """The ``wandb/`` folders of the W&B loggers: ``<save_dir>/wandb``, else ``$WANDB_DIR`` or ``./wandb``."""
        roots = [logger.save_dir or os.environ.get("WANDB_DIR") or "." for logger in self.trainer.loggers
                 if isinstance(logger, WandbLogger)]  # fmt: skip
        return list(dict.fromkeys(Path(root, "wandb") for root in roots))

    def _wandb_run_dirs(self) -> list[Path]:
        """The run folders in the W&B loggers' ``wandb/`` folders, also those of a ``wandb.init`` that failed."""
        return [path for root in self._wandb_dirs() for pattern in WANDB_RUN_DIRS for path in root.glob(pattern)
                if path.is_dir() and not path.is_symlink()]  # fmt: skip

    def _links(self) -> list[Path]:
        roots = dict.fromkeys([root / "wandb" for root in self._save_dirs()] + self._wandb_dirs())
        return [path for root in roots for path in root.glob("*") if path.is_symlink()]

    def _config_file(self) -> Optional[Path]:
        savers = [cb for cb in self.trainer.callbacks if isinstance(cb, SaveConfigCallback)]
        log_dir = self.trainer.log_dir
        return Path(log_dir, savers[0].config_filename) if savers and log_dir else None

    def undo(self) -> None:
        """Remove what the run created and restore what it replaced."""
        own_dirs = [path for path in self._own_dirs() if path.is_dir() and not self.existed.get(path, False)]
        if _wandb_run_dir(self._save_dirs()) in own_dirs:
            finish_wandb(quiet=True)  # before deleting its folder: W&B writes on finishing
        # A wandb.init that failed (an unreachable server) left its run folder but no run to name it.
        own_dirs += [path for path in self._wandb_run_dirs() if path not in self.wandb_runs and path not in own_dirs]
        for path in own_dirs:
            shutil.rmtree(path, ignore_errors=True)
        self._restore_links()
        self._restore_config()
        for path in sorted(set(self._shared_dirs()), key=lambda p: len(p.parts), reverse=True):
            if path.is_dir() and not self.existed.get(path, False) and not any(path.iterdir()):
                path.rmdir()

    def _restore_links(self) -> None:
        for link in self._links():
            if link not in self.links:
                link.unlink()
        for link, target in self.links.items():
            if not link.is_symlink() or os.readlink(link) != target:
                link.unlink(missing_ok=True)
                link.symlink_to(target)

    def _restore_config(self) -> None:
        if self.config_file is None:
            return
        if self.config_bytes is None:
            self.config_file.unlink(missing_ok=True)
        else:
            self.config_file.write_bytes(self.config_bytes)


@contextlib.contextmanager
def undone_if_no_batch_completes(trainer: pl.Trainer) -> Iterator[None]:
    """Run the body; if it raises before the trainer completed a batch, undo the run's footprint.

    Args:
        trainer: the Trainer about to run (a callback noting completed batches is added to it).

    Raises:
        Exception: whatever the body raised, after the undo.
    """
    footprint = RunFootprint(trainer)
    progress = _BatchSeen()
    trainer.callbacks.append(progress)
    try:
        yield
    except Exception:
        if not progress.seen:
            footprint.undo()
        raise
