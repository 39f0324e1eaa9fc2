"""Pure functions of federated learning: the shared gradient, IID partitions, per-client seeds.

Nothing here imports Flower, so the server-side arithmetic is testable on its own.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler, Subset

__all__ = [
    "client_seed",
    "decode_batch",
    "encode_batch",
    "iid_indices",
    "partition_loader",
    "shared_gradient",
]


def shared_gradient(
    global_weights: Mapping[str, Tensor], client_weights: Mapping[str, Tensor], lr: float
) -> dict[str, Tensor]:
    """The gradient a FedSGD client shared: ``-(w_client - w_global) / lr``.

    Exact for one local step of plain SGD (no momentum, no weight decay); for several steps or
    another optimizer it is only the average descent direction. Integer tensors (step counters
    such as BatchNorm's ``num_batches_tracked``) are skipped; floating buffers (running
    statistics) are returned like parameters, so restrict the result to the model's parameter
    names for the gradient proper.

    Args:
        global_weights: the weights the server sent, by name.
        client_weights: the weights the client returned, by the same names.
        lr: the client's learning rate.

    Returns:
        ``float32`` (or wider) tensors by name, in the order of ``global_weights``.

    Raises:
        ValueError: if ``lr`` is not positive or the names or shapes differ.
    """
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if set(global_weights) != set(client_weights):
        missing = sorted(set(global_weights) ^ set(client_weights))
        raise ValueError(f"global and client weights differ in names: {missing}")
    gradient = {}
    for name, before in global_weights.items():
        after = client_weights[name]
        if before.shape != after.shape:
            raise ValueError(f"{name}: global shape {tuple(before.shape)} != client shape {tuple(after.shape)}")
        if before.is_floating_point():
            # Subtract first: the difference of two close float32 values is exact.
            gradient[name] = (before - after.to(before)).div_(lr)
    return gradient


def iid_indices(num_items: int, num_partitions: int, partition_id: int, seed: int = 0) -> list[int]:
    """Indices of one IID partition: a seeded shuffle of ``range(num_items)`` cut into near-equal parts.

    Args:
        num_items: size of the dataset.
        num_partitions: number of clients.
        partition_id: this client's partition, ``0 <= partition_id < num_partitions``.
        seed: seed of the shuffle (the same on every client, so the partitions are disjoint).

    Raises:
        ValueError: if the partition is out of range or there are fewer items than partitions.
    """
    if not 0 <= partition_id < num_partitions:
        raise ValueError(f"partition_id={partition_id}; allowed: 0 <= partition_id < num_partitions={num_partitions}")
    if num_items < num_partitions:
        raise ValueError(f"{num_items} items cannot fill num_partitions={num_partitions} partitions")
    order = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    return order.tensor_split(num_partitions)[partition_id].tolist()


def partition_loader(loader: DataLoader, num_partitions: int, partition_id: int, seed: int = 0) -> DataLoader:
    """A loader over one IID partition of ``loader``'s dataset, batched like ``loader``.

    Works for any map-style datamodule loader; it keeps the batch size, workers and collate
    function and shuffles only if ``loader`` does.

    Args:
        loader: a datamodule's loader (e.g. ``datamodule.train_dataloader()``).
        num_partitions: number of clients.
        partition_id: this client's partition.
        seed: seed of the partition (see :func:`iid_indices`).

    Raises:
        ValueError: if the loader has no batch size (a batch sampler) or the partition is invalid.
    """
    if loader.batch_size is None:
        raise ValueError("partition_loader needs a loader with a batch_size, not a custom batch_sampler")
    subset = Subset(loader.dataset, iid_indices(len(loader.dataset), num_partitions, partition_id, seed))
    return DataLoader(
        subset,
        batch_size=loader.batch_size,
        shuffle=isinstance(loader.sampler, RandomSampler),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        drop_last=loader.drop_last,
        persistent_workers=loader.persistent_workers,
    )


def client_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A seed for one client in one round, derived from a base seed (distinct for every pair).

    Clients and rounds must not share noise streams: identical noise would not average out in
    FedAvg and would repeat across rounds.

    Args:
        seed: the configured base seed.
        server_round: the round, from 1.
        partition_id: the client's partition.
    """
    return int(np.random.SeedSequence([seed, server_round, partition_id]).generate_state(1)[0])


def encode_batch(images: Tensor, labels: Tensor) -> bytes:
    """Images and labels as bytes, for a Flower record (the simulation's ground truth, see :func:`decode_batch`).

    Args:
        images: ``(N, C, H, W)``.
        labels: ``(N,)``.
    """
    buffer = io.BytesIO()
    torch.save({"images": images.detach().cpu(), "labels": labels.detach().cpu()}, buffer)
    return buffer.getvalue()


def decode_batch(data: bytes) -> tuple[Tensor, Tensor]:
    """The images and labels of :func:`encode_batch` (loaded without unpickling code)."""
    batch = torch.load(io.BytesIO(data), weights_only=True)
    return batch["images"], batch["labels"]
