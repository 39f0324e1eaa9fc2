"""Verdicts: success rates with exact confidence intervals, the union over attacks, and the control rule.

The one rule every verdict follows: a defense is said to stop an attack only when the same attack,
with the same budget, leaked the undefended case (the *control*) at :data:`CONTROL_RATE` or more.
Otherwise the verdict is "inconclusive": the attack may simply have been too weak.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Optional

from scipy.stats import beta


__all__ = ["CONTROL_RATE", "LeakRate", "Verdict", "clopper_pearson", "judge", "union_over_attacks"]

# The undefended case must leak at least this often for a "protected" verdict to mean anything.
CONTROL_RATE = 0.5


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) confidence interval of a success rate.

    Args:
        successes: ``k``, how many succeeded.
        trials: ``n``, how many were tried (at least 1).
        confidence: the interval's coverage.

    Returns:
        ``(low, high)``; e.g. 0/8 gives ``(0.0, 0.369)``.

    Raises:
        ValueError: if ``trials < 1``, ``successes`` is outside ``[0, trials]`` or ``confidence``
            is not in ``(0, 1)``.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"successes={successes}, trials={trials}; allowed: trials >= 1, 0 <= successes <= trials")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence}; allowed: a number in (0, 1)")
    alpha = 1 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return low, high


@dataclass(frozen=True)
class LeakRate:
    """``k`` of ``n`` victims leaked, with the 95% Clopper-Pearson interval.

    Args:
        leaked: ``k``.
        total: ``n``.
    """

    leaked: int
    total: int

    @classmethod
    def of(cls, outcomes: Sequence[bool]) -> LeakRate:
        """The rate of a sequence of per-victim outcomes."""
        return cls(sum(bool(o) for o in outcomes), len(outcomes))

    @property
    def rate(self) -> float:
        """``k / n``."""
        return self.leaked / self.total

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Clopper-Pearson interval."""
        return clopper_pearson(self.leaked, self.total)

    def __str__(self) -> str:
        low, high = self.interval
        return f"{self.leaked}/{self.total} (95% CI {low:.2f}-{high:.2f})"

    def to_dict(self) -> dict[str, float]:
        """Plain values for a record."""
        low, high = self.interval
        return {"leaked": self.leaked, "total": self.total, "rate": self.rate, "ci_low": low, "ci_high": high}


@dataclass(frozen=True)
class Verdict:
    """What may be said of a defense against one attack.

    Args:
        outcome: ``leaked`` (some victim leaked), ``protected`` (none did and the control passed)
            or ``inconclusive`` (none did, but neither did the undefended case often enough).
        defended: the rate with the defense.
        control: the same attack's rate without it (``None`` when no control ran).
    """

    outcome: Literal["leaked", "protected", "inconclusive"]
    defended: LeakRate
    control: Optional[LeakRate]

    def __str__(self) -> str:
        if self.outcome == "leaked":
            return f"leaked: {self.defended}"
        if self.outcome == "protected":
            return f"protected: {self.defended} leaked; control (without the audited defense) {self.control}"
        if self.control is None:
            return f"inconclusive: {self.defended} leaked, and no control ran without the defense"
        return (
            f"inconclusive: the attack did not succeed without the defense either "
            f"({self.control.leaked}/{self.control.total})"
        )


def judge(defended: LeakRate, control: Optional[LeakRate], control_rate: float = CONTROL_RATE) -> Verdict:
    """The verdict on a defense from its leak rate and its control's.

    Args:
        defended: victims leaked with the defense.
        control: the same victims and attack without the defense (``None``: no control ran).
        control_rate: the rate the control must reach for "protected".
    """
    if defended.leaked:
        return Verdict("leaked", defended, control)
    if control is not None and control.rate >= control_rate:
        return Verdict("protected", defended, control)
    return Verdict("inconclusive", defended, control)


def union_over_attacks(outcomes: Mapping[str, Sequence[bool]]) -> list[bool]:
    """Per victim, whether any attack leaked it.

    Args:
        outcomes: attack name -> per-victim outcomes (all the same length, the same victims).

    Raises:
        ValueError: if the attacks scored different numbers of victims.
    """
    lengths = {name: len(values) for name, values in outcomes.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"attacks scored different numbers of victims: {lengths}")
    return [any(values) for values in zip(*outcomes.values())]
