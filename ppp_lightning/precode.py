"""PRECODE: a variational bottleneck that makes the shared gradients stochastic."""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PRECODE", "bottleneck_kl"]

EVAL_SAMPLING = ("sample", "mean")
KL_UNITS = ("bits", "nats")


class PRECODE(nn.Module):
    """Variational bottleneck of Scheliga et al. (2022), placed before a classifier head.

    ``encoder = Linear(d, 2K)`` yields ``mu`` and a raw scale, ``sigma = softplus(raw)``,
    ``z = mu + sigma * eps`` with ``eps ~ N(0, I)``, and ``decoder = Linear(K, d)`` maps back.
    Inputs of any shape ``(N, *S)`` are flattened to ``(N, d)`` and the output has shape ``(N, *S)``.

    After every forward pass :attr:`kl` holds ``beta * KL(N(mu, sigma^2) || N(0, I))``, summed over
    the latent dimensions and averaged over the batch, in ``kl_unit`` (bits by default, as the
    reference implementation reports it, i.e. nats divided by ln 2). Add it to the training loss
    (:func:`bottleneck_kl` collects it from any model). :attr:`last_eps` holds the noise sample of
    the last pass (``None`` when the mean was used) so that attacks and tests can reproduce it.

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
        if beta < 0:
            raise ValueError(f"PRECODE beta must be >= 0, got {beta}")
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
        self.kl: Optional[Tensor] = None
        self.last_eps: Optional[Tensor] = None

    def __getstate__(self) -> dict[str, Any]:
        # The KL term holds the autograd graph of the last pass: copies and pickles start without it.
        return {**self.__dict__, "kl": None}

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
        mu, raw = self.encoder(x.flatten(1)).chunk(2, dim=1)
        sigma = F.softplus(raw)
        if eps is None and self.samples:
            eps = torch.randn(mu.shape, generator=self.generator, device=mu.device, dtype=mu.dtype)
        z = mu if eps is None else mu + sigma * eps
        self.last_eps = None if eps is None else eps.detach()
        self.kl = self.beta * self.kl_divergence(mu, sigma)
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


def bottleneck_kl(model: nn.Module) -> Tensor:
    """Sum of the KL terms of every :class:`PRECODE` in ``model`` after its last forward pass.

    Args:
        model: any module; modules without PRECODE contribute zero.

    Returns:
        A scalar tensor (zero when the model holds no PRECODE or it has not run yet).
    """
    terms = [m.kl for m in model.modules() if isinstance(m, PRECODE) and m.kl is not None]
    return torch.stack(terms).sum() if terms else torch.zeros(())
