"""A small Vision Transformer for 32x32 images, built on torchvision's implementation."""

from __future__ import annotations

from torch import nn
from torchvision.models import VisionTransformer

__all__ = ["vit_features"]


def vit_features(
    input_shape: tuple[int, int, int],
    patch_size: int = 4,
    hidden_dim: int = 256,
    num_layers: int = 4,
    num_heads: int = 8,
    mlp_dim: int = 256,
) -> tuple[nn.Module, int]:
    """ViT with a CLS token whose final CLS embedding is the feature vector.

    Args:
        input_shape: ``(C, H, W)``; torchvision's ViT needs 3 channels and square images.
        patch_size: side of the square patches (paper: 4).
        hidden_dim: embedding width (paper: 256).
        num_layers: transformer blocks (paper: 4).
        num_heads: attention heads (paper: 8 or more).
        mlp_dim: hidden size of each block's MLP (paper: 256).

    Returns:
        The feature extractor and its output size (``hidden_dim``).

    Raises:
        ValueError: if the images are not square with 3 channels or not divisible into patches.
    """
    channels, height, width = input_shape
    if channels != 3 or height != width or height % patch_size:
        raise ValueError(
            f"vit needs 3xSxS images with S divisible by patch_size={patch_size}, got {tuple(input_shape)}"
        )
    net = VisionTransformer(height, patch_size, num_layers, num_heads, hidden_dim, mlp_dim)
    net.heads = nn.Identity()
    return net, hidden_dim
