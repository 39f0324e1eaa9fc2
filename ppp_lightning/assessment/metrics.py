"""Reconstruction quality: PSNR, SSIM, MSE, sign-invariant correlation, the trivial floor, success rate."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Optional

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from ppp_lightning.validation import check_number

__all__ = [
    "LEGIBLE_NCC",
    "METRICS",
    "ReconstructionMetrics",
    "abs_ncc",
    "channel_view",
    "image_scores",
    "is_success",
    "match_reconstructions",
    "to_unit_interval",
]

# Metric name -> whether higher is better.
METRICS = {"psnr": True, "ssim": True, "mse": False, "ncc": True, "lpips": False}
# The pixel rule's default: the largest channel-mean NCC that misses no reconstruction a blind
# labeller judged legible, over both labelled sets (312 items; docs/calibration.md).
LEGIBLE_NCC = 0.26


def is_success(values: Tensor, metric: str, threshold: float) -> Tensor:
    """Whether each reconstruction succeeded: the one rule every verdict uses.

    Args:
        values: ``(N,)`` scores of ``metric``.
        metric: one of :data:`METRICS`.
        threshold: at least this for metrics where higher is better, at most it otherwise.

    Returns:
        ``(N,)`` booleans.
    """
    return values >= threshold if METRICS[metric] else values <= threshold


def to_unit_interval(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Undo the normalisation ``(x - mean) / std`` and clamp to ``[0, 1]``.

    Args:
        images: ``(N, C, H, W)`` normalised images.
        mean: per-channel mean (one value for all channels allowed).
        std: per-channel standard deviation.
    """
    mean_ = images.new_tensor(tuple(mean)).view(-1, 1, 1)
    std_ = images.new_tensor(tuple(std)).view(-1, 1, 1)
    return (images.detach() * std_ + mean_).clamp(0, 1)


def abs_ncc(images: Tensor, truth: Tensor) -> Tensor:
    """Absolute normalised cross-correlation per image pair, in ``[0, 1]``.

    Sign-invariant: a contrast-inverted digit scores like the digit, a blank image scores 0.

    Args:
        images: ``(N, ...)``.
        truth: ``(N, ...)``.
    """
    a = images.flatten(1) - images.flatten(1).mean(1, keepdim=True)
    b = truth.flatten(1) - truth.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1).abs() / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)


def channel_view(images: Tensor, one_channel: bool) -> Tensor:
    """``(..., C, H, W)`` images as correlations see them: the channel mean for data with one true channel.

    MNIST repeated to three channels has one true channel; averaging a reconstruction's channels
    removes the independent noise an attack leaves in each, which would otherwise hide a legible digit.
    """
    return images.mean(-3, keepdim=True) if one_channel else images


def image_scores(images: Tensor, truth: Tensor, one_channel: bool = False) -> dict[str, Tensor]:
    """PSNR (dB), SSIM, MSE and :func:`abs_ncc` per image pair, for images in ``[0, 1]``.

    Args:
        images: ``(N, C, H, W)`` reconstructions in ``[0, 1]``.
        truth: ``(N, C, H, W)`` ground truth in ``[0, 1]``.
        one_channel: the correlation on the channel means (:func:`channel_view`).

    Returns:
        Metric name to an ``(N,)`` tensor (PSNR is ``inf`` for an exact reconstruction).
    """
    images, truth = images.detach().float(), truth.detach().float()
    return {
        "psnr": peak_signal_noise_ratio(images, truth, data_range=1.0, reduction="none", dim=(1, 2, 3)),
        "ssim": structural_similarity_index_measure(images, truth, data_range=1.0, reduction="none"),
        "mse": (images - truth).square().flatten(1).mean(1),
        "ncc": abs_ncc(channel_view(images, one_channel), channel_view(truth, one_channel)),
    }


def match_reconstructions(images: Tensor, truth: Tensor, batch_size: Optional[int] = None) -> Tensor:
    """The order of ``images`` that best matches ``truth`` (optimal assignment on MSE).

    Attacks on a batch return its images in any order; this pairs them before scoring.

    Args:
        images: ``(N, ...)`` reconstructions.
        truth: ``(N, ...)`` ground truth.
        batch_size: the images come from consecutive batches of this size (of one shared gradient
            each): pair only within a batch. ``None``: one batch.

    Returns:
        ``(N,)`` indices: ``images[order[i]]`` is matched to ``truth[i]``.
    """
    cost = torch.cdist(truth.detach().flatten(1).double(), images.detach().flatten(1).double()).square()
    if batch_size is not None:
        batch = torch.arange(len(truth), device=cost.device) // batch_size
        cost = cost + (batch[:, None] != batch[None, :]) * (cost.max() + 1) * len(truth)
    _, order = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(order, device=images.device)


class ReconstructionMetrics:
    """Score reconstructions against the ground truth on images mapped back to ``[0, 1]``.

    Every call matches reconstructions to ground truth (optimal assignment), scores each pair
    with PSNR, SSIM, MSE, the sign-invariant correlation (and LPIPS when enabled), scores the
    trivial reconstruction (the dataset's mean image) the same way so the floor is visible, and
    counts as successful the pairs whose ``success_metric`` reaches ``success_threshold``.

    The default, ``ncc >= LEGIBLE_NCC`` (0.26, on the channel means for data with one true
    channel), comes from two labelled sets (``docs/calibration.md``, 312 reconstructions, 164
    legible): it is the largest threshold that misses no legible one; 0.5 missed 14. The dataset's
    mean image also reaches ``ncc`` 0.63 (median) against single digits, so where a training set
    is at hand a reconstruction also has to identify its victim
    (:func:`~ppp_lightning.assessment.assess`): the victim must be nearer than 99 rivals of its class.

    Args:
        mean: the data's per-channel normalisation mean.
        std: the data's per-channel normalisation standard deviation.
        success_metric: one of :data:`METRICS`.
        success_threshold: the value at which a reconstruction succeeds (at least it for metrics
            where higher is better, at most it for ``mse`` and ``lpips``).
        lpips: also compute LPIPS (AlexNet); it needs the backbone's weights (a download), so it
            is off by default and skipped with a warning when they cannot be loaded.
        one_channel: the data has one true channel (a datamodule's ``one_channel``, e.g. MNIST):
            the correlation is taken on the channel means.

    Raises:
        ValueError: if ``success_metric`` is unknown, is ``lpips`` without ``lpips=True``, or a
            ``std`` is not positive.
        RuntimeError: if ``success_metric="lpips"`` and LPIPS cannot be loaded.
    """

    def __init__(
        self,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        success_metric: str = "ncc",
        success_threshold: float = LEGIBLE_NCC,
        lpips: bool = False,
        one_channel: bool = False,
    ) -> None:
        if success_metric not in METRICS or (success_metric == "lpips" and not lpips):
            raise ValueError(
                f"success_metric={success_metric!r}; allowed: {', '.join(METRICS)} (lpips only with lpips=True)"
            )
        for value in std:
            check_number("std", value, minimum=0, exclusive_minimum=True)
        check_number("success_threshold", success_threshold)
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.success_metric = success_metric
        self.success_threshold = success_threshold
        self.one_channel = one_channel
        self.lpips = _load_lpips() if lpips else None
        if success_metric == "lpips" and self.lpips is None:
            raise RuntimeError("success_metric='lpips' but LPIPS could not be loaded")

    def __call__(
        self,
        reconstructions: Tensor,
        truth: Tensor,
        floor_image: Optional[Tensor] = None,
        batch_size: Optional[int] = None,
    ) -> dict[str, Any]:
        """Score a batch of reconstructions.

        Args:
            reconstructions: ``(N, C, H, W)`` normalised reconstructions, in any order.
            truth: ``(N, C, H, W)`` normalised ground truth.
            floor_image: ``(C, H, W)`` normalised trivial reconstruction (the dataset's mean image);
                ``None`` uses the per-channel mean (a flat image).
            batch_size: reconstructions and truth come in consecutive batches of this size (one
                shared gradient each), matched within their batch (``None``: one batch).

        Returns:
            ``order`` (see :func:`match_reconstructions`), ``per_image`` (metric -> list, in the
            order of ``truth``), ``mean``, ``median`` and ``max`` over the batch, ``floor`` (mean
            scores of the trivial reconstruction), ``successes`` (list of bools), ``success_rate``,
            ``success_metric`` and ``success_threshold``.
        """
        images = to_unit_interval(reconstructions, self.mean, self.std)
        target = to_unit_interval(truth, self.mean, self.std)
        order = match_reconstructions(images, target, batch_size)
        scores = self._scores(images[order], target)
        if floor_image is None:
            floor_image = torch.zeros_like(truth[0])
        floor = self._scores(to_unit_interval(floor_image.expand_as(truth), self.mean, self.std), target)
        successes = is_success(scores[self.success_metric], self.success_metric, self.success_threshold)
        return {
            "order": order.tolist(),
            "per_image": {name: v.tolist() for name, v in scores.items()},
            "mean": {name: float(v.mean()) for name, v in scores.items()},
            "median": {name: float(v.median()) for name, v in scores.items()},
            "max": {name: float(v.max()) for name, v in scores.items()},
            "floor": {name: float(v.mean()) for name, v in floor.items()},
            "successes": successes.tolist(),
            "success_rate": float(successes.float().mean()),
            "success_metric": self.success_metric,
            "success_threshold": self.success_threshold,
        }

    def _scores(self, images: Tensor, truth: Tensor) -> dict[str, Tensor]:
        scores = image_scores(images, truth, self.one_channel)
        if self.lpips is not None:
            lpips = self.lpips.to(images.device)
            scores["lpips"] = torch.stack([lpips(a[None], b[None]) for a, b in zip(images, truth)]).detach()
        return scores


def _load_lpips() -> Optional[torch.nn.Module]:
    """torchmetrics' LPIPS on AlexNet, or ``None`` with a warning when its weights are unavailable."""
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).eval()
    except Exception as err:  # no network, no cached weights, missing optional packages
        warnings.warn(f"LPIPS disabled: its weights could not be loaded ({err})")
        return None
