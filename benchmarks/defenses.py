"""The defenses the privacy-utility benchmark compares, as PartialPerturbation settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from callbacks import PartialPerturbation

__all__ = ["Defense", "expand_defenses"]

FAMILIES = ("none", "noise_all", "precode", "ppp", "ppp_no_encoder", "prune")
PRECODE_FAMILIES = ("precode", "ppp", "ppp_no_encoder")


@dataclass(frozen=True)
class Defense:
    """One defense setting.

    Args:
        family: ``none``, ``noise_all`` (noise on every gradient, no PRECODE), ``precode``,
            ``ppp`` (PRECODE + noise before the bottleneck, encoder included), ``ppp_no_encoder``
            (encoder left clean) or ``prune`` (gradient pruning, no PRECODE).
        sigma: noise std relative to each perturbed layer's clean-gradient RMS.
        keep_ratio: fraction of gradient entries kept by pruning.
    """

    family: str
    sigma: float = 0.0
    keep_ratio: Optional[float] = None

    @property
    def key(self) -> str:
        if self.family == "prune":
            return f"prune@{self.keep_ratio:g}"
        return f"{self.family}@{self.sigma:g}" if self.sigma else self.family

    @property
    def uses_precode(self) -> bool:
        return self.family in PRECODE_FAMILIES

    def perturbation_kwargs(self) -> Optional[dict[str, Any]]:
        """:class:`~callbacks.PartialPerturbation` arguments, ``None`` for no perturbation."""
        if self.family == "prune":
            return {"layers": "all", "mechanism": "none", "keep_ratio": self.keep_ratio}
        if self.family in ("none", "precode"):
            return None
        layers = "all" if self.family == "noise_all" else "before_bottleneck"
        return {"layers": layers, "include_encoder": self.family != "ppp_no_encoder", "sigma": self.sigma, "relative": True}

    def callback(self, seed: int) -> Optional[PartialPerturbation]:
        kwargs = self.perturbation_kwargs()
        return None if kwargs is None else PartialPerturbation(seed=seed, **kwargs)


def expand_defenses(families: list[str], sigmas: list[float], keep_ratios: list[float]) -> list[Defense]:
    """Every defense setting: noise families at each sigma, pruning at each keep ratio.

    Raises:
        ValueError: if a family is unknown.
    """
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"defenses {unknown} unknown; allowed: {', '.join(FAMILIES)}")
    out: list[Defense] = []
    for family in families:
        if family in ("noise_all", "ppp", "ppp_no_encoder"):
            out += [Defense(family, sigma) for sigma in sigmas]
        elif family == "prune":
            out += [Defense(family, keep_ratio=ratio) for ratio in keep_ratios]
        else:
            out.append(Defense(family))
    return out
