"""The ``ppp-lightning`` command: Lightning's CLI over any LightningModule and datamodule.

On top of :class:`~pytorch_lightning.cli.LightningCLI` it refuses bad settings before any
object is built or any step runs, prints one line per failure instead of a traceback, and leaves
nothing behind when a run fails during setup.
"""

from __future__ import annotations

import contextlib
import io
import netrc
import os
import re
import shutil
import sys
from argparse import ArgumentError
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

import pytorch_lightning as pl
import yaml
from jsonargparse import Namespace
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from typing_extensions import override

from ppp_lightning.checkpoints import CheckpointFileError, local_checkpoint, read_checkpoint
from ppp_lightning.commands import LeakFound, PPPTrainer

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
# Trainer options Lightning accepts but cannot run with: option -> smallest allowed value.
TRAINER_MINIMA = {"accumulate_grad_batches": 1}
# Modules that only wrap or re-raise errors while parsing and instantiating the configuration.
WRAPPER_MODULES = ("jsonargparse", "argparse", "pytorch_lightning.cli")
OUR_PACKAGES = ("ppp_lightning", "callbacks", "datamodules")
_PARSER_KEY = re.compile(r'^Parser key "([^"]+)"')
_CLASS_PATH = re.compile(r"^Problem with given class_path '([^']+)'")
_SHOWN_LINES = 3
# Loggers whose run folders a failed setup removes.
FOLDER_LOGGERS = (WandbLogger, TensorBoardLogger, CSVLogger)


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


def _plain(value: Any) -> Any:
    """``value`` with namespaces as dicts and tuples as lists, so config and checkpoint compare."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def checkpoint_hparams_differences(saved: dict[str, Any], configured: dict[str, Any]) -> list[str]:
    """Name every hyperparameter a checkpoint saved with another value than the configuration's.

    Args:
        saved: the checkpoint's ``hyper_parameters`` (``_class_path`` included when the CLI saved it).
        configured: the configured model as ``{"_class_path": ..., **init_args}``.

    Returns:
        ``"key: checkpoint <value>, config <value>"`` for each difference, sorted by key.
    """
    missing = "<not set>"
    differences = []
    for key in sorted(k for k in saved if k != "_instantiator"):
        old, new = _plain(saved[key]), _plain(configured.get(key, missing))
        if old != new:
            name = "class_path" if key == "_class_path" else key
            differences.append(f"{name}: checkpoint {old!r}, config {new!r}")
    return differences


# --------------------------------------------------------------------------- failed runs


def _finish_wandb(quiet: bool) -> None:
    """Finish the process's W&B run, if any, as failed; ``quiet`` swallows its closing notes."""
    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    sink = io.StringIO() if quiet else None
    with contextlib.redirect_stdout(sink or sys.stdout), contextlib.redirect_stderr(sink or sys.stderr):
        wandb.finish(exit_code=1)


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

    on_train_batch_end = on_validation_batch_end = on_test_batch_end = on_predict_batch_end = _note


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
        return dirs

    def _links(self) -> list[Path]:
        return [path for root in self._save_dirs() for path in (root / "wandb").glob("*") if path.is_symlink()]

    def _config_file(self) -> Optional[Path]:
        savers = [cb for cb in self.trainer.callbacks if isinstance(cb, SaveConfigCallback)]
        log_dir = self.trainer.log_dir
        return Path(log_dir, savers[0].config_filename) if savers and log_dir else None

    def undo(self) -> None:
        """Remove what the run created and restore what it replaced."""
        own_dirs = [path for path in self._own_dirs() if path.is_dir() and not self.existed.get(path, False)]
        if _wandb_run_dir(self._save_dirs()) in own_dirs:
            _finish_wandb(quiet=True)  # before deleting its folder: W&B writes on finishing
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


# --------------------------------------------------------------------------- error messages


def _cause_chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    current: Optional[BaseException] = err
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return chain


def _frames(err: BaseException) -> list[Any]:
    """The frames of ``err``'s traceback, outermost first."""
    frames, tb = [], err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _module(frame: Any) -> str:
    return frame.f_globals.get("__name__", "")


def _is_wrapper(err: BaseException) -> bool:
    """Whether ``err`` was raised by the parsing machinery (and only wraps the real failure)."""
    frames = _frames(err)
    return isinstance(err, ArgumentError) or bool(frames) and _module(frames[-1]).startswith(WRAPPER_MODULES)


def _config_location(wrappers: list[BaseException]) -> str:
    """The configuration key (``model.init_args.arch``) and class path jsonargparse's messages name."""
    keys: list[str] = []
    class_path, in_init_args = "", False
    for err in wrappers:
        first_line = next(iter(str(err).strip().splitlines()), "")
        if (key := _PARSER_KEY.match(first_line)) and not (keys and keys[-1].endswith(key.group(1))):
            keys.append(f"init_args.{key.group(1)}" if in_init_args else key.group(1))
            in_init_args = False
        elif path := _CLASS_PATH.match(first_line):
            class_path, in_init_args = path.group(1), True
    location = ".".join(keys)
    return f"{location} ({class_path})" if class_path else location


def _building_class(err: BaseException) -> str:
    """The class whose ``__init__`` raised ``err`` while the configuration was instantiated, or ``""``."""
    frames = _frames(err)
    wrapper_positions = [i for i, frame in enumerate(frames) if _module(frame).startswith(WRAPPER_MODULES)]
    if not wrapper_positions:
        return ""
    for frame in frames[wrapper_positions[-1] + 1 :]:
        if frame.f_code.co_name == "__init__" and "self" in frame.f_locals:
            return type(frame.f_locals["self"]).__qualname__
    return ""


def _message(err: BaseException, wrapper: bool) -> str:
    """``err``'s text (first line for a parser message), prefixed by its type when that helps."""
    lines = str(err).strip().splitlines() or [type(err).__name__]
    text = "\n".join(lines[: 1 if wrapper else _SHOWN_LINES])
    ours = type(err).__module__.startswith(OUR_PACKAGES)
    if wrapper or ours or isinstance(err, (ValueError, TypeError, MisconfigurationException)):
        return text
    return f"{type(err).__name__}: {text}"


def describe_error(err: BaseException) -> str:
    """Say in one line what went wrong: the toolkit's own message, not the parser's wrapping.

    jsonargparse wraps a bad value in several layers ("Does not validate against any of the Union
    subtypes", ...). The message shown is the first exception in the cause chain that the parser
    did not raise (a class's own ``ValueError``), else the innermost parser message, prefixed by
    the configuration key or the class being built.

    Args:
        err: the exception that ended the command.

    Returns:
        The message, at most a few lines.
    """
    chain = _cause_chain(err)
    wrappers = [e for e in chain if _is_wrapper(e)]
    real = next((e for e in chain if not _is_wrapper(e)), chain[-1])
    where = _config_location(wrappers) or _building_class(real)
    message = _message(real, wrapper=_is_wrapper(real))
    return f"{where}: {message}" if where else message


def _report(err: BaseException) -> int:
    """Print the one-line error and how to see the traceback; return the exit status."""
    is_usage_error = any(isinstance(e, ArgumentError) for e in _cause_chain(err))
    sys.stderr.write(f"{PROG}: error: {describe_error(err)}\n")
    sys.stderr.write(f"{PROG}: for the full traceback set {TRACEBACK_ENV}=1 or add {TRACEBACK_FLAG}\n")
    return 2 if is_usage_error else 1


# --------------------------------------------------------------------------- the CLI


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
            "save_config_kwargs": {"overwrite": True},
            "seed_everything_default": 0,
            "trainer_defaults": {"logger": WANDB_LOGGER},
            "parser_kwargs": {"exit_on_error": False, "prog": PROG},
        }
        super().__init__(args=args, **{**defaults, **kwargs})

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

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # main() reads sys.argv itself: skip LightningCLI's warning about args given twice.
        self.config = parser.parse_args(args)

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
        differences = checkpoint_hparams_differences(saved, self._configured_model(subcommand))
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

    def _configured_model(self, subcommand: str) -> dict[str, Any]:
        """The configured model as the CLI saves it in checkpoints: ``{"_class_path": ..., **init_args}``."""
        dump = yaml.safe_load(self.parser.dump(self.config, skip_link_targets=False, skip_none=False))
        model = dump[subcommand].get("model") or {}
        if "class_path" not in model:
            return model
        return {"_class_path": model["class_path"], **(model.get("init_args") or {}), **(model.get("dict_kwargs") or {})}

    def before_instantiate_classes(self) -> None:
        trainer = self._get(self.config, "trainer") or {}
        for option, minimum in TRAINER_MINIMA.items():
            value = trainer.get(option)
            if value is not None and value < minimum:
                raise ValueError(f"trainer.{option}={value} is not allowed; allowed: >= {minimum}")

    def after_instantiate_classes(self) -> None:
        if not self.trainer.fast_dev_run:
            return
        # Lightning skips every checkpoint under fast_dev_run except save_last's at the end of training.
        for callback in self.trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.save_last:
                callback.save_last = False
                rank_zero_info("fast_dev_run: ModelCheckpoint writes no last.ckpt")

    def _run_subcommand(self, subcommand: str) -> None:
        footprint = RunFootprint(self.trainer)
        progress = _BatchSeen()
        self.trainer.callbacks.append(progress)
        try:
            super()._run_subcommand(subcommand)
        except Exception:
            if not progress.seen:
                footprint.undo()
            raise


def _traceback_requested(argv: list[str]) -> bool:
    return TRACEBACK_FLAG in argv or os.environ.get(TRACEBACK_ENV, "").strip() not in ("", "0")


def main(args: Optional[list[str]] = None) -> None:
    """Run ``fit``, ``validate``, ``test``, ``predict``, ``audit`` or ``calibrate`` from YAML configs and flags.

    ``audit`` and ``calibrate`` are :class:`~ppp_lightning.commands.PPPTrainer`'s: an attack suite
    with positive controls against the model and its ``PartialPerturbation``, and the smallest
    protective noise of that defense family.

    Any LightningModule and LightningDataModule can be chosen with ``class_path`` (ours are
    ``ppp_lightning.ImageClassifier`` and the classes in ``datamodules``). Runs log to W&B
    (offline unless logged in) under ``runs/``; re-running in the same folder overwrites the saved
    ``config.yaml`` instead of failing.

    A failure (a bad value in the configuration, a bad data or checkpoint file, an error during
    the run) prints one line, ``ppp-lightning: error: <message>``, with the toolkit's message
    naming the bad value, and exits with status 2 (command-line/configuration errors) or 1. The
    full traceback is shown instead when the environment variable ``PPP_LIGHTNING_TRACEBACK=1`` is
    set or ``--traceback`` is given (anywhere on the command line). A run that fails before
    completing a batch leaves no W&B run and no run folder behind.

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
    try:
        PPPLightningCLI(args=argv)
    except LeakFound as leak:
        sys.stderr.write(f"{PROG}: leak found: {leak}\n")
        raise SystemExit(LEAK_EXIT_STATUS) from None
    except Exception as err:
        if show_traceback:
            raise
        _finish_wandb(quiet=False)  # its closing notes first: our error is the last line on screen
        raise SystemExit(_report(err)) from None
