"""The gradient a client shares for a batch: one place, used by the attack callback, benchmarks and tests."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ppp_lightning.classifier import classification_loss
from ppp_lightning.perturbation import GradientPerturbation
from ppp_lightning.precode import PRECODE

__all__ = ["client_gradient", "precode_generator"]


def client_gradient(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    perturbation: Optional[GradientPerturbation] = None,
    parameter_names: Optional[Sequence[str]] = None,
    generator: Optional[torch.Generator] = None,
    noise_generator: Optional[torch.Generator] = None,
) -> dict[str, Tensor]:
    """The gradient of the client's loss (cross-entropy + PRECODE's KL) for one batch.

    The model runs in its current mode and PRECODE samples as in training. The model is left as it
    was: ``.grad`` fields, BatchNorm statistics and hooks on the parameters (a
    ``PartialPerturbation``'s) are untouched, because the pass runs on detached parameters and
    cloned buffers through :func:`torch.func.functional_call`. It draws from the RNG PRECODE uses
    (its generator or torch's global one) unless ``generator`` is given.

    Args:
        model: the client's model (its ``forward`` maps images to logits).
        images: the batch, ``(N, C, H, W)``.
        labels: ``(N,)`` class indices.
        perturbation: the defense's perturbation, applied to ``parameter_names`` as one joint set.
        parameter_names: the parameters the perturbation applies to; ``None`` for all.
        generator: the source of PRECODE's noise sample for this pass (reproducible samples);
            ``None`` keeps each PRECODE's own source.
        noise_generator: the source of the perturbation's noise; ``None`` uses torch's global RNG.

    Returns:
        The shared gradient of every trainable parameter, by name as in ``model.named_parameters()``.

    Raises:
        ValueError: if a name in ``parameter_names`` is not a trainable parameter of ``model``.
    """
    # Inference tensors (a Lightning validation context) cannot enter autograd: clone outside it.
    with torch.inference_mode(False), torch.enable_grad(), precode_generator(model, generator):
        params = {name: p.detach().requires_grad_(p.requires_grad) for name, p in model.named_parameters()}
        buffers = {name: b.clone() for name, b in model.named_buffers()}
        logits = functional_call(model, (params, buffers), (images.clone(),))
        trainable = {name: p for name, p in params.items() if p.requires_grad}
        loss = classification_loss(model, logits, labels.clone())
        grads = torch.autograd.grad(loss, list(trainable.values()), materialize_grads=True)
    shared = {name: grad.detach() for name, grad in zip(trainable, grads)}
    if perturbation is None:
        return shared
    names = list(shared) if parameter_names is None else list(parameter_names)
    unknown = sorted(set(names) - set(shared))
    if unknown:
        raise ValueError(f"parameter_names {unknown} are not trainable parameters; available: {list(shared)}")
    return {**shared, **perturbation({name: shared[name] for name in names}, noise_generator)}


@contextmanager
def precode_generator(model: nn.Module, generator: Optional[torch.Generator]) -> Iterator[None]:
    """Let every PRECODE of ``model`` draw from ``generator`` for the duration (no-op for ``None``).

    Args:
        model: any module; its PRECODE modules get their own generators back afterwards.
        generator: the source of PRECODE's noise samples inside the block.
    """
    modules = [m for m in model.modules() if isinstance(m, PRECODE)] if generator is not None else []
    saved = [m.generator for m in modules]
    for module in modules:
        module.generator = generator
    try:
        yield
    finally:
        for module, own in zip(modules, saved):
            module.generator = own
