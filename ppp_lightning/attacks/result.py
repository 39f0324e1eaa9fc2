"""What every attack returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["AttackResult"]


@dataclass
class AttackResult:
    """A reconstruction and how well its gradient matched.

    Args:
        images: ``(N, C, H, W)`` reconstructed images in the model's (normalised) input space.
        labels: ``(N,)`` the labels used (given, recovered or optimised).
        loss: final objective of the best restart (``nan`` for attacks without one).
        restart_losses: final objective of every restart.
    """

    images: Tensor
    labels: Tensor
    loss: float = float("nan")
    restart_losses: list[float] = field(default_factory=list)
