"""The gradient a client shares for a batch: one place, used by the attack callback, benchmarks and tests."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ppp_lightning.defenses.spec import ResolvedDefense
from ppp_lightning.losses import classification_terms

__all__ = ["client_gradient", "seeded_client_gradients"]


def client_gradient(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    defense: Optional[ResolvedDefense] = None,
    generator: Optional[torch.Generator] = None,
    noise_generator: Optional[torch.Generator] = None,
) -> dict[str, Tensor]:
    """The gradient of the client's loss (cross-entropy + PRECODE's KL) for one batch.

    The model runs in its current mode and PRECODE samples as in training. The model is left as it
    was: ``.grad`` fields, BatchNorm statistics, hooks on the parameters (a
    ``PartialPerturbation``'s) and the modules' attributes are untouched, because the pass runs on
    detached parameters and cloned buffers through :func:`torch.func.functional_call` and the KL
    is collected in a trace this function owns. It draws from the RNG PRECODE uses (its generator
    or torch's global one) unless ``generator`` is given.

    Args:
        model: the client's model (its ``forward`` maps images to logits).
        images: the batch, ``(N, C, H, W)``.
        labels: ``(N,)`` class indices.
        defense: the defense resolved on ``model``
            (:meth:`~ppp_lightning.defenses.spec.DefenseSpec.resolve`); ``None`` shares the clean gradient.
        generator: the source of PRECODE's noise sample for this pass (reproducible samples);
            ``None`` keeps each PRECODE's own source.
        noise_generator: the source of the defense's noise; ``None`` uses torch's global RNG.

    Returns:
        The shared gradient of every trainable parameter, by name as in ``model.named_parameters()``.

    Raises:
        ValueError: if a parameter of ``defense`` is not a trainable parameter of ``model``.
    """
    # Inference tensors (a Lightning validation context) cannot enter autograd: clone outside it.
    with torch.inference_mode(False), torch.enable_grad():
        params = {name: p.detach().requires_grad_(p.requires_grad) for name, p in model.named_parameters()}
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        forward = lambda: functional_call(model, (params, buffers), (images.clone(),))  # noqa: E731
        loss = classification_terms(forward, labels.clone(), generator).loss
        trainable = {name: p for name, p in params.items() if p.requires_grad}
        grads = torch.autograd.grad(loss, list(trainable.values()), materialize_grads=True)
    shared = {name: grad.detach() for name, grad in zip(trainable, grads)}
    return shared if defense is None else defense.apply(shared, noise_generator)


def seeded_client_gradients(
    model: nn.Module, images: Tensor, labels: Tensor, defense: Optional[ResolvedDefense], seed: int
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A batch's shared gradient under ``defense`` and its unperturbed twin, both reproducible.

    The twin is the positive control's gradient: the same batch and PRECODE sample (drawn with
    ``seed``) without the defense's perturbation (drawn with ``seed + 10_000``).

    Args:
        model: the client's model.
        images: the batch, ``(N, C, H, W)``.
        labels: ``(N,)`` class indices.
        defense: the resolved defense; ``None`` shares the clean gradient (then both are the same).
        seed: seed of the PRECODE sample and of the defense's noise.

    Returns:
        ``(shared, clean)``.
    """
    clean = client_gradient(model, images, labels, generator=torch.Generator().manual_seed(seed))
    if defense is None:
        return clean, clean
    return defense.apply(clean, torch.Generator().manual_seed(seed + 10_000)), clean
