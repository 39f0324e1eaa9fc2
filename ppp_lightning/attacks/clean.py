"""The clean-layer attack: match only the gradients a known partial perturbation leaves clean."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ppp_lightning.attacks.adaptive import AdaptiveAttack, sampling_bottlenecks
from ppp_lightning.attacks.inverting import InvertingGradients
from ppp_lightning.attacks.matching import Problems
from ppp_lightning.attacks.optimiser import Variables
from ppp_lightning.attacks.registry import register
from ppp_lightning.defenses.spec import DefenseSpec

__all__ = ["CleanLayerAttack"]


@register("clean_layer", "matches only the gradients the defense leaves clean", needs_clean_gradient=True)
class CleanLayerAttack(AdaptiveAttack):
    """An attacker who knows the defense matches only the gradients it leaves unperturbed.

    The matched names are those the usual selection (``include``, ``ignore``, ``target``) keeps
    minus exactly the names :meth:`DefenseSpec.resolve <ppp_lightning.defenses.spec.DefenseSpec.resolve>`
    perturbs on the attacked model, so the noise never enters the objective. When the model has a
    PRECODE that samples, its noise ``eps`` is optimised with the image (the adaptive attack:
    PPP leaves the stochastic layers' gradients clean); otherwise this is Inverting Gradients on
    the clean layers. Against the paper's PPP (encoder perturbed) the clean gradients, PRECODE's
    decoder and the head, see the image only through ``z = mu + sigma * eps``, and a free ``eps``
    explains them whatever the image; with the encoder left clean its gradient carries the
    features, and the attack correlates with the digit (``tests/test_attack_variants.py``).

    Args:
        defense: the defense's :class:`~ppp_lightning.defenses.spec.DefenseSpec` keyword arguments (a
            plain mapping, e.g. ``PartialPerturbation.spec.to_dict()``, so records carry it);
            ``None`` for the spec's defaults (PPP: ``before_bottleneck``, encoder included).
        **kwargs: arguments of :class:`~ppp_lightning.attacks.inverting.InvertingGradients`.

    Raises:
        ValueError: if ``defense`` has a key DefenseSpec does not take or a value it refuses, or
            :class:`~ppp_lightning.attacks.inverting.InvertingGradients` rejects an argument.
    """

    def __init__(self, defense: Optional[Mapping[str, Any]] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        settings = dict(defense or {})
        allowed = [f.name for f in dataclasses.fields(DefenseSpec) if f.init]
        unknown = sorted(set(settings) - set(allowed))
        if unknown:
            raise ValueError(f"defense has unknown keys {unknown}; allowed: {', '.join(allowed)}")
        self.defense = DefenseSpec(**settings)

    def matched_names(self, model: nn.Module, available: list[str], example: Tensor) -> list[str]:
        """The usual selection minus exactly the gradients the defense perturbs.

        Raises:
            ValueError: if the defense perturbs every selected gradient.
        """
        selected = super().matched_names(model, available, example)
        perturbed = set(self.defense.resolve(model, example).parameter_names)
        clean = [name for name in selected if name not in perturbed]
        if not clean:
            raise ValueError(
                f"the defense (layers={self.defense.layers!r}, include_encoder={self.defense.include_encoder}) "
                f"perturbs every selected gradient {selected}: no clean gradient to match"
            )
        return clean

    def initial_variables(
        self, problems: Problems, shape: tuple[int, ...], init: Optional[Tensor], generator: torch.Generator
    ) -> Variables:
        if sampling_bottlenecks(problems.model):
            return super().initial_variables(problems, shape, init, generator)
        # No noise to optimise: plain Inverting Gradients on the clean layers.
        return InvertingGradients.initial_variables(self, problems, shape, init, generator)
