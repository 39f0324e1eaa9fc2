"""Fully connected feature extractor of the PRECODE paper."""

from __future__ import annotations

import math

from torch import nn

__all__ = ["mlp_features"]


def mlp_features(input_shape: tuple[int, int, int], width: int = 1024) -> tuple[nn.Module, int]:
    """``Flatten, Linear(C*H*W, width), ReLU, Linear(width, width), ReLU``.

    Args:
        input_shape: ``(C, H, W)`` of the images.
        width: hidden width (paper: 1024).

    Returns:
        The feature extractor and its output size.
    """
    layers = nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), width),
        nn.ReLU(),
        nn.Linear(width, width),
        nn.ReLU(),
    )
    return layers, width
