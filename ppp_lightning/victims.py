"""Which images an attack targets and the trivial reconstruction it must beat: one place for all consumers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["FLOOR_IMAGES", "VictimPool", "draw_victims", "floor_image", "images_at", "victim_indices", "victim_pool"]

# Images averaged into the trivial reconstruction: enough for a stable mean, cheap on any dataset.
FLOOR_IMAGES = 2000


def draw_victims(dataset: Any, count: int, seed: int, stratified: bool = False) -> tuple[Tensor, Tensor]:
    """A fixed, seeded set of training images and their labels.

    Args:
        dataset: indexable, ``dataset[i] -> (image, label, ...)``.
        count: how many images; at most ``len(dataset)``.
        seed: seed of the draw (the same seed gives the same images).
        stratified: take the classes in turn (as equal counts as ``count`` allows), each class's
            images in the seeded order, so no class dominates a small set of victims.

    Returns:
        ``(images (count, C, H, W), labels (count,))``.

    Raises:
        ValueError: if ``count`` is not in ``[1, len(dataset)]``.
    """
    return images_at(dataset, victim_indices(dataset, count, seed, stratified))


def victim_indices(
    dataset: Any, count: int, seed: int, stratified: bool = False, exclude: Sequence[int] = ()
) -> list[int]:
    """The dataset indices :func:`draw_victims` draws, never one of ``exclude``.

    Without ``exclude`` these are exactly :func:`draw_victims`' images; with it, the same seeded
    order with those indices left out (e.g. tuning victims apart from the audited ones).

    Args:
        dataset: indexable, ``dataset[i] -> (image, label, ...)``.
        count: how many indices.
        seed: seed of the draw.
        stratified: take the classes in turn (see :func:`draw_victims`).
        exclude: indices never drawn.

    Raises:
        ValueError: if ``count`` is not in ``[1, len(dataset)]`` less the excluded indices.
    """
    excluded = set(exclude)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    order = [index for index in order if index not in excluded]
    if not 1 <= count <= len(order):
        less = f" less {len(dataset) - len(order)} excluded" if excluded else ""
        raise ValueError(f"count={count} victims; allowed: 1 to {len(order)} (the dataset's size{less})")
    if stratified:
        order = _round_robin(order, [int(dataset[i][1]) for i in order])
    return order[:count]


def images_at(dataset: Any, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
    """``(images (N, C, H, W), labels (N,))`` of the dataset's items at ``indices``."""
    images, labels = zip(*(dataset[i][:2] for i in indices))
    return torch.stack(images), torch.as_tensor(labels)


def _round_robin(order: list[int], labels: list[int]) -> list[int]:
    """``order`` rearranged to visit the classes in turn, keeping each class's own order."""
    by_class: dict[int, list[int]] = {}
    for index, label in zip(order, labels):
        by_class.setdefault(label, []).append(index)
    queues = [by_class[label] for label in sorted(by_class)]
    return [queue[rank] for rank in range(max(map(len, queues))) for queue in queues if rank < len(queue)]


def floor_image(dataset: Any, limit: int = FLOOR_IMAGES) -> Tensor:
    """The mean training image: the trivial reconstruction every attack must beat.

    Averages up to ``limit`` evenly spaced images (no random draw, and no bias towards the first
    classes of a class-sorted dataset).

    Args:
        dataset: indexable, ``dataset[i] -> (image, ...)``.
        limit: the most images averaged.

    Raises:
        ValueError: if the dataset is empty.
    """
    if len(dataset) == 0:
        raise ValueError("the dataset is empty: no mean image to use as the floor")
    indices = torch.linspace(0, len(dataset) - 1, min(len(dataset), limit)).round().long().unique()
    return torch.stack([dataset[int(i)][0] for i in indices]).mean(0)


class VictimPool(NamedTuple):
    """What attacks need from a datamodule: the training set victims come from and its normalisation."""

    train_set: Any
    mean: tuple[float, ...]
    std: tuple[float, ...]
    one_channel: bool


def victim_pool(datamodule: Any, user: str) -> VictimPool:
    """A set-up datamodule's ``train_set``, ``mean``, ``std`` and ``one_channel`` (defaults 0, 1, false).

    Args:
        datamodule: any datamodule after ``setup("fit")`` (the toolkit's have all four).
        user: who needs it, for the error message.

    Raises:
        ValueError: if there is no datamodule or it has no ``train_set``.
    """
    if getattr(datamodule, "train_set", None) is None:
        raise ValueError(f"{user} needs a datamodule with a train_set (the victims' pool); use one of datamodules")
    return VictimPool(
        datamodule.train_set,
        tuple(getattr(datamodule, "mean", (0.0,))),
        tuple(getattr(datamodule, "std", (1.0,))),
        bool(getattr(datamodule, "one_channel", False)),
    )
