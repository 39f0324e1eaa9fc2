"""torchvision's ResNet-18 adapted to 32x32 inputs."""

from __future__ import annotations

from functools import partial
from typing import Literal

from torch import nn
from torchvision.models import resnet18

__all__ = ["resnet18_features"]

NORMS = ("batch", "group")


def resnet18_features(
    input_shape: tuple[int, int, int], norm: Literal["batch", "group"] = "batch", groups: int = 32
) -> tuple[nn.Module, int]:
    """ResNet-18 with a 3x3 stride-1 stem, no max-pool, global average pooling and no ``fc``.

    Args:
        input_shape: ``(C, H, W)`` of the images.
        norm: ``"batch"`` (torchvision's default) or ``"group"``; GroupNorm keeps the gradient of
            one image independent of the rest of the batch (BatchNorm leaks batch statistics).
        groups: number of groups for GroupNorm.

    Returns:
        The feature extractor and its output size (512).

    Raises:
        ValueError: if ``norm`` is unknown.
    """
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}; allowed: {', '.join(NORMS)}")
    norm_layer = nn.BatchNorm2d if norm == "batch" else partial(nn.GroupNorm, groups)
    net = resnet18(norm_layer=norm_layer)
    net.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    dim = net.fc.in_features
    net.fc = nn.Identity()
    return net, dim
