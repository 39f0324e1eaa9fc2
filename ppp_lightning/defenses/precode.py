"""PRECODE: a variational bottleneck that makes the shared gradients stochastic."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ppp_lightning.validation import check_number

__all__ = ["PRECODE", "BottleneckTrace", "trace_bottlenecks", "without_sampling"]

EVAL_SAMPLING = ("sample", "mean")
KL_UNITS = ("bits", "nats")


class PRECODE(nn.Module):
    """Variational bottleneck of Scheliga et al. (2022), placed before a classifier head.

    ``encoder = Linear(d, 2K)`` yields ``mu`` and a raw scale, ``sigma = softplus(raw)``,
    ``z = mu + sigma * eps`` with ``eps ~ N(0, I)``, and ``decoder = Linear(K, d)`` maps back.
    Inputs of any shape ``(N, *S)`` are flattened to ``(N, d)`` and the output has shape ``(N, *S)``.

    The module keeps no state between passes. Inside :func:`trace_bottlenecks` every pass records
    ``beta * KL(N(mu, sigma^2) || N(0, I))`` (summed over the latent dimensions, averaged over the
    batch, in ``kl_unit``: bits by default as the reference implementation reports it, i.e. nats
    divided by ln 2) and its noise sample ``eps`` in the trace the caller owns;
    :func:`ppp_lightning.losses.classification_terms` does that for the training loss.

    Args:
        in_features: ``d``, the number of input features (product of the non-batch dimensions).
        latent_dim: ``K``, the size of the stochastic code (reference: 256).
        beta: weight of the KL term (reference: 1e-3).
        eval_sampling: behaviour in evaluation mode: ``"sample"`` draws ``eps`` as in training
            (the reference behaviour), ``"mean"`` uses ``z = mu``. Training always samples.
        kl_unit: unit of :attr:`kl`, ``"bits"`` (reference) or ``"nats"``.
        generator: optional ``torch.Generator`` for the draws of ``eps`` (on the input's device).

    Raises:
        ValueError: if a size is not positive, ``beta`` is negative or an option is unknown.
    """

    def __init__(
        self,
        in_features: int,
        latent_dim: int = 256,
        beta: float = 1e-3,
        eval_sampling: Literal["sample", "mean"] = "sample",
        kl_unit: Literal["bits", "nats"] = "bits",
        generator: Optional[torch.Generator] = None,
    ) -> None:
        super().__init__()
        if in_features < 1 or latent_dim < 1:
            raise ValueError(
                f"PRECODE needs positive sizes, got in_features={in_features}, latent_dim={latent_dim}"
            )
        beta = check_number("beta", beta, minimum=0)
        if eval_sampling not in EVAL_SAMPLING:
            raise ValueError(f"eval_sampling={eval_sampling!r}; allowed: {', '.join(EVAL_SAMPLING)}")
        if kl_unit not in KL_UNITS:
            raise ValueError(f"kl_unit={kl_unit!r}; allowed: {', '.join(KL_UNITS)}")
        self.in_features = in_features
        self.latent_dim = latent_dim
        self.beta = beta
        self.eval_sampling = eval_sampling
        self.kl_unit = kl_unit
        self.generator = generator
        self.encoder = nn.Linear(in_features, 2 * latent_dim)
        self.decoder = nn.Linear(latent_dim, in_features)

    @property
    def samples(self) -> bool:
        """Whether the next forward pass draws ``eps`` (always in training mode)."""
        return self.training or self.eval_sampling == "sample"

    def forward(self, x: Tensor, eps: Optional[Tensor] = None) -> Tensor:
        """Encode, sample and decode ``x``.

        Args:
            x: input of shape ``(N, *S)`` with ``prod(S) == in_features``.
            eps: a given noise sample of shape ``(N, latent_dim)``; it replaces the random draw
                (used to replay a client's sample or by the adaptive attack).

        Returns:
            The decoded tensor, of the same shape as ``x``.
        """
        trace = _ACTIVE_TRACE.get()
        mu, raw = self.encoder(x.flatten(1)).chunk(2, dim=1)
        sigma = F.softplus(raw)
        if eps is None and self.samples:
            generator = self.generator if trace is None or trace.generator is None else trace.generator
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        z = mu if eps is None else mu + sigma * eps
        if trace is not None:
            trace.kl_terms.append(self.beta * self.kl_divergence(mu, sigma))
            trace.eps.append(None if eps is None else eps.detach())
        return self.decoder(z).reshape(x.shape)

    def kl_divergence(self, mu: Tensor, sigma: Tensor) -> Tensor:
        """``KL(N(mu, sigma^2) || N(0, I))`` summed over latent dims, batch mean, in ``kl_unit``."""
        kl = 0.5 * (mu.pow(2) + sigma.pow(2) - 2 * torch.log(sigma) - 1).sum(dim=1).mean()
        return kl / math.log(2) if self.kl_unit == "bits" else kl

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, latent_dim={self.latent_dim}, beta={self.beta}, "
            f"eval_sampling={self.eval_sampling!r}, kl_unit={self.kl_unit!r}"
        )


@dataclass
class BottleneckTrace:
    """What the PRECODE passes inside one :func:`trace_bottlenecks` block produced, in call order.

    Attributes:
        generator: the source of the noise samples inside the block (``None``: each module's own).
        kl_terms: every pass's ``beta``-weighted KL term (scalars, with their autograd graph).
        eps: every pass's noise sample, detached (``None`` where the mean was used).
    """

    generator: Optional[torch.Generator] = None
    kl_terms: list[Tensor] = field(default_factory=list)
    eps: list[Optional[Tensor]] = field(default_factory=list)

    def kl(self, like: Tensor) -> Tensor:
        """The sum of the KL terms (zero without PRECODE), as ``like``'s dtype and device."""
        return torch.stack(self.kl_terms).sum().to(like) if self.kl_terms else like.new_zeros(())


_ACTIVE_TRACE: ContextVar[Optional[BottleneckTrace]] = ContextVar("ppp_lightning_bottleneck_trace", default=None)


@contextmanager
def trace_bottlenecks(generator: Optional[torch.Generator] = None) -> Iterator[BottleneckTrace]:
    """Collect the KL terms and noise samples of every PRECODE pass run inside the block.

    The trace belongs to the caller: modules keep nothing, so copies, attacks and gradient
    computations never see a previous pass's values. Blocks nest; the innermost one records.

    Args:
        generator: draw every PRECODE's noise inside the block from this generator (to replay a
            client's sample or keep a module's own stream untouched); ``None`` keeps each module's.

    Yields:
        The :class:`BottleneckTrace`, filled as the forward passes run.
    """
    trace = BottleneckTrace(generator)
    token = _ACTIVE_TRACE.set(trace)
    try:
        yield trace
    finally:
        _ACTIVE_TRACE.reset(token)


def without_sampling(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose PRECODE modules use ``z = mu`` (the same weights, the defense's noise off).

    The positive control of PRECODE itself: the client's gradient and the attacker's model without
    the sampling that makes the gradients stochastic. The PRECODE modules are put in evaluation
    mode with ``eval_sampling="mean"``; every other module keeps its mode.

    Args:
        model: any module (left unchanged).
    """
    plain = copy.deepcopy(model)
    for module in plain.modules():
        if isinstance(module, PRECODE):
            module.eval_sampling = "mean"
            module.eval()
    return plain
