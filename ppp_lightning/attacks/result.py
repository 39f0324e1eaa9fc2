"""What every attack returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor

__all__ = ["AttackResult", "RestartRecord"]

StopReason = Literal["converged", "budget", "analytic"]


@dataclass(frozen=True)
class RestartRecord:
    """How one restart of one victim ran.

    Args:
        iterations: optimisation steps it ran.
        stop_reason: ``"converged"`` (its best objective stopped improving), ``"budget"`` (it used
            every iteration) or ``"analytic"`` (no optimisation).
        best_objective: the lowest objective seen; its iterate is the one returned.
        final_objective: the objective of its last iterate.
        objectives: the objective of every iterate, in order.
    """

    iterations: int
    stop_reason: StopReason
    best_objective: float
    final_objective: float
    objectives: tuple[float, ...] = ()


@dataclass
class AttackResult:
    """A reconstruction and how well its gradient matched.

    Args:
        images: ``(N, C, H, W)`` reconstructed images in the model's (normalised) input space: the
            best iterate of the best restart.
        labels: ``(N,)`` the labels used (given, recovered or optimised).
        loss: best objective of the best restart (``nan`` for attacks without one).
        restart_losses: best objective of every restart.
        restarts: how every restart ran (empty for attacks without optimisation).
    """

    images: Tensor
    labels: Tensor
    loss: float = float("nan")
    restart_losses: list[float] = field(default_factory=list)
    restarts: list[RestartRecord] = field(default_factory=list)
