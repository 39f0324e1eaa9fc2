"""The client's training loss: cross-entropy plus the KL term of every PRECODE in the model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ppp_lightning.defenses.precode import trace_bottlenecks

__all__ = ["LossTerms", "classification_terms"]


@dataclass(frozen=True)
class LossTerms:
    """One forward pass's logits and loss terms.

    Attributes:
        logits: ``(N, num_classes)`` scores.
        ce: the cross-entropy.
        kl: the summed ``beta``-weighted KL terms of the PRECODE passes (zero without PRECODE).
    """

    logits: Tensor
    ce: Tensor
    kl: Tensor

    @property
    def loss(self) -> Tensor:
        """What the client minimises: ``ce + kl``."""
        return self.ce + self.kl


def classification_terms(
    forward: Callable[[], Tensor], target: Tensor, generator: Optional[torch.Generator] = None
) -> LossTerms:
    """Run ``forward`` and return its logits with the client's loss terms.

    The KL terms come from the PRECODE passes of this very call (a trace the function owns), never
    from values left on a module, so the loss is right under copies, ``torch.func`` transforms and
    interleaved passes. Used by :class:`~ppp_lightning.ImageClassifier`, the attacks (the
    attacker's dummy loss) and :func:`~ppp_lightning.gradients.client_gradient`.

    Args:
        forward: computes the logits, e.g. ``lambda: model(images)``.
        target: ``(N,)`` class indices, or ``(N, num_classes)`` class probabilities.
        generator: source of PRECODE's noise samples in this pass; ``None`` keeps each module's.

    Returns:
        The :class:`LossTerms`; ``.loss`` is cross-entropy plus KL.
    """
    with trace_bottlenecks(generator) as trace:
        logits = forward()
    ce = F.cross_entropy(logits, target)
    return LossTerms(logits, ce, trace.kl(ce))
