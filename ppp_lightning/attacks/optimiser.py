"""Per-problem stopping and the signed-Adam loop over a batch of independent problems.

A *problem* is one victim with one restart. Problems share a loop but not a fate: each keeps its
best iterate, decays its own learning rate and stops on its own (:class:`StoppingRule`), and once
stopped it is no longer computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ppp_lightning.attacks.result import RestartRecord
from ppp_lightning.validation import check_number

__all__ = ["StoppingRule", "Tracker", "signed_adam"]

Variables = dict[str, Tensor]
# (variables of the active problems, their indices) -> (gradients, objectives of shape (active,))
Evaluate = Callable[[Variables, Tensor], tuple[Variables, Tensor]]
# Geiping et al. divide the learning rate by 10 at 3/8, 5/8 and 7/8 of the iterations.
DECAY_POINTS = (3 / 8, 5 / 8, 7 / 8)
BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


@dataclass(frozen=True)
class StoppingRule:
    """When a problem has converged: its best objective stalled by a relative ``tol`` for ``patience`` steps.

    A stall first divides the problem's learning rate by 10 (as the budget's decay points do, at
    most three times in all); a stall after the last decay stops the problem.

    Args:
        tol: relative improvement of the best objective that resets the count.
        patience: steps without such an improvement that make a stall; ``0`` never stalls (run the
            whole budget).

    Raises:
        ValueError: if ``tol`` is negative or ``patience`` is negative.
    """

    tol: float = 1e-3
    patience: int = 100

    def __post_init__(self) -> None:
        check_number("tol", self.tol, minimum=0)
        if self.patience < 0:
            raise ValueError(f"patience={self.patience}; allowed: an integer >= 0 (0: run the whole budget)")


class Tracker:
    """The best iterate, learning-rate decays and stop state of every problem.

    The bookkeeping runs on the host (one copy of the objectives per iteration): a few dozen tiny
    device operations per iteration would otherwise cost more than a small model's step.

    Args:
        variables: the optimisation variables, each ``(P, ...)``.
        budget: iterations allowed per problem.
        rule: the stopping rule.
        decays: learning-rate decays before a stall stops a problem (``0``: the first stall does).
    """

    def __init__(self, variables: Variables, budget: int, rule: StoppingRule, decays: int = len(DECAY_POINTS)) -> None:
        count = len(next(iter(variables.values())))
        self.device = next(iter(variables.values())).device
        self.budget, self.rule, self.max_decays = budget, rule, decays
        self.best_variables = {name: tensor.detach().clone() for name, tensor in variables.items()}
        self.best = np.full(count, np.inf)
        self.final = np.full(count, np.nan)
        self.reference = np.full(count, np.inf)
        self.stall = np.zeros(count, dtype=np.int64)
        self.decays = np.zeros(count, dtype=np.int64)
        self.iterations = np.zeros(count, dtype=np.int64)
        self.converged = np.zeros(count, dtype=bool)
        self.history = np.full((count, budget + 1), np.nan)
        self.evaluations = np.zeros(count, dtype=np.int64)
        self.focus(np.arange(count))

    def focus(self, active: np.ndarray) -> None:
        """Make ``active`` (problem indices, ascending) the problems that are computed."""
        self.active = active
        self.index = torch.as_tensor(active, device=self.device)

    def observe(self, variables: Variables, losses: Tensor, iteration: int) -> np.ndarray:
        """Record the objectives of the active problems' current iterates (before their step).

        Args:
            variables: the active problems' variables, ``(active, ...)``.
            losses: their objectives, ``(active,)``.
            iteration: the 1-based iteration these objectives belong to.

        Returns:
            A mask over the active problems: those that stop here (they take no step).
        """
        losses = self.keep_best(variables, losses)
        active = self.active
        self.iterations[active] = iteration
        reference = self.reference[active]
        significant = ~np.isfinite(reference)  # the first objective always counts
        finite = ~significant
        significant[finite] = losses[finite] < reference[finite] - self.rule.tol * np.abs(reference[finite])
        self.reference[active] = np.where(significant, losses, reference)
        stall = np.where(significant, 0, self.stall[active] + 1)
        scheduled = sum(iteration > int(point * self.budget) for point in DECAY_POINTS[: self.max_decays])
        decays = np.maximum(self.decays[active], scheduled)
        stalled = stall >= self.rule.patience if self.rule.patience else np.zeros_like(significant)
        stopping = stalled & (decays >= self.max_decays)
        self.decays[active] = np.where(stalled, decays + 1, decays)
        self.stall[active] = np.where(stalled, 0, stall)
        self.converged[active] |= stopping
        return stopping

    def keep_best(self, variables: Variables, losses: Tensor) -> np.ndarray:
        """Keep the active problems' iterates that beat their best; returns the objectives (host, nan as inf)."""
        active = self.active
        values = losses.detach().double().cpu().numpy()
        values[np.isnan(values)] = np.inf
        improved = values < self.best[active]
        if improved.all():
            rows = None
        elif improved.any():
            rows = torch.as_tensor(np.flatnonzero(improved), device=self.device)
        else:
            rows = torch.empty(0, dtype=torch.long, device=self.device)
        if rows is None or len(rows):
            for name, tensor in variables.items():
                best = self.best_variables[name]
                if rows is None and len(active) == len(best):
                    best.copy_(tensor.detach())
                elif rows is None:
                    best[self.index] = tensor.detach()
                else:
                    best[self.index[rows]] = tensor.detach()[rows]
        self.best[active] = np.minimum(self.best[active], values)
        self.final[active] = values
        self.history[active, self.evaluations[active]] = values
        self.evaluations[active] += 1
        return values

    def learning_rates(self, lr: float) -> Tensor:
        """The active problems' learning rates, ``(active,)``."""
        decays = np.minimum(self.decays[self.active], self.max_decays)
        return torch.as_tensor(lr * 0.1**decays, dtype=torch.float32, device=self.device)

    def records(self) -> list[RestartRecord]:
        """One record per problem."""
        return [
            RestartRecord(int(i), "converged" if c else "budget", float(b), float(f), tuple(h[:n].tolist()))
            for i, c, b, f, h, n in zip(
                self.iterations, self.converged, self.best, self.final, self.history, self.evaluations
            )
        ]


def signed_adam(
    evaluate: Evaluate,
    variables: Variables,
    iterations: int,
    lr: float,
    rule: StoppingRule,
    project: Optional[Callable[[Variables], None]] = None,
    progress: Optional[tqdm] = None,
) -> Tracker:
    """Minimise every problem with Adam on the sign of its gradient, each stopping on its own.

    Args:
        evaluate: gradients and objectives of the active problems.
        variables: ``(P, ...)`` tensors, updated in place.
        iterations: the budget per problem.
        lr: the initial learning rate (divided by 10 at each decay).
        rule: when a problem stops before the budget.
        project: called on the active problems' variables after every step (e.g. a pixel box).
        progress: a bar advanced once per iteration.

    Returns:
        The tracker, holding each problem's best iterate and its record.
    """
    tracker = Tracker(variables, iterations, rule)
    moments = {name: (torch.zeros_like(t), torch.zeros_like(t)) for name, t in variables.items()}
    for iteration in range(1, iterations + 1):
        index = tracker.index
        current = {name: _rows(tensor, index) for name, tensor in variables.items()}
        grads, losses = evaluate(current, index)
        stopping = tracker.observe(current, losses, iteration)
        rates = tracker.learning_rates(lr)
        for name, tensor in current.items():
            first, second = (_rows(state, index) for state in moments[name])
            _adam_step(tensor, grads[name].sign(), first, second, rates, iteration)
            for state, rows in zip(moments[name], (first, second)):
                _write(state, index, rows)
        if project is not None:
            project(current)
        for name, tensor in variables.items():
            _write(tensor, index, current[name])
        if stopping.any():
            tracker.focus(tracker.active[~stopping])
        if progress is not None:
            progress.update()
            if iteration % 10 == 1:
                progress.set_postfix(active=len(tracker.active), best=float(tracker.best.min()))
        if not len(tracker.active):
            break
    if len(tracker.active):  # the last step's result is an iterate too
        current = {name: _rows(tensor, tracker.index) for name, tensor in variables.items()}
        tracker.keep_best(current, evaluate(current, tracker.index)[1])
    return tracker


def _adam_step(tensor: Tensor, grad: Tensor, first: Tensor, second: Tensor, rates: Tensor, step: int) -> None:
    """One Adam step (PyTorch's defaults) with a learning rate per problem, in place."""
    first.mul_(BETAS[0]).add_(grad, alpha=1 - BETAS[0])
    second.mul_(BETAS[1]).addcmul_(grad, grad, value=1 - BETAS[1])
    denominator = (second / (1 - BETAS[1] ** step)).sqrt_().add_(ADAM_EPS)
    scale = (rates / (1 - BETAS[0] ** step)).view(-1, *[1] * (tensor.dim() - 1))
    tensor.addcdiv_(first * scale, denominator, value=-1)


def _rows(tensor: Tensor, indices: Tensor) -> Tensor:
    """The rows ``indices`` of ``tensor`` (the tensor itself while every row is active)."""
    return tensor if len(indices) == len(tensor) else tensor[indices]


def _write(tensor: Tensor, indices: Tensor, rows: Tensor) -> None:
    """Write ``rows`` back unless they are ``tensor`` itself (updated in place)."""
    if rows is not tensor:
        tensor[indices] = rows
