"""The paper's four model families, each as ``features -> bottleneck -> head``."""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional

from torch import nn

from ppp_lightning.defenses.precode import PRECODE
from ppp_lightning.models.cnn import cnn_features
from ppp_lightning.models.mlp import mlp_features
from ppp_lightning.models.network import BottleneckNetwork
from ppp_lightning.models.resnet import resnet18_features
from ppp_lightning.models.vit import vit_features

__all__ = ["ARCHITECTURES", "Arch", "BottleneckNetwork", "build_network"]

ARCHITECTURES: dict[str, Callable[..., tuple[nn.Module, int]]] = {
    "mlp": mlp_features,
    "cnn": cnn_features,
    "resnet18": resnet18_features,
    "vit": vit_features,
}
# The architectures' names as a type, for signatures the CLI reads.
Arch = Literal[tuple(ARCHITECTURES)]  # type: ignore[valid-type]


def build_network(
    arch: str,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    precode: Optional[dict[str, Any]] = None,
    **arch_kwargs: Any,
) -> BottleneckNetwork:
    """Build ``features -> PRECODE (or identity) -> Linear head`` for a named architecture.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        num_classes: number of output classes.
        input_shape: ``(C, H, W)`` of the images.
        precode: ``None`` for no bottleneck, else keyword arguments of :class:`PRECODE`
            (``{}`` for the reference defaults).
        **arch_kwargs: options of the architecture's feature builder (e.g. ``norm`` for resnet18).

    Raises:
        ValueError: if ``arch`` is unknown.
    """
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch={arch!r}; allowed: {', '.join(ARCHITECTURES)}")
    features, dim = ARCHITECTURES[arch](tuple(input_shape), **arch_kwargs)
    bottleneck = nn.Identity() if precode is None else PRECODE(dim, **precode)
    return BottleneckNetwork(features, bottleneck, nn.Linear(dim, num_classes))
