"""The base of the attacks that read an image straight out of a gradient: no optimisation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional

import torch
from torch import Tensor, nn

from ppp_lightning.attacks.labels import head_bias_gradient, recover_labels
from ppp_lightning.attacks.result import AttackResult

__all__ = ["ClosedFormAttack"]


class ClosedFormAttack:
    """An attack that recovers a victim in closed form from its gradient; :meth:`run` goes victim by victim.

    Subclasses set ``tie_channels`` (the data has one true channel repeated) and build their
    result with :meth:`result`.
    """

    tie_channels: bool = False

    def __call__(
        self,
        model: nn.Module,
        gradients: Mapping[str, Tensor],
        labels: Optional[Tensor] = None,
        shape: Sequence[int] = (1, 3, 32, 32),
    ) -> AttackResult:
        """Recover the batch of ``shape`` behind ``gradients`` (labels ``None``: recovered)."""
        raise NotImplementedError

    def result(
        self, model: nn.Module, gradients: Mapping[str, Tensor], images: Tensor, labels: Optional[Tensor]
    ) -> AttackResult:
        """The recovered batch of one, its channels averaged where tied, with its label (recovered if ``None``).

        Averaging tied channels also averages their noise.

        Raises:
            ValueError: if the label must be recovered and the last layer's bias gradient is not shared.
        """
        if self.tie_channels:
            images = images.mean(1, keepdim=True).expand_as(images).clone()
        if labels is None:
            labels = recover_labels(head_bias_gradient(model, gradients, torch.zeros_like(images)), 1)
        return AttackResult(images=images, labels=labels)

    def run(
        self,
        model: nn.Module,
        gradients: Sequence[Mapping[str, Tensor]],
        labels: Optional[Sequence[Optional[Tensor]]] = None,
        shape: Sequence[int] = (1, 3, 32, 32),
    ) -> list[AttackResult]:
        """Recover every victim's image (no optimisation to batch, so one after another).

        Args:
            model: the attacked model.
            gradients: every victim's shared gradient.
            labels: every victim's ``(1,)`` label (``None``: recovered).
            shape: ``(1, C, H, W)`` of every victim's batch.
        """
        labels = labels if labels is not None else [None] * len(gradients)
        return [self(model, shared, label, shape) for shared, label in zip(gradients, labels)]
