"""Analytic recovery of a fully connected layer's input from its weight and bias gradients."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ppp_lightning.attacks.closed_form import ClosedFormAttack
from ppp_lightning.attacks.layer_inputs import check_estimator, layer_gradients, linear_input
from ppp_lightning.attacks.registry import check_images, register
from ppp_lightning.attacks.result import AttackResult
from ppp_lightning.attacks.targets import linear_layers

__all__ = ["AnalyticRecovery"]


@register("analytic", "reads the image out of the first Linear layer's gradients (no optimisation)",
          one_image=True, needs_first_linear=True)  # fmt: skip
class AnalyticRecovery(ClosedFormAttack):
    """Recover one image from the gradients of the model's first ``Linear`` layer.

    No optimisation: on a model whose first layer is ``Linear`` (``mlp``) the image comes back
    exactly, with or without PRECODE after it, and the ``"rank_one"`` estimator keeps it legible
    under strong i.i.d. gradient noise. Use
    :func:`~ppp_lightning.attacks.layer_inputs.bottleneck_input` to recover the features entering
    a PRECODE bottleneck.

    Args:
        layer: module name of the ``Linear`` layer whose input is the image; ``None`` takes the
            first ``Linear`` in forward order.
        estimator: ``"rank_one"`` (leading singular vector of the weight gradient, noise-robust)
            or ``"division"`` (weight gradient weighted by the bias gradient); see
            :func:`~ppp_lightning.attacks.layer_inputs.linear_input`.
        tie_channels: the data has one true channel repeated (e.g. MNIST as three channels):
            average the recovered channels and repeat the mean, which also averages their noise.

    Raises:
        ValueError: if ``estimator`` is unknown.
    """

    def __init__(
        self,
        layer: str | None = None,
        estimator: Literal["rank_one", "division"] = "rank_one",
        tie_channels: bool = False,
    ) -> None:
        check_estimator(estimator)
        self.layer = layer
        self.estimator = estimator
        self.tie_channels = tie_channels

    def __call__(
        self,
        model: nn.Module,
        gradients: Mapping[str, Tensor],
        labels: Tensor | None = None,
        shape: Sequence[int] = (1, 3, 32, 32),
    ) -> AttackResult:
        """Recover the image of a batch of one.

        Args:
            model: the attacked model (traced once to order its layers).
            gradients: the shared gradient by parameter name.
            labels: ``(1,)`` the label, or ``None`` to recover it from the last layer's bias gradient.
            shape: ``(1, C, H, W)`` of the batch.

        Raises:
            ValueError: if the batch is not a single image, the layer's gradients are not shared or
                its input is not the image.
        """
        check_images(self.capabilities, shape)
        example = torch.zeros(tuple(shape), device=next(model.parameters()).device)
        layers = linear_layers(model, example)
        layer = self.layer or (layers[0] if layers else "")
        recovered = linear_input(*layer_gradients(gradients, layer, layers), estimator=self.estimator)
        if recovered.numel() != math.prod(shape):
            raise ValueError(
                f"the input of {layer!r} has {recovered.numel()} values, not an image of shape {tuple(shape)}"
            )
        return self.result(model, gradients, recovered.view(tuple(shape)), labels)
