"""The attack suite an audit runs: every registered attack that applies to a model and a defense.

Applicability comes from each attack's registry entry (:mod:`~ppp_lightning.attacks.registry`),
so the audit, the noise calibrator and the evidence benchmark attack the same way: an attack that
needs a PRECODE only where one samples, one that recovers one image only at batch size 1, the
analytic recovery only where the first ``Linear`` layer takes the image, APRIL only on a ViT with a
positional embedding, a convolution-free attack only on models without convolutions, the
clean-layer attack only where the defense leaves gradients clean; targeted variants
(``<name>/<target>``) against a PRECODE. An attack with its own threat model (the candidate
linkage) is in the suite only where asked for by name. The suite lists the attacks that need least
first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

from torch import Tensor, nn

from ppp_lightning.attacks.april import patch_embedding
from ppp_lightning.attacks.registry import REGISTRY, Capabilities
from ppp_lightning.attacks.spec import AttackSpec
from ppp_lightning.attacks.targets import linear_layers
from ppp_lightning.defenses.precode import PRECODE
from ppp_lightning.defenses.spec import DefenseSpec

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
        names: keep only these labels (``None``: all that apply, except those with their own threat model).
        tie_channels: the data has one true channel (e.g. MNIST): optimise one channel.
        progress: show each optimisation attack's progress bar.
        batch_size: images per shared gradient (attacks that recover one image need 1).

    Raises:
        ValueError: if a name is not one of the labels that apply, naming those that do.
    """
    offered = _Offered(model, example, defense)
    suite = {}
    for name, cls in sorted(REGISTRY.items(), key=lambda item: _needs(item[1].capabilities)):
        entry = cls.capabilities
        if not offered.meets(entry) or (entry.one_image and batch_size != 1):
            continue
        spec = AttackSpec(name, _settings(name, entry, defense, tie_channels, progress))
        suite[name] = spec
        if offered.precode:
            suite.update({f"{name}/{target}": spec.replace(target=target) for target in entry.targets})
    if names is None:
        return {label: spec for label, spec in suite.items() if spec.capabilities.threat_model is None}
    unknown = [name for name in names if name not in suite]
    if unknown:
        raise ValueError(f"attacks {unknown} do not apply to this model and defense; allowed: {', '.join(suite)}")
    return {name: suite[name] for name in names}


def _needs(entry: Capabilities) -> tuple[bool, ...]:
    """The suite's order: attacks with fewer and more common needs first."""
    return (entry.threat_model is not None, entry.needs_clean_gradient, entry.convolution_free,
            entry.needs_first_linear, entry.needs_positional_embedding, entry.needs_precode,
            entry.one_image)  # fmt: skip


def _settings(
    name: str, entry: Capabilities, defense: Optional[DefenseSpec], tie_channels: bool, progress: bool
) -> dict[str, Any]:
    """An attack's suite settings: one channel where the data has one, its progress bar, the defense it avoids."""
    options = AttackSpec(name).options()
    settings: dict[str, Any] = {"tie_channels": True} if tie_channels and "tie_channels" in options else {}
    if "progress" in options:
        settings["progress"] = progress
    if entry.needs_clean_gradient and defense is not None:
        settings["defense"] = defense.to_dict()
    return settings


class _Offered:
    """What a model (with its defense) offers the registered attacks' needs."""

    def __init__(self, model: nn.Module, example: Tensor, defense: Optional[DefenseSpec]) -> None:
        self.precode = any(isinstance(module, PRECODE) for module in model.modules())
        layers = linear_layers(model, example)
        self.first_linear = bool(layers) and model.get_submodule(layers[0]).in_features == math.prod(example.shape[1:])
        self.positional_embedding = patch_embedding(model) is not None
        self.convolutions = any(isinstance(module, nn.modules.conv._ConvNd) for module in model.modules())
        self.clean_gradient = defense is not None and _leaves_a_clean_gradient(model, example, defense)

    def meets(self, entry: Capabilities) -> bool:
        """Whether the model has everything ``entry`` needs."""
        return (
            (self.precode or not entry.needs_precode)
            and (self.first_linear or not entry.needs_first_linear)
            and (self.positional_embedding or not entry.needs_positional_embedding)
            and (not self.convolutions or not entry.convolution_free)
            and (self.clean_gradient or not entry.needs_clean_gradient)
        )


def _leaves_a_clean_gradient(model: nn.Module, example: Tensor, defense: DefenseSpec) -> bool:
    perturbed = defense.resolve(model, example).parameter_names
    return len(perturbed) < sum(p.requires_grad for p in model.parameters())
