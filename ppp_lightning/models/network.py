"""The common shape of every model: ``features`` -> ``bottleneck`` -> ``head``."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["BottleneckNetwork"]


class BottleneckNetwork(nn.Module):
    """A classifier split into three named parts so callbacks and attacks can find them by name.

    Args:
        features: everything before the bottleneck; maps images to ``(N, d)`` features.
        bottleneck: a :class:`~ppp_lightning.PRECODE` or ``nn.Identity``.
        head: the classifier on the (bottlenecked) features.
    """

    def __init__(self, features: nn.Module, bottleneck: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.bottleneck = bottleneck
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.bottleneck(self.features(x)))
