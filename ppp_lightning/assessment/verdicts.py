"""Verdicts: success rates with exact confidence intervals, the union over attacks, and the control rule.

Two findings per victim: *reconstructed* (the reconstruction is legible by the calibrated pixel
rule) and *identified* (the victim is the nearest of its ``K`` candidates, chance ``1/K``). An
attack *leaked* when it reconstructed any victim or identified victims more often than chance (an
exact one-sided binomial test at :data:`ALPHA`). A defense is said to stop an attack (*protected*)
only when nothing leaked, the attack converged rather than ran out of budget, and the same attack
with the same budget leaked without the defense (the *control*); otherwise "inconclusive", with
the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Optional

from scipy.stats import beta, binom

__all__ = [
    "ALPHA",
    "BUDGET_SHARE",
    "Findings",
    "Identification",
    "LeakRate",
    "Verdict",
    "binomial_p_value",
    "clopper_pearson",
    "judge",
    "union_over_attacks",
]

# Identification above chance at this level (one-sided) is a leak.
ALPHA = 0.05
# An attack most of whose problems ran out of budget may not have converged: it cannot show protection.
BUDGET_SHARE = 0.5


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
class Identification:
    """``k`` of ``n`` victims picked out as the nearest of their ``K`` candidates, tested against chance.

    Args:
        identified: ``k``.
        total: ``n``.
        pool_size: ``K``, the candidates per victim (the victim and ``K - 1`` images of its class).
        attempts: guesses per victim (a union over ``a`` attacks has ``a``): chance is
            ``1 - (1 - 1/K) ** attempts``.
    """

    identified: int
    total: int
    pool_size: int
    attempts: int = 1

    @classmethod
    def of(cls, outcomes: Sequence[bool], pool_size: int, attempts: int = 1) -> Identification:
        """The identification of a sequence of per-victim outcomes."""
        return cls(sum(bool(o) for o in outcomes), len(outcomes), pool_size, attempts)

    @property
    def chance(self) -> float:
        """The probability that guessing identifies a victim."""
        return 1 - (1 - 1 / self.pool_size) ** self.attempts

    @property
    def rate(self) -> float:
        """``k / n``."""
        return self.identified / self.total

    @property
    def interval(self) -> tuple[float, float]:
        """The 95% Clopper-Pearson interval of the rate."""
        return clopper_pearson(self.identified, self.total)

    @property
    def advantage(self) -> float:
        """How far the rate is above chance (negative below it)."""
        return self.rate - self.chance

    @property
    def p_value(self) -> float:
        """The exact one-sided binomial p-value of ``k`` or more identified by chance."""
        return binomial_p_value(self.identified, self.total, self.chance)

    @property
    def above_chance(self) -> bool:
        """Identification is above chance at level :data:`ALPHA`."""
        return self.p_value < ALPHA

    def __str__(self) -> str:
        low, high = self.interval
        chance = f"1/{self.pool_size}" if self.attempts == 1 else f"{self.chance:.3f}"
        above = "above" if self.above_chance else "not above"
        interval = f"95% CI {low:.2f}-{high:.2f}; chance {chance}, p {self.p_value:.2g}"
        return f"{self.identified}/{self.total} {above} chance ({interval})"

    def to_dict(self) -> dict[str, float]:
        """Plain values for a record."""
        low, high = self.interval
        return {"identified": self.identified, "total": self.total, "rate": self.rate, "ci_low": low, "ci_high": high,
                "pool_size": self.pool_size, "chance": self.chance, "advantage": self.advantage,
                "p_value": self.p_value, "above_chance": self.above_chance}  # fmt: skip


def binomial_p_value(successes: int, trials: int, chance: float) -> float:
    """``P(X >= successes)`` for ``X ~ Binomial(trials, chance)``: the exact one-sided test against chance.

    Raises:
        ValueError: if the counts are impossible or ``chance`` is not in ``(0, 1)``.
    """
    if trials < 1 or not 0 <= successes <= trials:
        raise ValueError(f"successes={successes}, trials={trials}; allowed: trials >= 1, 0 <= successes <= trials")
    if not 0 < chance < 1:
        raise ValueError(f"chance={chance}; allowed: a probability in (0, 1)")
    return float(binom.sf(successes - 1, trials, chance))


@dataclass(frozen=True)
class Findings:
    """What an attack learned of its victims: who it reconstructed, who it identified, and how it stopped.

    Args:
        reconstructed: victims whose reconstruction is legible (the calibrated pixel rule).
        identified: victims picked out among their candidates (``None``: no candidates to score against).
        budget_share: the share of the attack's problems stopped by its iteration budget rather
            than by converging (0 for attacks without optimisation; ``None``: not recorded).
    """

    reconstructed: LeakRate
    identified: Optional[Identification] = None
    budget_share: Optional[float] = None

    @property
    def leaked(self) -> bool:
        """Some victim was reconstructed, or identification is above chance."""
        return bool(self.reconstructed.leaked) or (self.identified is not None and self.identified.above_chance)

    def __str__(self) -> str:
        parts = [f"reconstructed {self.reconstructed}"]
        if self.identified is not None:  # the finding that leaked comes first
            parts.insert(0 if self.identified.above_chance else 1, f"identified {self.identified}")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a record."""
        identified = None if self.identified is None else self.identified.to_dict()
        return {"reconstructed": self.reconstructed.to_dict(), "identified": identified,
                "budget_share": self.budget_share, "leaked": self.leaked}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """What may be said of a defense against one attack (see the module doc).

    Args:
        outcome: ``leaked``, ``protected`` or ``inconclusive``.
        defended: the findings with the defense.
        control: the same attack's findings without it (``None`` when no control ran).
        reason: why an outcome is inconclusive (empty otherwise).
    """

    outcome: Literal["leaked", "protected", "inconclusive"]
    defended: Findings
    control: Optional[Findings]
    reason: str = ""

    def __str__(self) -> str:
        control = "" if self.control is None else f"; control (without the audited defense): {self.control}"
        if self.outcome == "inconclusive":
            return f"inconclusive ({self.reason}): {self.defended}{control}"
        return f"{self.outcome}: {self.defended}{control}"


def judge(defended: Findings, control: Optional[Findings]) -> Verdict:
    """The verdict on a defense from its findings and its control's.

    *Leaked* when a victim was reconstructed or identification is above chance; *protected* only
    when neither holds, identification was scored, the attack mostly converged (at most
    :data:`BUDGET_SHARE` of its problems stopped by the budget, as recorded) and the control leaked
    by the same rule; *inconclusive* otherwise, with the reason.

    Args:
        defended: the findings with the defense.
        control: the same victims and attack without the defense (``None``: no control ran).
    """
    if defended.leaked:
        return Verdict("leaked", defended, control)
    reasons = []
    if control is None:
        reasons.append("no control ran without the defense")
    elif not control.leaked:
        reasons.append("the attack did not leak without the defense either")
    if defended.identified is None:
        reasons.append("identification was not scored (no candidates)")
    if defended.budget_share is None:
        reasons.append("how the attack stopped was not recorded")
    elif defended.budget_share > BUDGET_SHARE:
        reasons.append(f"the attack stopped at its budget ({defended.budget_share:.0%} of its problems)")
    if reasons:
        return Verdict("inconclusive", defended, control, "; ".join(reasons))
    return Verdict("protected", defended, control)


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
