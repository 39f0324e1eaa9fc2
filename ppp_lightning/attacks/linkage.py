"""Candidate linkage: a server that holds candidate images picks the one whose gradient matches the shared one.

Its own threat model: the attacker already holds the victim's image among ``K`` candidates and
only needs to tell which one the client trained on. No reconstruction-then-identify attack can
identify a victim more often than the best linkage of its gradient, so linkage bounds what those
attacks reach; it is never in the default suite and is reported apart from them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional

import torch
from torch import Tensor, nn

from ppp_lightning.attacks.matching import known_labels
from ppp_lightning.attacks.registry import check_images, register
from ppp_lightning.attacks.result import AttackResult
from ppp_lightning.attacks.targets import TARGETS, Target, check_target, select_gradients
from ppp_lightning.gradients import client_gradient

__all__ = ["LINKAGE", "CandidateLinkage"]

LINKAGE = "linkage (the attacker holds the candidates)"


@register("linkage", "picks, from candidates the attacker holds, the one whose gradient best matches",
          one_image=True, needs_candidates=True, targets=TARGETS, threat_model=LINKAGE)  # fmt: skip
class CandidateLinkage:
    """Pick each victim among its candidates by the cosine between their gradients and the shared one.

    Each candidate's gradient is the client's (cross-entropy + PRECODE's KL, the model in its
    current mode) under the victim's known or recovered label; the cosine is taken over the
    selected gradients jointly. The reconstruction is the chosen candidate itself, so the victim
    is identified exactly when it is chosen.

    Args:
        include: match only gradients whose names match one of these glob patterns.
        ignore: do not match gradients whose names match one of these patterns.
        target: match only the gradients before a PRECODE (see
            :func:`~ppp_lightning.attacks.targets.select_gradients`).

    Raises:
        ValueError: if ``target`` is unknown.
    """

    def __init__(
        self,
        include: Optional[Sequence[str]] = None,
        ignore: Optional[Sequence[str]] = None,
        target: Optional[Target] = None,
    ) -> None:
        check_target(target)
        self.include, self.ignore, self.target = include, ignore, target

    def __call__(
        self,
        model: nn.Module,
        gradients: Mapping[str, Tensor],
        labels: Optional[Tensor] = None,
        shape: Sequence[int] = (1, 3, 32, 32),
        candidates: Optional[Tensor] = None,
    ) -> AttackResult:
        """Pick the candidate behind ``gradients``.

        Args:
            model: the attacked model, in the client's mode (pass a copy: PRECODE draws from its RNG).
            gradients: the shared gradient by parameter name.
            labels: ``(1,)`` the label, or ``None`` to recover it from the last layer's bias gradient.
            shape: ``(1, C, H, W)`` of the batch.
            candidates: ``(K, C, H, W)`` the attacker's candidates (normalised, the victim among them).

        Raises:
            ValueError: if the batch is not a single image, no candidates are given or no gradient is selected.
        """
        return self.run(model, [gradients], None if labels is None else [labels], shape,
                        None if candidates is None else [candidates])[0]  # fmt: skip

    def run(
        self,
        model: nn.Module,
        gradients: Sequence[Mapping[str, Tensor]],
        labels: Optional[Sequence[Optional[Tensor]]] = None,
        shape: Sequence[int] = (1, 3, 32, 32),
        candidates: Optional[Sequence[Tensor]] = None,
    ) -> list[AttackResult]:
        """Pick every victim's candidate (``candidates[i]`` are victim ``i``'s).

        Raises:
            ValueError: as :meth:`__call__`, or if there is not one set of candidates per gradient.
        """
        check_images(self.capabilities, shape)
        if candidates is None or len(candidates) != len(gradients):
            count = "none" if candidates is None else len(candidates)
            raise ValueError(
                f"linkage needs one set of candidates per shared gradient; got {count} for {len(gradients)}"
            )
        example = torch.zeros(tuple(shape), device=next(model.parameters()).device)
        names = select_gradients(model, list(gradients[0]), example, self.include, self.ignore, self.target)
        known = known_labels(model, gradients, labels, example)
        return [self._pick(model, shared, label, pool.to(example), names)
                for shared, label, pool in zip(gradients, known, candidates)]  # fmt: skip

    def _pick(self, model: nn.Module, shared: Mapping[str, Tensor], label: Tensor, pool: Tensor,
              names: list[str]) -> AttackResult:  # fmt: skip
        target = _flat(shared, names)
        similarity = torch.stack([
            torch.cosine_similarity(_flat(client_gradient(model, candidate[None], label), names), target, 0)
            for candidate in pool
        ])  # fmt: skip
        best = int(similarity.argmax())
        return AttackResult(images=pool[best : best + 1].clone(), labels=label, loss=float(1 - similarity[best]))


def _flat(gradients: Mapping[str, Tensor], names: Sequence[str]) -> Tensor:
    return torch.cat([gradients[name].detach().flatten().double() for name in names])
