"""A defense's settings as one object: which parameters it perturbs and how.

:class:`DefenseSpec` is the one place that turns ``PartialPerturbation`` settings into the
perturbation and the set of perturbed parameter names of a given model. The callback, the attack
callback, the benchmarks, the audit and the Flower client all resolve it instead of repeating
the selection rules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from ppp_lightning.defenses.perturbation import GradientPerturbation, Mechanism
from ppp_lightning.defenses.selection import POSITIONS, check_layers, needs_example_input, select_parameters

__all__ = ["DefenseSpec", "ResolvedDefense"]


@dataclass(frozen=True)
class ResolvedDefense:
    """A defense applied to one model: the perturbation and the names of the parameters it perturbs.

    Attributes:
        perturbation: clip, prune and noise (:class:`~ppp_lightning.defenses.perturbation.GradientPerturbation`).
        parameter_names: names as in ``model.named_parameters()``, in forward order for positions.
    """

    perturbation: GradientPerturbation
    parameter_names: tuple[str, ...]

    def apply(self, gradients: Mapping[str, Tensor], generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        """The shared gradient: ``gradients`` with the selected set perturbed as one joint set.

        Args:
            gradients: every trainable parameter's clean gradient by name (not modified).
            generator: source of the noise; ``None`` uses torch's global RNG.

        Raises:
            ValueError: if a selected name is not among ``gradients``.
        """
        unknown = sorted(set(self.parameter_names) - set(gradients))
        if unknown:
            raise ValueError(f"defense parameters {unknown} have no gradient; available: {list(gradients)}")
        selected = {name: gradients[name] for name in self.parameter_names}
        return {**gradients, **self.perturbation(selected, generator)}


@dataclass(frozen=True)
class DefenseSpec:
    """Settings of a partial gradient perturbation (PPP and its baselines).

    Args:
        layers: ``before_bottleneck`` (PPP), ``bottleneck``, ``after_bottleneck``, ``all`` (the
            noisy-gradients or pruning baseline), or parameter-name glob patterns.
        include_encoder: whether the PRECODE encoder is in a positional set (default ``True``: a
            clean encoder gradient reveals the features entering the bottleneck).
        mechanism: ``gaussian``, ``laplace`` or ``none`` (clipping and pruning only).
        sigma: standard deviation of the noise per gradient entry.
        relative: scale ``sigma`` by each tensor's gradient RMS.
        clip_norm: clip the selected gradients' joint L2 norm to this before the noise.
        keep_ratio: keep this fraction of each tensor's largest-magnitude entries (pruning).

    Raises:
        ValueError: on an invalid option, naming the value and what is allowed.
    """

    layers: Union[str, tuple[str, ...]] = "before_bottleneck"
    include_encoder: bool = True
    mechanism: Mechanism = "gaussian"
    sigma: float = 0.0
    relative: bool = False
    clip_norm: Optional[float] = None
    keep_ratio: Optional[float] = None
    perturbation: GradientPerturbation = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        layers = self.layers if isinstance(self.layers, str) else tuple(self.layers)
        valid = bool(layers) and (isinstance(layers, str) or all(isinstance(p, str) and p for p in layers))
        if not valid:
            shown = layers if isinstance(layers, str) else list(layers)
            raise ValueError(f"layers={shown!r}; allowed: one of {', '.join(POSITIONS)} or a non-empty list of patterns")
        object.__setattr__(self, "layers", layers)
        perturbation = GradientPerturbation(self.mechanism, self.sigma, self.relative, self.clip_norm, self.keep_ratio)
        object.__setattr__(self, "perturbation", perturbation)

    @property
    def needs_example_input(self) -> bool:
        """Whether resolving traces a forward pass (positions other than ``all``)."""
        return needs_example_input(self.layers)

    def check(self, model: nn.Module) -> None:
        """Fail early if the layers are relative to a PRECODE that ``model`` lacks.

        Raises:
            ValueError: naming the position and listing the model's parameters.
        """
        check_layers(model, self.layers)

    def resolve(
        self,
        model: nn.Module,
        example_input: Any = None,
        spans: Optional[Mapping[str, Sequence[int]]] = None,
    ) -> ResolvedDefense:
        """The perturbation and the parameter names it perturbs in ``model``.

        Args:
            model: the defended model (positions are found by its traced forward order).
            example_input: input of the traced forward pass (not needed for ``all`` or patterns).
            spans: instead of ``example_input``, forward spans recorded during a real step.

        Raises:
            ValueError: if the selection is empty or cannot be resolved (see
                :func:`~ppp_lightning.defenses.selection.select_parameters`).
        """
        names = select_parameters(model, self.layers, self.include_encoder, example_input, spans)
        return ResolvedDefense(self.perturbation, tuple(names))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain values (for records and YAML)."""
        settings = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        return {**settings, "layers": self.layers if isinstance(self.layers, str) else list(self.layers)}
