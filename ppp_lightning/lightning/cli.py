"""The ``ppp-lightning`` command: Lightning's CLI over any LightningModule and datamodule.

On top of :class:`~pytorch_lightning.cli.LightningCLI` it refuses bad settings before any
object is built or any step runs, prints one line per failure instead of a traceback, and leaves
nothing behind when a run fails during setup.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities import rank_zero_info
from typing_extensions import override

from ppp_lightning.auditing.folders import writable_folder
from ppp_lightning.checkpoints import (
    CheckpointFileError,
    local_checkpoint,
    read_checkpoint,
)
from ppp_lightning.lightning.checkpoint_hparams import (
    checkpoint_hparams_differences,
    configured_model,
)
from ppp_lightning.lightning.commands import LeakFound, PPPTrainer
from ppp_lightning.lightning.errors import describe_error, exit_status, mark_usage_error
from ppp_lightning.lightning.run_config import RunConfigCallback
from ppp_lightning.lightning.run_footprint import undone_if_no_batch_completes
from ppp_lightning.lightning.wandb_policy import (
    finish_wandb,
    use_offline_wandb_unless_logged_in,
    use_short_wandb_init_timeout,
)
from ppp_lightning.progress import interactive

__all__ = [
    "CheckpointFileError",
    "LEAK_EXIT_STATUS",
    "PPPLightningCLI",
    "TRACEBACK_ENV",
    "TRACEBACK_FLAG",
    "USE_CHECKPOINT_HPARAMS",
    "checkpoint_hparams_differences",
    "describe_error",
    "main",
    "read_checkpoint",
    "use_offline_wandb_unless_logged_in",
]

PROG = "ppp-lightning"
# The exit status of ``audit --fail_on_leak=true`` when a victim leaked (1 and 2 are errors).
LEAK_EXIT_STATUS = 3
# Either of these shows the full traceback of a failure instead of the one-line summary.
TRACEBACK_ENV = "PPP_LIGHTNING_TRACEBACK"
TRACEBACK_FLAG = "--traceback"
# Subcommand option: take the model's hyperparameters from --ckpt_path instead of refusing a mismatch.
USE_CHECKPOINT_HPARAMS = "use_checkpoint_hparams"
# The default logger of every run (a config's ``trainer.logger`` replaces it).
WANDB_LOGGER = {
    "class_path": "pytorch_lightning.loggers.WandbLogger",
    "init_args": {"project": "ppp-lightning", "save_dir": "runs"},
}
# The default logger's folder; with ``--trainer.default_root_dir`` and no other save_dir, that folder instead.
DEFAULT_SAVE_DIR = WANDB_LOGGER["init_args"]["save_dir"]
# Trainer options Lightning accepts but cannot run with: option -> smallest allowed value.
TRAINER_MINIMA = {"accumulate_grad_batches": 1}


def _report(err: BaseException) -> int:
    """Print the one-line error and how to see the traceback; return the exit status."""
    sys.stderr.write(f"{PROG}: error: {describe_error(err)}\n")
    sys.stderr.write(f"{PROG}: for the full traceback set {TRACEBACK_ENV}=1 or add {TRACEBACK_FLAG}\n")
    return exit_status(err)


class PPPLightningCLI(LightningCLI):
    """LightningCLI that checks settings early and cleans up after a run that fails in setup.

    - A ``--ckpt_path`` is read before anything is built: a missing, truncated or corrupt file
      stops with its path. If its saved hyperparameters differ from the configured model's, the
      run is refused naming the keys, unless ``--use_checkpoint_hparams=true`` (then the
      checkpoint's hyperparameters replace the configured ones, as plain LightningCLI does).
    - Trainer options Lightning would only trip on at the first step (``accumulate_grad_batches
      < 1``) are refused before any object is built.
    - Under ``fast_dev_run`` no checkpoint is written (not even ``save_last``'s ``last.ckpt``).
    - A run that fails before completing a batch leaves no W&B run or run folder behind.
    - Options are never abbreviated (``--trainer.max_epoch`` is refused as unknown, not taken as
      ``max_epochs``), in every subcommand.
    - A value a class refuses while the configuration is instantiated is a configuration error
      (exit status 2), like the parser's own.
    - ``--trainer.default_root_dir`` must be a folder that can be created and written (else exit
      status 2 before any work); the default W&B logger then saves there instead of ``runs/``
      (unless its ``save_dir`` or ``dir`` was set).

    Args:
        args: command-line arguments (``None``: ``sys.argv``).
        **kwargs: :class:`~pytorch_lightning.cli.LightningCLI` arguments; they override the
            toolkit's defaults (any LightningModule/DataModule by class path, W&B logger, seed 0).
    """

    def __init__(self, args: Optional[list[str]] = None, **kwargs: Any) -> None:
        defaults: dict[str, Any] = {
            "model_class": pl.LightningModule,
            "trainer_class": PPPTrainer,
            "datamodule_class": pl.LightningDataModule,
            "subclass_mode_model": True,
            "subclass_mode_data": True,
            "save_config_callback": RunConfigCallback,  # config.yaml, and the whole config to every logger
            "save_config_kwargs": {"overwrite": True},
            "seed_everything_default": 0,
            # Lightning's bar writes a line per refresh into a log file: live in a terminal only
            "trainer_defaults": {"logger": WANDB_LOGGER, "enable_progress_bar": interactive()},
            "parser_kwargs": {
                "exit_on_error": False,
                "prog": PROG,
                "allow_abbrev": False,
                **{subcommand: {"allow_abbrev": False} for subcommand in self.subcommands()},
            },
        }
        self._instantiating = False  # from before_instantiate_classes to after_instantiate_classes
        try:
            super().__init__(args=args, **{**defaults, **kwargs})
        except Exception as err:
            if self._instantiating:  # a configured value refused by a class: a configuration error
                mark_usage_error(err)
            raise

    @staticmethod
    @override
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "audit": {"model", "datamodule"}, "calibrate": {"model", "datamodule"}}

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            f"--{USE_CHECKPOINT_HPARAMS}",
            type=bool,
            default=False,
            help="With --ckpt_path: use the model hyperparameters saved in the checkpoint instead of refusing "
            "to run when they differ from the configured model's.",
        )

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # main() reads sys.argv itself: skip LightningCLI's warning about args given twice.
        self.config = parser.parse_args(args)

    # Private LightningCLI step (since pytorch-lightning 2.5.5) that applies --ckpt_path's hyperparameters.
    @override
    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        path = local_checkpoint(config.get("ckpt_path")) if config else None
        if path is None:
            return
        saved = read_checkpoint(path, config.get("weights_only")).get("hyper_parameters") or {}
        if config.get(USE_CHECKPOINT_HPARAMS):
            self._use_checkpoint_hparams(subcommand, saved)
            return
        differences = checkpoint_hparams_differences(saved, configured_model(self.parser, self.config, subcommand))
        if differences:
            raise ValueError(
                f"--ckpt_path={path} was saved with other model hyperparameters than the configured model's: "
                f"{'; '.join(differences)}. Configure the same model, or add --{USE_CHECKPOINT_HPARAMS}=true "
                "to use the checkpoint's."
            )

    def _use_checkpoint_hparams(self, subcommand: str, saved: dict[str, Any]) -> None:
        """Replace the configured model's arguments (and class, if saved) by the checkpoint's."""
        init_args = {key: value for key, value in saved.items() if not key.startswith("_")}
        class_path = saved.get("_class_path") or self.config[subcommand].model.class_path
        model = {"class_path": class_path, "init_args": init_args}
        self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)

    @override
    def before_instantiate_classes(self) -> None:
        self._instantiating = True
        trainer = self._get(self.config, "trainer") or {}
        for option, minimum in TRAINER_MINIMA.items():
            value = trainer.get(option)
            if value is not None and value < minimum:
                raise ValueError(f"trainer.{option}={value} is not allowed; allowed: >= {minimum}")
        root_dir = trainer.get("default_root_dir")
        if root_dir is not None:
            writable_folder(root_dir, "--trainer.default_root_dir")
            self._default_logger_in(trainer, str(root_dir))

    @staticmethod
    def _default_logger_in(trainer: Any, root_dir: str) -> None:
        """Point a W&B logger still saving to the default ``runs`` folder at ``root_dir``."""
        logger = trainer.get("logger")
        loggers = logger if isinstance(logger, list) else [logger]
        for entry in loggers:
            class_path = str(entry.get("class_path", "")) if hasattr(entry, "get") else ""
            init_args = entry.get("init_args") if class_path else None
            if not class_path.endswith("WandbLogger") or init_args is None or init_args.get("dir") is not None:
                continue
            if init_args.get("save_dir") == DEFAULT_SAVE_DIR:
                init_args["save_dir"] = root_dir

    @override
    def after_instantiate_classes(self) -> None:
        self._instantiating = False
        if not self.trainer.fast_dev_run:
            return
        # Lightning skips every checkpoint under fast_dev_run except save_last's at the end of training.
        for callback in self.trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last:
                callback.save_last = False
                rank_zero_info("fast_dev_run: ModelCheckpoint writes no last.ckpt")

    @override
    def _run_subcommand(self, subcommand: str) -> None:
        with undone_if_no_batch_completes(self.trainer):
            super()._run_subcommand(subcommand)


def _traceback_requested(argv: list[str]) -> bool:
    return TRACEBACK_FLAG in argv or os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0")


def main(args: Optional[list[str]] = None) -> None:
    """Run ``fit``, ``validate``, ``test``, ``predict``, ``audit`` or ``calibrate`` from YAML configs and flags.

    ``audit`` and ``calibrate`` are :class:`~ppp_lightning.lightning.commands.PPPTrainer`'s: an attack suite
    with positive controls against the model and its ``PartialPerturbation``, and the smallest
    protective noise of that defense family.

    Any LightningModule and LightningDataModule can be chosen with ``class_path`` (ours are
    ``ppp_lightning.ImageClassifier`` and the classes in ``datamodules``). Runs log to W&B
    (offline unless logged in) under ``runs/``; re-running in the same folder overwrites the saved
    ``config.yaml`` instead of failing.

    A failure (a bad value in the configuration, a bad data or checkpoint file, an error during
    the run) prints one line, ``ppp-lightning: error: <message>``, with the toolkit's message
    naming the bad value, and exits with status 2 for a command-line or configuration error (the
    parser's, a value a class refuses while the configuration is built, a subcommand's argument
    refused before any work) or 1 for a failure during the run (bad data or checkpoint files
    included). The
    full traceback is shown instead when the environment variable ``PPP_LIGHTNING_TRACEBACK=1`` is
    set or ``--traceback`` is given (anywhere on the command line). A run that fails before
    completing a batch leaves no W&B run and no run folder behind. W&B's server gets
    ``WANDB_INIT_TIMEOUT`` seconds to answer (20 unless set); an unreachable one ends the run with a
    line naming the host and ``WANDB_MODE=offline``.

    ``--ckpt_path`` refuses a checkpoint whose saved model hyperparameters differ from the
    configured model's and names the keys; ``--use_checkpoint_hparams=true`` uses the checkpoint's.

    Args:
        args: command-line arguments; ``None`` reads ``sys.argv``.

    Raises:
        SystemExit: with status 1 or 2 after printing the error (0 after ``--help``), 3 when
            ``audit --fail_on_leak=true`` found a leak.
    """
    argv = list(sys.argv[1:] if args is None else args)
    show_traceback = _traceback_requested(argv)
    argv = [arg for arg in argv if arg != TRACEBACK_FLAG]
    use_offline_wandb_unless_logged_in()
    use_short_wandb_init_timeout()  # an unreachable W&B server fails in seconds, not minutes
    try:
        PPPLightningCLI(args=argv)
    except LeakFound as leak:
        sys.stderr.write(f"{PROG}: leak found: {leak}\n")
        raise SystemExit(LEAK_EXIT_STATUS) from None
    except Exception as err:
        if show_traceback:
            raise
        finish_wandb(quiet=False)  # its closing notes first: our error is the last line on screen
        raise SystemExit(_report(err)) from None
