"""The typed record of one attack on a set of victims: what every consumer builds, and reads back.

The attack callback, the audit (and so calibrate and the evidence), and the Flower server all
build an :class:`AttackRecord` through :func:`~ppp_lightning.assessment.assess`; it becomes JSON
only at the edge (:meth:`AttackRecord.to_dict`, written by the reporter) and is read back with
:meth:`AttackRecord.from_dict` (which also reads the records of earlier versions). Its verdict is
derived, never stored apart from what decides it: :func:`~ppp_lightning.assessment.verdicts.judge` of the
attack's and the control's findings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from ppp_lightning.assessment.reidentification import POOL_SIZE
from ppp_lightning.assessment.verdicts import Findings, Identification, LeakRate, Verdict, judge, union_over_attacks
from ppp_lightning.attacks.result import AttackResult

__all__ = ["AttackRecord", "Convergence", "Scored", "union", "union_findings"]

# The scores of ReconstructionMetrics a record keeps.
SCORE_KEYS = ("per_image", "mean", "median", "max", "floor", "success_metric", "success_threshold")
# The keys a scored record holds besides those scores.
SCORED_KEYS = ("successes", "success_rate", "success_rule", "identified", "pool_size", "pool_seed", "convergence")
# The record keys derived from the findings (rewritten by to_dict, never read back).
DERIVED_KEYS = ("control", "findings", "leaked", "verdict", "outcome")
# Keys of records written before identification-aware verdicts, by their present name.
RENAMED = {"reidentified": "identified"}


@dataclass(frozen=True)
class Convergence:
    """How an attack's problems ended: per shared gradient, every restart's iterations and stop reason.

    Args:
        iterations: per gradient, the iterations each restart ran.
        stop_reasons: per gradient, each restart's ``converged``, ``budget`` or ``analytic``.
    """

    iterations: list[list[int]] = field(default_factory=list)
    stop_reasons: list[list[str]] = field(default_factory=list)

    @classmethod
    def of(cls, results: Sequence[AttackResult]) -> Convergence:
        """The convergence of an attack's results (one per shared gradient)."""
        return cls([[r.iterations for r in result.restarts] for result in results],
                   [[r.stop_reason for r in result.restarts] for result in results])  # fmt: skip

    @property
    def budget_share(self) -> float:
        """The share of problems (gradients x restarts) stopped by the budget; 0 without optimisation."""
        reasons = [reason for restarts in self.stop_reasons for reason in restarts]
        return sum(reason == "budget" for reason in reasons) / len(reasons) if reasons else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain values for a record."""
        return {"iterations": self.iterations, "stop_reasons": self.stop_reasons, "budget_share": self.budget_share}


@dataclass
class Scored:
    """One set of reconstructions scored against its victims: the two findings per victim and the scores.

    Args:
        scores: :class:`~ppp_lightning.assessment.metrics.ReconstructionMetrics`' scores (``per_image``,
            ``mean``, ``median``, ``max``, ``floor``, ``success_metric``, ``success_threshold``).
        reconstructed: per victim, whether the reconstruction is legible (the pixel rule, and
            identified where candidates were scored).
        identified: per victim, whether it is the nearest of its candidates (``None``: not scored).
        pool_size: ``K``, the candidates per victim.
        pool_seed: the seed of the candidates' draw.
        convergence: how the attack's problems ended (``None``: not recorded).
    """

    scores: dict[str, Any]
    reconstructed: list[bool]
    identified: Optional[list[bool]] = None
    pool_size: Optional[int] = None
    pool_seed: Optional[int] = None
    convergence: Optional[Convergence] = None

    def findings(self, attempts: int = 1) -> Findings:
        """The rates of both findings and the budget share."""
        identified = None
        if self.identified is not None and self.pool_size is not None:
            identified = Identification.of(self.identified, self.pool_size, attempts)
        share = None if self.convergence is None else self.convergence.budget_share
        return Findings(LeakRate.of(self.reconstructed), identified, share)

    def to_dict(self) -> dict[str, Any]:
        """Plain values: the scores, ``successes`` (reconstructed), ``identified`` and ``convergence``."""
        rule = "metric" if self.identified is None else "metric and identified"
        record = {**self.scores, "successes": list(self.reconstructed), "success_rule": rule,
                  "success_rate": sum(self.reconstructed) / len(self.reconstructed)}  # fmt: skip
        if self.identified is not None:
            record.update(identified=list(self.identified), pool_size=self.pool_size, pool_seed=self.pool_seed)
        if self.convergence is not None:
            record["convergence"] = self.convergence.to_dict()
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any], pool_size: Optional[int] = None) -> Scored:
        """Read :meth:`to_dict`'s values (a control's record may leave its pool size to its attack's).

        Records written before the pool size was recorded identified among :data:`POOL_SIZE`.
        """
        record = {RENAMED.get(key, key): value for key, value in record.items()}
        convergence, identified = record.get("convergence"), record.get("identified")
        return cls(
            {key: record[key] for key in SCORE_KEYS if key in record},
            list(record["successes"]),
            identified,
            record.get("pool_size", pool_size or (None if identified is None else POOL_SIZE)),
            record.get("pool_seed"),
            None if convergence is None else Convergence(convergence["iterations"], convergence["stop_reasons"]),
        )


@dataclass
class AttackRecord:
    """One attack on a set of victims: what ran (``context``), what it found, its control and its verdict.

    Args:
        context: what the consumer records about the run (attack, settings, step, defense,
            labels, seconds...), JSON-able.
        attack: the defended reconstructions, scored.
        control: the same attack without the defense, scored (``None``: no control ran).
    """

    context: dict[str, Any]
    attack: Scored
    control: Optional[Scored] = None

    @property
    def verdict(self) -> Verdict:
        """:func:`~ppp_lightning.assessment.verdicts.judge` of the attack's and the control's findings."""
        return judge(self.attack.findings(), None if self.control is None else self.control.findings())

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-able values (the edge: reporters and sinks take this)."""
        verdict = self.verdict
        record = {**self.context, **self.attack.to_dict(), "findings": verdict.defended.to_dict()}
        if self.control is not None:
            record["control"] = {**self.control.to_dict(), "findings": verdict.control.to_dict()}
        record.update(leaked=verdict.defended.reconstructed.to_dict(), verdict=str(verdict), outcome=verdict.outcome)
        return record

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> AttackRecord:
        """Read a record back (also one written before identification-aware verdicts)."""
        attack = Scored.from_dict(record)
        keys = set(SCORE_KEYS + SCORED_KEYS + DERIVED_KEYS) | set(RENAMED)
        control = record.get("control")
        return cls(
            {key: value for key, value in record.items() if key not in keys},
            attack,
            None if control is None else Scored.from_dict(control, attack.pool_size),
        )


def union_findings(scored: Sequence[Scored]) -> Findings:
    """The findings of any of several attacks per victim, each attack one more guess at identification.

    Raises:
        ValueError: if the attacks scored different numbers of victims, or none is given.
    """
    return union(scored).findings(attempts=len(scored))


def union(scored: Sequence[Scored]) -> Scored:
    """Per victim, the findings of any of several attacks on the same victims (no scores).

    Its :meth:`Scored.findings` takes ``attempts=len(scored)``: each attack is one more guess. How
    the attacks stopped is unknown where one of them did not record it.

    Raises:
        ValueError: if the attacks scored different numbers of victims, or none is given.
    """
    if not scored:
        raise ValueError("no attack to unite; allowed: one or more scored attacks")
    reconstructed = union_over_attacks({str(i): s.reconstructed for i, s in enumerate(scored)})
    identified = None
    if all(s.identified is not None for s in scored):
        identified = union_over_attacks({str(i): s.identified for i, s in enumerate(scored)})
    convergence = None
    if all(s.convergence is not None for s in scored):
        ran = [s.convergence for s in scored]
        convergence = Convergence([i for c in ran for i in c.iterations], [r for c in ran for r in c.stop_reasons])
    return Scored({}, reconstructed, identified, scored[0].pool_size, scored[0].pool_seed, convergence)
