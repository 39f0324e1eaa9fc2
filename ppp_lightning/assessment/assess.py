"""Score one attack's reconstructions and state its findings: the path every consumer reports through.

Scores (:class:`~ppp_lightning.assessment.metrics.ReconstructionMetrics`), identification among candidates
(:class:`~ppp_lightning.assessment.reidentification.Reidentifier`) and how the attack converged come out as
:class:`~ppp_lightning.assessment.record.Scored` findings, for the attack and its control, with the
reconstructions in the victims' order for the sheet; :meth:`Assessment.record` makes the typed
record whose verdict :func:`~ppp_lightning.assessment.verdicts.judge` decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from torch import Tensor

from ppp_lightning.assessment.metrics import ReconstructionMetrics
from ppp_lightning.assessment.record import AttackRecord, Convergence, Scored
from ppp_lightning.assessment.reidentification import Reidentifier

__all__ = ["Assessment", "assess"]


@dataclass
class Assessment:
    """An attack's findings and its reconstructions in the victims' order (the control's likewise).

    Args:
        attack: the defended reconstructions' findings.
        reconstructions: ``(N, C, H, W)`` matched to the victims.
        control: the control's findings (``None`` without a control).
        control_reconstructions: the control's reconstructions, matched likewise.
    """

    attack: Scored
    reconstructions: Tensor
    control: Optional[Scored] = None
    control_reconstructions: Optional[Tensor] = None

    def record(self, context: dict[str, Any]) -> AttackRecord:
        """The typed record of this assessment under ``context`` (what ran, where, when)."""
        return AttackRecord(context, self.attack, self.control)


def assess(
    metrics: ReconstructionMetrics,
    reconstructions: Tensor,
    victims: Tensor,
    labels: Tensor,
    floor: Optional[Tensor] = None,
    reidentifier: Optional[Reidentifier] = None,
    control: Optional[Tensor] = None,
    batch_size: Optional[int] = None,
    convergence: Optional[Convergence] = None,
    control_convergence: Optional[Convergence] = None,
) -> Assessment:
    """Score the reconstructions (and the control's): both findings per victim and the scores.

    Args:
        metrics: the scores and the pixel rule.
        reconstructions: ``(N, C, H, W)`` normalised, in any order.
        victims: ``(N, C, H, W)`` normalised ground truth.
        labels: ``(N,)`` the victims' labels (to draw their candidates).
        floor: ``(C, H, W)`` the trivial reconstruction (the dataset's mean image).
        reidentifier: identify each victim among same-class candidates (``None``: not scored, and
            no verdict can then read "protected").
        control: the same attack's reconstructions without the defense (``None``: no control ran).
        batch_size: victims were attacked in consecutive batches of this size (one gradient each):
            reconstructions are matched within their batch (``None``: all in one).
        convergence: how the attack's problems ended.
        control_convergence: how the control's problems ended.
    """
    own, ordered = _scored(metrics, reconstructions, victims, labels, floor, reidentifier, batch_size, convergence)
    if control is None:
        return Assessment(own, ordered)
    checked, control_ordered = _scored(
        metrics, control, victims, labels, floor, reidentifier, batch_size, control_convergence
    )
    return Assessment(own, ordered, checked, control_ordered)


def _scored(
    metrics: ReconstructionMetrics,
    reconstructions: Tensor,
    victims: Tensor,
    labels: Tensor,
    floor: Optional[Tensor],
    reidentifier: Optional[Reidentifier],
    batch_size: Optional[int],
    convergence: Optional[Convergence],
) -> tuple[Scored, Tensor]:
    scores = metrics(reconstructions, victims, floor, batch_size)
    ordered = reconstructions[scores.pop("order")]
    legible = scores.pop("successes")
    del scores["success_rate"]
    if reidentifier is None:
        return Scored(scores, legible, convergence=convergence), ordered
    # a legible class prototype is no reconstruction of this image: it must also identify its victim
    identified = [r.reidentified for r in reidentifier(ordered, victims, labels)]
    reconstructed = [bool(s and f) for s, f in zip(legible, identified)]
    pool = {"pool_size": reidentifier.size, "pool_seed": reidentifier.seed}
    return Scored(scores, reconstructed, identified, convergence=convergence, **pool), ordered
