"""Gradient inversion attacks: plain classes over a model, its parameters and a shared gradient.

Every attack is called as ``attack(model, gradients, labels=None, shape=(N, C, H, W))`` and returns
an :class:`AttackResult`; none needs a Trainer. :func:`build_attack` makes one by registry name.
"""

from __future__ import annotations

from typing import Any, Union

from ppp_lightning.attacks.adaptive import AdaptiveAttack
from ppp_lightning.attacks.analytic import AnalyticRecovery, linear_input
from ppp_lightning.attacks.dlg import DLG
from ppp_lightning.attacks.inverting import InvertingGradients
from ppp_lightning.attacks.labels import recover_labels
from ppp_lightning.attacks.matching import GradientMatchingAttack
from ppp_lightning.attacks.result import AttackResult
from ppp_lightning.attacks.targets import TARGETS, select_gradients

__all__ = [
    "ATTACKS",
    "DLG",
    "TARGETS",
    "AdaptiveAttack",
    "AnalyticRecovery",
    "AttackResult",
    "GradientMatchingAttack",
    "InvertingGradients",
    "build_attack",
    "linear_input",
    "recover_labels",
    "select_gradients",
]

ATTACKS: dict[str, type] = {
    "inverting": InvertingGradients,
    "dlg": DLG,
    "adaptive": AdaptiveAttack,
    "analytic": AnalyticRecovery,
}


def build_attack(name: str, **kwargs: Any) -> Union[GradientMatchingAttack, AnalyticRecovery]:
    """Make the attack registered as ``name`` with its keyword arguments.

    Args:
        name: one of :data:`ATTACKS` (``inverting``, ``dlg``, ``adaptive``, ``analytic``).
        **kwargs: the attack's init arguments.

    Raises:
        ValueError: if ``name`` is unknown.
    """
    if name not in ATTACKS:
        raise ValueError(f"attack={name!r}; allowed: {', '.join(ATTACKS)}")
    return ATTACKS[name](**kwargs)
