"""Gradient inversion attacks: plain classes over a model, its parameters and a shared gradient.

Every attack is called as ``attack(model, gradients, labels=None, shape=(N, C, H, W))`` and returns
an :class:`AttackResult`; none needs a Trainer. Each registers itself with what it can do and
needs (:mod:`~ppp_lightning.attacks.registry`); :class:`AttackSpec` validates a registered
attack's name and options and builds it.
"""

from __future__ import annotations

from ppp_lightning.attacks.adaptive import AdaptiveAttack
from ppp_lightning.attacks.analytic import AnalyticRecovery
from ppp_lightning.attacks.clean import CleanLayerAttack
from ppp_lightning.attacks.dlg import DLG
from ppp_lightning.attacks.features import FeatureInversion, bottleneck_features
from ppp_lightning.attacks.inverting import InvertingGradients
from ppp_lightning.attacks.labels import recover_labels
from ppp_lightning.attacks.layer_inputs import bottleneck_input, linear_input
from ppp_lightning.attacks.matching import GradientMatchingAttack
from ppp_lightning.attacks.registry import REGISTRY, Capabilities, register
from ppp_lightning.attacks.result import AttackResult
from ppp_lightning.attacks.spec import ATTACKS, Attack, AttackName, AttackSpec
from ppp_lightning.attacks.targets import TARGETS, Target, select_gradients

__all__ = [
    "ATTACKS",
    "REGISTRY",
    "Attack",
    "AttackName",
    "AttackSpec",
    "Capabilities",
    "DLG",
    "TARGETS",
    "Target",
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
    "register",
    "select_gradients",
]
