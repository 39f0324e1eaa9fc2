"""The defenses the privacy-utility benchmark compares, as defense specs."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from ppp_lightning.defenses.spec import DefenseSpec

__all__ = ["FAMILIES", "Defense", "expand_defenses"]

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
        """The cell's name in the results, e.g. ``ppp@1`` or ``prune@0.1``."""
        if self.family == "prune":
            return f"prune@{self.keep_ratio:g}"
        return f"{self.family}@{self.sigma:g}" if self.sigma else self.family

    @property
    def uses_precode(self) -> bool:
        """Whether the model has a PRECODE bottleneck."""
        return self.family in PRECODE_FAMILIES

    def spec(self) -> Optional[DefenseSpec]:
        """The gradient perturbation of the family; ``None`` when gradients are shared as they are."""
        if self.family == "prune":
            return DefenseSpec("all", mechanism="none", keep_ratio=self.keep_ratio)
        if self.family in ("none", "precode"):
            return None
        spec = DefenseSpec("all" if self.family == "noise_all" else "before_bottleneck", sigma=self.sigma, relative=True)
        return replace(spec, include_encoder=False) if self.family == "ppp_no_encoder" else spec


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
