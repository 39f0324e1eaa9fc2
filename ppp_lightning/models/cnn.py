"""Small convolutional feature extractor of the PRECODE paper."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["cnn_features"]


def cnn_features(input_shape: tuple[int, int, int], channels: tuple[int, ...] = (16, 32, 64)) -> tuple[nn.Module, int]:
    """Three ``Conv(k5, s2) + ReLU`` blocks (3->16->32->64 channels) and a flatten.

    Args:
        input_shape: ``(C, H, W)`` of the images.
        channels: output channels of the convolutions.

    Returns:
        The feature extractor and its output size (64 for 3x32x32 inputs).
    """
    layers: list[nn.Module] = []
    in_channels = input_shape[0]
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size=5, stride=2), nn.ReLU()]
        in_channels = out_channels
    features = nn.Sequential(*layers, nn.Flatten())
    with torch.no_grad():
        dim = features(torch.zeros(1, *input_shape)).shape[1]
    return features, dim
