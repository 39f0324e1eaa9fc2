"""Gradient inversion attacks: plain classes over a model, its parameters and a shared gradient.

Every attack is called as ``attack(model, gradients, labels=None, shape=(N, C, H, W))`` and returns
an :class:`AttackResult`; none needs a Trainer. :class:`AttackSpec` validates a registered attack's
name and options and builds it.
"""

from __future__ import annotations

from ppp_lightning.attacks.adaptive import AdaptiveAttack
from ppp_lightning.attacks.analytic import AnalyticRecovery, bottleneck_input, linear_input
from ppp_lightning.attacks.clean import CleanLayerAttack
from ppp_lightning.attacks.dlg import DLG
from ppp_lightning.attacks.features import FeatureInversion, bottleneck_features
from ppp_lightning.attacks.inverting import InvertingGradients
from ppp_lightning.attacks.labels import recover_labels
from ppp_lightning.attacks.matching import GradientMatchingAttack
from ppp_lightning.attacks.result import AttackResult
from ppp_lightning.attacks.spec import ATTACKS, Attack, AttackSpec
from ppp_lightning.attacks.targets import TARGETS, select_gradients

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackSpec",
    "DLG",
    "TARGETS",
    "AdaptiveAttack",
    "AnalyticRecovery",
    "AttackResult",
    "CleanLayerAttack",
    "FeatureInversion",
    "GradientMatchingAttack",
    "InvertingGradients",
    "bottleneck_features",
    "bottleneck_input",
    "linear_input",
    "recover_labels",
    "select_gradients",
]
