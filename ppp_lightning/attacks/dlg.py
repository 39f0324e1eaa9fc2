"""Deep Leakage from Gradients (Zhu et al. 2019)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import Tensor

from ppp_lightning.attacks.matching import GradientMatchingAttack, Problem, Variables

__all__ = ["DLG"]


class DLG(GradientMatchingAttack):
    """DLG: squared L2 gradient distance minimised with L-BFGS, optionally with the labels.

    With ``optimize_labels=True`` the labels are variables too (soft labels, ``softmax`` of
    optimised logits, as in the paper) and the reported labels are their ``argmax``; otherwise the
    given or recovered labels are used (iDLG). L-BFGS couples the variables it optimises, so the
    restarts run one after another.

    Args:
        iterations: L-BFGS steps, of up to 20 function evaluations each (the paper's PyTorch defaults).
        lr: L-BFGS step size (paper: 1).
        optimize_labels: optimise the labels jointly with the images.
        **kwargs: ``restarts``, ``include``, ``ignore``, ``target``, ``progress``, ``seed`` of
            :class:`~ppp_lightning.attacks.matching.GradientMatchingAttack`.
    """

    def __init__(self, iterations: int = 100, lr: float = 1.0, optimize_labels: bool = False, **kwargs: Any) -> None:
        super().__init__(iterations, lr, **kwargs)
        self.optimize_labels = optimize_labels

    def initial_variables(
        self, problem: Problem, shape: tuple[int, ...], init: Optional[Tensor], generator: torch.Generator
    ) -> Variables:
        variables = super().initial_variables(problem, shape, init, generator)
        if self.optimize_labels:
            with torch.no_grad():
                classes = self.logits(problem, problem.params, {"images": variables["images"][0]}).shape[-1]
            variables["label_logits"] = torch.randn(
                (self.restarts, shape[0], classes), generator=generator, device=problem.labels.device
            )
        return variables

    def dummy_targets(self, problem: Problem, variables: Variables) -> Tensor:
        return variables["label_logits"].softmax(-1) if self.optimize_labels else problem.labels

    def result_labels(self, problem: Problem, variables: Variables, best: int) -> Tensor:
        return variables["label_logits"][best].argmax(-1) if self.optimize_labels else problem.labels

    def distance(self, dummy: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
        return sum((dummy[k] - target[k]).square().sum() for k in target)

    def optimise(self, objective: Callable[[Variables], Tensor], variables: Variables) -> Tensor:
        step = self.step_function(objective)
        losses = []
        for restart in range(self.restarts):
            own = {name: tensor[restart : restart + 1].clone() for name, tensor in variables.items()}
            optimizer = torch.optim.LBFGS(list(own.values()), lr=self.lr, history_size=100)

            def closure() -> Tensor:
                grads, loss = step(own)
                for name, tensor in own.items():
                    tensor.grad = grads[name]
                return loss.sum()

            bar = self.iterations_bar()
            for iteration in bar:
                loss = optimizer.step(closure)
                if iteration % 10 == 0:
                    bar.set_postfix(restart=restart, loss=float(loss))
            for name, tensor in own.items():
                variables[name][restart] = tensor[0]
            losses.append(step(own)[1][0])
        return torch.stack(losses)
