"""The attack suite an audit runs: every registered attack that applies to a model and a defense.

One place decides applicability, so the audit, the noise calibrator and the evidence benchmark
attack the same way: the plain attack always; with a PRECODE the targeted, adaptive and
feature-inversion attacks; the analytic recovery when the first ``Linear`` layer takes the image
(it and feature inversion recover one image per gradient); DLG on models without convolutions;
the clean-layer attack when the defense leaves a gradient clean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional

from torch import Tensor, nn

from ppp_lightning.attacks.spec import AttackSpec
from ppp_lightning.attacks.targets import linear_layers
from ppp_lightning.defense import DefenseSpec
from ppp_lightning.precode import PRECODE
from ppp_lightning.selection import select_parameters

__all__ = ["attack_suite"]


def attack_suite(
    model: nn.Module,
    example: Tensor,
    defense: Optional[DefenseSpec] = None,
    names: Optional[Sequence[str]] = None,
    tie_channels: bool = False,
    progress: bool = False,
    batch_size: int = 1,
) -> dict[str, AttackSpec]:
    """The attacks that apply to ``model`` under ``defense``, by label, with their converged defaults.

    Args:
        model: the attacked network.
        example: one input ``(1, C, H, W)`` (to trace the forward order).
        defense: the defense on the shared gradient (``None``: none).
        names: keep only these labels (``None``: all that apply).
        tie_channels: the data has one true channel (e.g. MNIST): optimise one channel.
        progress: show each optimisation attack's progress bar.
        batch_size: images per shared gradient (attacks that recover one image need 1).

    Raises:
        ValueError: if a name is not one of the labels that apply, naming those that do.
    """
    tied = {"tie_channels": True} if tie_channels else {}
    shown = {"progress": progress}
    suite = {"inverting": AttackSpec("inverting", {**tied, **shown})}
    if any(isinstance(module, PRECODE) for module in model.modules()):
        for target in ("before_bottleneck", "before_decoder"):
            suite[f"inverting/{target}"] = AttackSpec("inverting", {"target": target, **tied, **shown})
        suite["adaptive"] = AttackSpec("adaptive", {**tied, **shown})  # PRECODE samples in training mode
        if batch_size == 1:
            suite["feature_inversion"] = AttackSpec("feature_inversion", {**tied, **shown})
    if batch_size == 1 and _first_layer_sees_the_image(model, example):
        suite["analytic"] = AttackSpec("analytic", tied)
    if not any(isinstance(module, nn.modules.conv._ConvNd) for module in model.modules()):
        suite["dlg"] = AttackSpec("dlg", {**tied, **shown})
    if defense is not None and _leaves_a_clean_gradient(model, example, defense):
        suite["clean_layer"] = AttackSpec("clean_layer", {"defense": defense.to_dict(), **tied, **shown})
    if names is None:
        return suite
    unknown = [name for name in names if name not in suite]
    if unknown:
        raise ValueError(f"attacks {unknown} do not apply to this model and defense; allowed: {', '.join(suite)}")
    return {name: suite[name] for name in names}


def _first_layer_sees_the_image(model: nn.Module, example: Tensor) -> bool:
    layers = linear_layers(model, example)
    return bool(layers) and model.get_submodule(layers[0]).in_features == math.prod(example.shape[1:])


def _leaves_a_clean_gradient(model: nn.Module, example: Tensor, defense: DefenseSpec) -> bool:
    perturbed = select_parameters(model, defense.layers, defense.include_encoder, example)
    return len(perturbed) < sum(p.requires_grad for p in model.parameters())
