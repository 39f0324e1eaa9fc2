"""Analytic recovery of a fully connected layer's input from its weight and bias gradients."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Optional

import torch
from torch import Tensor, nn

from ppp_lightning.attacks.labels import head_bias_gradient, recover_labels
from ppp_lightning.attacks.result import AttackResult
from ppp_lightning.attacks.targets import linear_layers

__all__ = ["AnalyticRecovery", "linear_input"]


def linear_input(weight_grad: Tensor, bias_grad: Tensor) -> Tensor:
    """The input of ``Linear`` from its gradients, for a batch of one.

    For ``y = W x + b`` and one input, ``dL/dW = (dL/dy) x^T`` and ``dL/db = dL/dy``: every row of
    the weight gradient is ``x`` scaled by the matching bias gradient. The least-squares solution
    over all rows, ``x = sum_i b_i W_i / sum_i b_i^2``, is exact (up to rounding) whatever loss and
    layers follow. For a batch it returns a mixture of the inputs.

    Args:
        weight_grad: ``(out_features, in_features)``.
        bias_grad: ``(out_features,)``.

    Returns:
        ``(1, in_features)``.

    Raises:
        ValueError: if the bias gradient is zero (nothing flows through the layer).
    """
    b = bias_grad.detach().double()
    norm = b.square().sum()
    if norm == 0:
        raise ValueError("the bias gradient is zero: the layer's input cannot be recovered")
    return (b @ weight_grad.detach().double() / norm).to(weight_grad.dtype).unsqueeze(0)


class AnalyticRecovery:
    """Recover one image exactly from the gradients of the model's first ``Linear`` layer.

    No optimisation: on a model whose first layer is ``Linear`` (``mlp``) the image comes back
    exactly, with or without PRECODE after it. Use :func:`linear_input` on another layer, e.g. a
    PRECODE encoder, to recover that layer's input (the features entering the bottleneck).

    Args:
        layer: module name of the ``Linear`` layer whose input is the image; ``None`` takes the
            first ``Linear`` in forward order.
    """

    def __init__(self, layer: Optional[str] = None) -> None:
        self.layer = layer

    def __call__(
        self,
        model: nn.Module,
        gradients: Mapping[str, Tensor],
        labels: Optional[Tensor] = None,
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
        if shape[0] != 1:
            raise ValueError(f"analytic recovery is exact for one image; got shape {tuple(shape)}")
        example = torch.zeros(tuple(shape), device=next(model.parameters()).device)
        layers = linear_layers(model, example)
        layer = self.layer or (layers[0] if layers else "")
        missing = [f"{layer}.{p}" for p in ("weight", "bias") if f"{layer}.{p}" not in gradients]
        if missing:
            raise ValueError(f"analytic recovery needs the gradients {missing}; Linear layers: {layers}")
        recovered = linear_input(gradients[f"{layer}.weight"], gradients[f"{layer}.bias"])
        if recovered.numel() != math.prod(shape):
            raise ValueError(
                f"the input of {layer!r} has {recovered.numel()} values, not an image of shape {tuple(shape)}"
            )
        if labels is None:
            labels = recover_labels(head_bias_gradient(model, gradients, example), 1)
        return AttackResult(images=recovered.view(tuple(shape)), labels=labels)
