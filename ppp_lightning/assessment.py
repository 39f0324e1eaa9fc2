"""Score one attack's reconstructions and state its verdict: the path every consumer reports through.

Scores (:class:`~ppp_lightning.metrics.ReconstructionMetrics`), re-identification
(:class:`~ppp_lightning.reidentification.Reidentifier`), the control's scores and the verdict
(:func:`~ppp_lightning.verdicts.judge`) come out as one record, with the reconstructions in the
victims' order for the sheet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from torch import Tensor

from ppp_lightning.metrics import ReconstructionMetrics
from ppp_lightning.reidentification import Reidentifier
from ppp_lightning.verdicts import LeakRate, judge

__all__ = ["Assessment", "assess"]


@dataclass
class Assessment:
    """An attack's record fields and its reconstructions in the victims' order.

    Args:
        record: scores, ``reidentified``, ``control`` (when one ran), ``leaked``, ``verdict``, ``outcome``.
        reconstructions: ``(N, C, H, W)`` matched to the victims.
        control: the control's reconstructions, matched likewise (``None`` without a control).
    """

    record: dict[str, Any]
    reconstructions: Tensor
    control: Optional[Tensor] = None


def assess(
    metrics: ReconstructionMetrics,
    reconstructions: Tensor,
    victims: Tensor,
    labels: Tensor,
    floor: Optional[Tensor] = None,
    reidentifier: Optional[Reidentifier] = None,
    control: Optional[Tensor] = None,
    batch_size: Optional[int] = None,
) -> Assessment:
    """Score the reconstructions (and the control's) and judge the defense.

    Args:
        metrics: the scores and the success rule.
        reconstructions: ``(N, C, H, W)`` normalised, in any order.
        victims: ``(N, C, H, W)`` normalised ground truth.
        labels: ``(N,)`` the victims' labels (for re-identification).
        floor: ``(C, H, W)`` the trivial reconstruction (the dataset's mean image).
        reidentifier: re-identify each victim among same-class rivals (``None``: not scored).
        control: the same attack's reconstructions without the defense (``None``: no control ran).
        batch_size: victims were attacked in consecutive batches of this size (one gradient each):
            reconstructions are matched within their batch (``None``: all in one).
    """
    own = _scored(metrics, reconstructions, victims, labels, floor, reidentifier, batch_size)
    record = dict(own.record)
    verdict_control = None
    if control is not None:
        checked = _scored(metrics, control, victims, labels, floor, reidentifier, batch_size)
        kept = ("per_image", "mean", "successes", "success_rate", "reidentified")
        record["control"] = {k: checked.record[k] for k in kept if k in checked.record}
        verdict_control = LeakRate.of(checked.record["successes"])
    leaked = LeakRate.of(record["successes"])
    verdict = judge(leaked, verdict_control)
    record.update(leaked=leaked.to_dict(), verdict=str(verdict), outcome=verdict.outcome)
    return Assessment(record, own.reconstructions, None if control is None else checked.reconstructions)


def _scored(
    metrics: ReconstructionMetrics,
    reconstructions: Tensor,
    victims: Tensor,
    labels: Tensor,
    floor: Optional[Tensor],
    reidentifier: Optional[Reidentifier],
    batch_size: Optional[int] = None,
) -> Assessment:
    scores = metrics(reconstructions, victims, floor, batch_size)
    ordered = reconstructions[scores["order"]]
    if reidentifier is not None:  # a legible class prototype is no leak of this image: it must also re-identify
        found = [r.reidentified for r in reidentifier(ordered, victims, labels)]
        successes = [bool(s and f) for s, f in zip(scores["successes"], found)]
        scores.update(reidentified=found, pool_size=reidentifier.size, pool_seed=reidentifier.seed, successes=successes)
        scores.update(success_rate=sum(successes) / len(successes), success_rule="metric and re-identified")
    return Assessment(scores, ordered)
