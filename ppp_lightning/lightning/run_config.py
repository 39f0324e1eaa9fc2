"""The run's configuration in its loggers: what the user chose, as ``--print_config`` shows it.

Lightning logs only the model's hyperparameters; :class:`RunConfigCallback` (the CLI's
``save_config_callback``) also logs the data, the trainer and its callbacks with their arguments,
as flat keys every logger can filter by (W&B's run config, TensorBoard's hparams), e.g.
``trainer.callbacks.PartialPerturbation.sigma`` or ``trainer.max_epochs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import yaml
from pytorch_lightning.cli import SaveConfigCallback
from typing_extensions import override

__all__ = ["RunConfigCallback", "flat_config"]

SCALARS = (str, int, float, bool, type(None))


def flat_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested configuration as flat, dot-joined keys with scalar (or list of scalars) values.

    A ``{"class_path": ..., "init_args": {...}}`` entry keeps its ``class_path`` and lists its
    arguments directly under its key (``model.lr``, not ``model.init_args.lr``). A list of such
    entries (the trainer's callbacks, several loggers) is keyed by each class's name, numbered
    from the second of a name on (``ModelCheckpoint``, ``ModelCheckpoint_1``); any other list of
    mappings by position.

    Args:
        config: the configuration (e.g. ``--print_config``'s YAML, loaded).
        prefix: prepended to every key (with a dot).

    Returns:
        Key -> value, e.g. ``{"trainer.callbacks.PartialPerturbation.sigma": 226.274, ...}``.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if key == "init_args" and isinstance(value, Mapping):
            flat.update(flat_config(value, prefix))
        elif isinstance(value, Mapping):
            flat.update(flat_config(value, name) if value else {name: None})
        elif isinstance(value, (list, tuple)) and any(isinstance(item, Mapping) for item in value):
            flat.update(flat_config(_keyed(value), name))
        elif isinstance(value, (list, tuple)):
            flat[name] = [item if isinstance(item, SCALARS) else str(item) for item in value]
        else:
            flat[name] = value if isinstance(value, SCALARS) else str(value)
    return flat


def _keyed(items: list[Any]) -> dict[str, Any]:
    """A list as a mapping: class entries by class name (numbered when repeated), anything else by position."""
    keyed: dict[str, Any] = {}
    for position, item in enumerate(items):
        if isinstance(item, Mapping) and isinstance(item.get("class_path"), str):
            name = item["class_path"].rsplit(".", 1)[-1]
            key, count = name, 1
            while key in keyed:
                key, count = f"{name}_{count}", count + 1
        else:
            key = str(position)
        keyed[key] = item
    return keyed


class RunConfigCallback(SaveConfigCallback):
    """LightningCLI's config file, and the whole configuration in every logger of the run.

    Writes ``config.yaml`` to the log folder as :class:`~pytorch_lightning.cli.SaveConfigCallback`
    does, then logs :func:`flat_config` of the configuration ``--print_config`` shows to each of
    the Trainer's loggers with ``log_hyperparams`` (W&B: the run config; TensorBoard: hparams).
    Runs on rank zero; under ``fast_dev_run`` Lightning adds no config callback (and logs nothing).
    """

    @override
    def save_config(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        config = flat_config(yaml.safe_load(self.parser.dump(self.config, skip_none=False)) or {})
        for logger in trainer.loggers:
            logger.log_hyperparams(config)
