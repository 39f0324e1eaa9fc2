"""Re-identification: does a reconstruction reveal *which* training image it came from?

For each victim, a pool of ``K`` training images of the same class (the victim and ``K - 1``
rivals drawn with a recorded seed). The reconstruction re-identifies the victim when the victim is its
nearest candidate by the sign-invariant correlation (:func:`~ppp_lightning.assessment.metrics.abs_ncc`).
Chance is ``1 / K``. A reconstruction that only shows the class (a blurry mean digit) does not
re-identify; one that shows this particular digit does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from ppp_lightning.assessment.metrics import abs_ncc, channel_view, to_unit_interval

__all__ = [
    "POOL_SIZE",
    "Reidentification",
    "Reidentifier",
    "check_pool_size",
    "reidentify",
    "same_class_pool",
    "without_copies",
]

POOL_SIZE = 100


def check_pool_size(size: int, name: str = "size") -> None:
    """Refuse a pool without rivals.

    Raises:
        ValueError: if ``size < 2``.
    """
    if size < 2:
        raise ValueError(f"{name}={size}; allowed: >= 2 (the victim and at least one other candidate)")


def same_class_pool(
    labels: Sequence[int], label: int, size: int = POOL_SIZE, seed: int = 0, exclude: Sequence[int] = ()
) -> list[int]:
    """Indices of up to ``size - 1`` training images of class ``label``: the victim's rivals.

    Args:
        labels: the label of every training image.
        label: the victim's class.
        size: ``K``, the pool's size with the victim; the whole class when it has fewer.
        seed: seed of the draw (recorded with the result).
        exclude: indices never drawn (the victim's own, when known).

    Raises:
        ValueError: if ``size < 2`` (no one to confuse the victim with).
    """
    check_pool_size(size)
    labels = torch.as_tensor(labels)
    others = torch.nonzero(labels == label).flatten()
    others = others[~torch.isin(others, torch.as_tensor(list(exclude), dtype=others.dtype))]
    order = torch.randperm(len(others), generator=torch.Generator().manual_seed(seed))
    return others[order[: size - 1]].tolist()


@dataclass(frozen=True)
class Reidentification:
    """Whether a reconstruction picked its victim out of a same-class pool.

    Args:
        reidentified: the victim is the nearest candidate.
        rank: the victim's rank among the candidates (0: nearest).
        pool_size: ``K``; chance is ``1 / K``.
        victim_score: the reconstruction's correlation with the victim.
        best_other_score: its highest correlation with another candidate.
    """

    reidentified: bool
    rank: int
    pool_size: int
    victim_score: float
    best_other_score: float

    @property
    def chance(self) -> float:
        """The probability of re-identifying by guessing, ``1 / K``."""
        return 1 / self.pool_size


def without_copies(rivals: Tensor, victim: Tensor) -> Tensor:
    """``rivals`` without the ones equal to ``victim`` (a rival draw that took the victim itself)."""
    return rivals[(rivals - victim).flatten(1).abs().amax(1) > 0]


def reidentify(reconstruction: Tensor, victim: Tensor, rivals: Tensor, one_channel: bool = False) -> Reidentification:
    """Whether the reconstruction is strictly nearer its victim than every rival, by the sign-invariant correlation.

    A tie counts against the victim, so a reconstruction that carries no information about it (a
    flat image correlates 0 with every candidate) identifies no one.

    Args:
        reconstruction: ``(C, H, W)`` in ``[0, 1]``.
        victim: ``(C, H, W)`` in ``[0, 1]``.
        rivals: ``(K - 1, C, H, W)`` in ``[0, 1]``, other images of the victim's class
            (:func:`same_class_pool`); copies of the victim among them are ignored.
        one_channel: score the channel means (:func:`~ppp_lightning.assessment.metrics.channel_view`).
    """
    rivals = without_copies(rivals, victim)
    pool = channel_view(torch.cat([victim[None], rivals]), one_channel)
    image = channel_view(reconstruction[None], one_channel).expand_as(pool)
    scores = abs_ncc(image, pool)
    rank = int((scores[1:] >= scores[0]).sum())  # ties go against the victim: a flat image identifies no one
    return Reidentification(rank == 0, rank, len(pool), float(scores[0]), float(scores[1:].max()))


class Reidentifier:
    """Re-identification against a training set: rivals drawn per victim class, scored in ``[0, 1]``.

    Args:
        dataset: the training set, items ``(normalised image, label)``.
        mean: the data's normalisation mean.
        std: the data's normalisation standard deviation.
        one_channel: the data has one true channel (score channel means).
        size: ``K``; chance is ``1 / K``.
        seed: seed of the rivals' draw (the same rivals for every victim of a class).
    """

    def __init__(
        self,
        dataset: Any,
        mean: Sequence[float],
        std: Sequence[float],
        one_channel: bool = False,
        size: int = POOL_SIZE,
        seed: int = 0,
    ) -> None:
        check_pool_size(size)
        self.dataset, self.mean, self.std = dataset, tuple(mean), tuple(std)
        self.one_channel, self.size, self.seed = one_channel, size, seed
        self._labels: Optional[list[int]] = None

    def __call__(self, reconstructions: Tensor, victims: Tensor, labels: Tensor) -> list[Reidentification]:
        """Re-identify every victim (normalised ``(N, C, H, W)``, reconstructions in the victims' order)."""
        images = to_unit_interval(reconstructions, self.mean, self.std).cpu()
        truth = to_unit_interval(victims, self.mean, self.std).cpu()
        return [
            reidentify(image, victim, to_unit_interval(self._rivals(label), self.mean, self.std), self.one_channel)
            for image, victim, label in zip(images, truth, labels.tolist())
        ]

    def candidates(self, victims: Tensor, labels: Tensor) -> list[Tensor]:
        """Every victim's ``K`` candidates, normalised: its rivals with the victim at a seeded position.

        What an attacker who holds the candidates (:mod:`~ppp_lightning.attacks.linkage`) picks from;
        the position is drawn so that no attack can win by taking the first candidate.
        """
        generator = torch.Generator().manual_seed(self.seed)
        pools = []
        for victim, label in zip(victims.cpu(), labels.tolist()):
            rivals = self._rivals(label)
            rivals = without_copies(rivals, victim)  # the victim once, wherever drawn
            position = int(torch.randint(len(rivals) + 1, (), generator=generator))
            pools.append(torch.cat([rivals[:position], victim[None], rivals[position:]]))
        return pools

    def _rivals(self, label: int) -> Tensor:
        """The normalised rivals of class ``label`` (the same for every victim of the class)."""
        if self._labels is None:  # one pass over the labels, on first use
            self._labels = [int(self.dataset[i][1]) for i in range(len(self.dataset))]
        indices = same_class_pool(self._labels, label, self.size, self.seed)
        return torch.stack([self.dataset[i][0] for i in indices])
