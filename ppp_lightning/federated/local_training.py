"""A client's work in one round, with Lightning only: train or evaluate on its IID partition.

The Flower ClientApp (:mod:`ppp_lightning.federated.client_app`) is a thin shell around these.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from jsonargparse import Namespace
from torch import Tensor
from typing_extensions import override

from ppp_lightning.federated.config import FederationSettings, instantiate
from ppp_lightning.federated.core import client_seed, partition_loader
from ppp_lightning.seeding import seeded

__all__ = ["evaluate_locally", "train_locally"]

# A quiet Trainer that writes nothing: the server keeps the run's records.
_TRAINER_DEFAULTS = {
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
    "limit_val_batches": 0,
    "log_every_n_steps": 1,  # local training is a few steps: report every step's metrics (perturbation/* too)
}


def train_locally(
    config: Namespace, weights: Mapping[str, Tensor], partition_id: int, num_partitions: int, server_round: int
) -> tuple[dict[str, Tensor], int, dict[str, float], Optional[tuple[Tensor, Tensor]]]:
    """Train the configured model from ``weights`` on one partition with the configured callbacks.

    Local training runs ``federation.local_steps`` optimizer steps (or ``local_epochs`` epochs)
    with a Lightning ``Trainer`` and the YAML's ``callbacks`` (e.g. ``PartialPerturbation``).
    Everything random in it (shuffling, PRECODE's samples) and every callback's ``seed`` init
    argument are seeded per client and round with :func:`~ppp_lightning.federated.core.client_seed`,
    inside :func:`~ppp_lightning.seeding.seeded`: the caller's RNG streams are left alone.

    Args:
        config: the experiment (see :mod:`ppp_lightning.federated.config`), not instantiated.
        weights: the global model's ``state_dict``.
        partition_id: this client's IID partition of the training set.
        num_partitions: number of partitions (clients).
        server_round: the round, from 1.

    Returns:
        The trained ``state_dict`` (CPU tensors), the partition's number of training examples,
        the Trainer's logged metrics as floats, and with ``federation.share_truth`` the images
        and labels of every local training batch, in order (``None`` without).
    """
    seed = client_seed(config.federation.seed, server_round, partition_id)
    config = _seeded_callbacks(config, server_round, partition_id)
    with seeded(seed):
        experiment = instantiate(config)
        settings = experiment.federation
        model = _with_weights(experiment.model, weights)
        experiment.data.setup("fit")
        loader = partition_loader(experiment.data.train_dataloader(), num_partitions, partition_id, settings.seed)
        batches = _Batches() if settings.share_truth else None
        callbacks = experiment.callbacks + ([] if batches is None else [batches])
        trainer = _trainer(experiment, callbacks=callbacks, **_budget(settings))
        trainer.fit(model, train_dataloaders=loader)
    trained = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
    return trained, len(loader.dataset), _floats(trainer.callback_metrics), None if batches is None else batches.concatenated()


def evaluate_locally(
    config: Namespace, weights: Mapping[str, Tensor], partition_id: int, num_partitions: int, server_round: int
) -> tuple[int, dict[str, float]]:
    """Validate the model with ``weights`` on this client's partition of the validation set.

    Args:
        config: the experiment, not instantiated.
        weights: the global model's ``state_dict``.
        partition_id: this client's partition.
        num_partitions: number of partitions (clients).
        server_round: the round, from 1 (seeds PRECODE's samples, as in training).

    Returns:
        The partition's number of validation examples and the validation metrics as floats.
    """
    with seeded(client_seed(config.federation.seed, server_round, partition_id)):
        experiment = instantiate(config)
        model = _with_weights(experiment.model, weights)
        experiment.data.setup("validate")
        seed = experiment.federation.seed
        loader = partition_loader(experiment.data.val_dataloader(), num_partitions, partition_id, seed)
        trainer = _trainer(experiment, limit_val_batches=None)
        metrics = trainer.validate(model, dataloaders=loader, verbose=False)[0]
    return len(loader.dataset), _floats(metrics)


class _Batches(pl.Callback):
    """Keeps the images and labels of every training batch (the simulation's ground truth)."""

    def __init__(self) -> None:
        self.images: list[Tensor] = []
        self.labels: list[Tensor] = []

    @override
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self.images.append(batch[0].detach().cpu().clone())
        self.labels.append(batch[1].detach().cpu().clone())

    def concatenated(self) -> tuple[Tensor, Tensor]:
        return torch.cat(self.images), torch.cat(self.labels)


def _seeded_callbacks(config: Namespace, server_round: int, partition_id: int) -> Namespace:
    """A copy of ``config`` whose callbacks' ``seed`` arguments are derived per client and round."""
    config = config.clone()
    for callback in config.callbacks or []:
        if isinstance(callback.get("init_args"), Namespace) and "seed" in callback.init_args:
            callback.init_args.seed = client_seed(callback.init_args.seed, server_round, partition_id)
    return config


def _budget(settings: FederationSettings) -> dict[str, int]:
    """The local Trainer's length: ``local_steps`` optimizer steps, else ``local_epochs`` epochs."""
    if settings.local_steps:
        return {"max_steps": settings.local_steps, "max_epochs": -1}
    return {"max_epochs": settings.local_epochs}


def _with_weights(model: pl.LightningModule, weights: Mapping[str, Tensor]) -> pl.LightningModule:
    model.load_state_dict(weights)
    return model


def _trainer(experiment: Namespace, **overrides: Any) -> pl.Trainer:
    kwargs = {**_TRAINER_DEFAULTS, "default_root_dir": experiment.federation.run_dir, **overrides}
    return pl.Trainer(**{**kwargs, **experiment.trainer})


def _floats(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in metrics.items()}
