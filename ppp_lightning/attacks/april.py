"""APRIL (Lu et al., CVPR 2022): a ViT's image read out of its patch and positional embeddings' gradients.

In a ViT that adds a learnable positional embedding right after a linear patch embedding (torchvision's
``VisionTransformer``: ``conv_proj`` with stride = kernel = patch size, then ``encoder.pos_embedding``),
token ``i`` is ``z_i = W x_i + b + p_i`` for patch ``x_i``. For a batch of one the positional
embedding's gradient is the gradient at the tokens, ``g_i = dL/dp_i``, and the patch embedding's
weight gradient is ``dL/dW = sum_i g_i x_i^T = G^T X``. The patches ``X`` follow from one linear
least-squares solve over all ``D`` embedding rows, which averages i.i.d. gradient noise out instead
of amplifying it as a single division would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import VisionTransformer

from ppp_lightning.attacks.closed_form import ClosedFormAttack
from ppp_lightning.attacks.inverting import InvertingGradients
from ppp_lightning.attacks.registry import check_images, register
from ppp_lightning.attacks.result import AttackResult

__all__ = ["APRIL", "APRILInverting", "PatchEmbedding", "patch_embedding", "patches_from_gradients"]


@dataclass(frozen=True)
class PatchEmbedding:
    """Where a ViT embeds its patches and adds its positional embedding (parameter names).

    Args:
        weight: the patch embedding's weight, ``(D, C, P, P)``.
        positions: the positional embedding, ``(1, T, D)`` over the ``T`` tokens.
        patch_size: ``P``.
    """

    weight: str
    positions: str
    patch_size: int


def patch_embedding(model: nn.Module) -> Optional[PatchEmbedding]:
    """The first torchvision ``VisionTransformer`` in ``model`` as a :class:`PatchEmbedding` (``None``: none)."""
    for name, module in model.named_modules():
        if isinstance(module, VisionTransformer):
            prefix = f"{name}." if name else ""
            return PatchEmbedding(f"{prefix}conv_proj.weight", f"{prefix}encoder.pos_embedding", module.patch_size)
    return None


def patches_from_gradients(weight_grad: Tensor, position_grad: Tensor, image_shape: Sequence[int]) -> Tensor:
    """The image behind a batch of one from its patch and positional embeddings' gradients.

    Args:
        weight_grad: ``(D, C, P, P)`` the patch embedding's weight gradient.
        position_grad: ``(1, T, D)`` the positional embedding's gradient; its last ``H W / P^2``
            tokens are the patches' (the first ones are class tokens).
        image_shape: ``(C, H, W)``.

    Returns:
        ``(1, C, H, W)`` in ``weight_grad``'s dtype.
    """
    _, height, width = image_shape
    size = weight_grad.shape[-1]
    count = (height // size) * (width // size)
    tokens = position_grad.detach().double().reshape(-1, position_grad.shape[-1])[-count:]  # G: (N, D)
    weight = weight_grad.detach().double().flatten(1)  # G^T X: (D, C P P)
    patches = torch.linalg.lstsq(tokens.T, weight).solution  # X: (N, C P P)
    image = F.fold(patches.T[None], (height, width), kernel_size=size, stride=size)
    return image.to(weight_grad.dtype)


@register("april", "reads a ViT's image out of its patch and positional embeddings' gradients (no optimisation)",
          one_image=True, needs_positional_embedding=True)  # fmt: skip
class APRIL(ClosedFormAttack):
    """Recover one image from a ViT's patch and positional embeddings' gradients (:func:`patches_from_gradients`).

    Args:
        tie_channels: the data has one true channel repeated (e.g. MNIST as three channels):
            average the recovered channels and repeat the mean, which also averages their noise.
    """

    def __init__(self, tie_channels: bool = False) -> None:
        self.tie_channels = tie_channels

    def __call__(
        self,
        model: nn.Module,
        gradients: Mapping[str, Tensor],
        labels: Optional[Tensor] = None,
        shape: Sequence[int] = (1, 3, 32, 32),
    ) -> AttackResult:
        """Recover the image of a batch of one.

        Args:
            model: the attacked ViT (or a network holding one).
            gradients: the shared gradient by parameter name.
            labels: ``(1,)`` the label, or ``None`` to recover it from the last layer's bias gradient.
            shape: ``(1, C, H, W)`` of the batch.

        Raises:
            ValueError: if the batch is not a single image, the model has no ViT patch embedding,
                or its two gradients are not shared.
        """
        check_images(self.capabilities, shape)
        embedding = patch_embedding(model)
        if embedding is None:
            raise ValueError(f"april needs a torchvision VisionTransformer; {type(model).__name__} holds none")
        missing = [name for name in (embedding.weight, embedding.positions) if name not in gradients]
        if missing:
            raise ValueError(f"april needs the gradients of {missing}; the shared gradient lacks them")
        images = patches_from_gradients(gradients[embedding.weight], gradients[embedding.positions], shape[1:])
        return self.result(model, gradients, images, labels)


@register("april_inverting", "Inverting Gradients started from APRIL's recovery instead of noise",
          one_image=True, needs_positional_embedding=True)  # fmt: skip
class APRILInverting(InvertingGradients):
    """Inverting Gradients whose every problem starts from its victim's APRIL recovery.

    Where noise blurs the closed-form recovery, the optimisation refines it against every matched
    gradient, the prior and the pixel box. Its steps are smaller than Inverting Gradients' default,
    since it starts near the answer: from a recovery blurred by noise, 200 steps at lr 0.1 or 0.01
    moved the vit's reconstructions away from their victims (NCC 0.54 -> 0.38, 0.32) and 0.003
    kept them (0.51).

    Args:
        lr: Adam's learning rate.
        **kwargs: the other options of :class:`~ppp_lightning.attacks.inverting.InvertingGradients`.
    """

    def __init__(self, lr: float = 0.003, **kwargs: Any) -> None:
        super().__init__(lr=lr, **kwargs)

    def run(
        self,
        model: nn.Module,
        gradients: Sequence[Mapping[str, Tensor]],
        labels: Optional[Sequence[Optional[Tensor]]] = None,
        shape: Sequence[int] = (1, 3, 32, 32),
        init: Optional[Tensor] = None,
    ) -> list[AttackResult]:
        """Attack every victim from its APRIL recovery (``init``: given starts instead, as the base class)."""
        check_images(self.capabilities, shape)
        if init is None:
            recovered = APRIL(self.tie_channels).run(model, gradients, labels, shape)
            init = torch.stack([result.images for result in recovered])  # (V, 1, C, H, W): one start per victim
        return super().run(model, gradients, labels, shape, init)
