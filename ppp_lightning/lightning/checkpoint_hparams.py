"""Compare the hyperparameters a checkpoint saved with the configured model's."""

from __future__ import annotations

from typing import Any

import yaml
from jsonargparse import ArgumentParser, Namespace

__all__ = ["checkpoint_hparams_differences", "configured_model"]


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


def configured_model(parser: ArgumentParser, config: Namespace, subcommand: str) -> dict[str, Any]:
    """The configured model as the CLI saves it in checkpoints: ``{"_class_path": ..., **init_args}``.

    Args:
        parser: the CLI's parser (its dump resolves links and defaults as the saved config does).
        config: the parsed configuration.
        subcommand: the subcommand whose ``model`` is wanted.
    """
    dump = yaml.safe_load(parser.dump(config, skip_link_targets=False, skip_none=False))
    model = dump[subcommand].get("model") or {}
    if "class_path" not in model:
        return model
    return {"_class_path": model["class_path"], **(model.get("init_args") or {}), **(model.get("dict_kwargs") or {})}
