"""Deep Leakage from Gradients (Zhu et al. 2019)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ppp_lightning.attacks.matching import Evaluate, GradientMatchingAttack, Problems
from ppp_lightning.attacks.optimiser import Tracker, Variables
from ppp_lightning.attacks.per_sample import ProblemGradients, Targets
from ppp_lightning.attacks.registry import register

__all__ = ["DLG"]


@register("dlg", "Deep Leakage from Gradients: L-BFGS on the squared gradient distance", convolution_free=True)
class DLG(GradientMatchingAttack):
    """DLG: squared L2 gradient distance minimised with L-BFGS, optionally with the labels.

    With ``optimize_labels=True`` the labels are variables too (soft labels, ``softmax`` of
    optimised logits, as in the paper) and the reported labels are their ``argmax``; otherwise the
    given or recovered labels are used (iDLG). L-BFGS couples the variables it optimises, so the
    problems (victims x restarts) run one after another, each keeping its best iterate and stopping
    when its objective stalls (``tol``, ``patience``; L-BFGS has no learning-rate decay, so the
    first stall stops it).

    Args:
        iterations: L-BFGS steps, of up to 20 function evaluations each (the paper's PyTorch defaults).
        lr: L-BFGS step size (paper: 1).
        optimize_labels: optimise the labels jointly with the images.
        **kwargs: ``restarts``, ``include``, ``ignore``, ``target``, ``tol``, ``patience``,
            ``tie_channels``, ``threads``, ``progress``, ``seed`` of
            :class:`~ppp_lightning.attacks.matching.GradientMatchingAttack`.
    """

    def __init__(self, iterations: int = 100, lr: float = 1.0, optimize_labels: bool = False, **kwargs: Any) -> None:
        if "batched" in kwargs:
            raise ValueError("dlg does not take batched: L-BFGS runs its problems one after another")
        super().__init__(iterations, lr, batched=False, **kwargs)
        self.optimize_labels = optimize_labels

    def initial_variables(
        self, problems: Problems, shape: tuple[int, ...], init: Optional[Tensor], generator: torch.Generator
    ) -> Variables:
        variables = super().initial_variables(problems, shape, init, generator)
        if self.optimize_labels:
            with torch.no_grad():
                classes = self.logits(problems, problems.params, {"images": variables["images"][0]}).shape[-1]
            logits = torch.randn((self.restarts, shape[0], classes), generator=generator, device=problems.labels.device)
            variables["label_logits"] = self.per_problem(problems, logits)
        return variables

    def dummy_targets(self, variables: Variables, labels: Tensor) -> Tensor:
        return variables["label_logits"].softmax(-1) if self.optimize_labels else labels

    def result_labels(self, problems: Problems, variables: Variables, problem: int) -> Tensor:
        if self.optimize_labels:
            return variables["label_logits"][problem].argmax(-1)
        return super().result_labels(problems, variables, problem)

    def distance(self, dummy: ProblemGradients, targets: Targets) -> Tensor:
        return dummy.square_distance(targets)

    def optimise(self, evaluate: Evaluate, variables: Variables) -> Tracker:
        tracker = Tracker(variables, self.iterations, self.stopping, decays=0)
        everything = tracker.active
        with self.iterations_bar(len(everything)) as bar:
            for problem in everything.tolist():
                bar.reset()
                tracker.focus(everything[problem : problem + 1])
                self._minimise(evaluate, {k: v[problem : problem + 1] for k, v in variables.items()}, tracker, bar)
        return tracker

    def _minimise(self, evaluate: Evaluate, own: Variables, tracker: Tracker, bar: tqdm) -> None:
        """L-BFGS on one problem; ``own`` holds its variables as views into the shared ones."""
        leaves = {name: tensor.clone() for name, tensor in own.items()}
        optimizer = torch.optim.LBFGS(list(leaves.values()), lr=self.lr, history_size=100)

        def closure() -> Tensor:
            grads, loss = evaluate(leaves, tracker.index)
            for name, tensor in leaves.items():
                tensor.grad = grads[name]
            return loss.sum()

        for iteration in range(1, self.iterations + 1):
            optimizer.step(closure)
            _, loss = evaluate(leaves, tracker.index)
            bar.update()
            if tracker.observe(leaves, loss, iteration).all():
                break
        for name, tensor in own.items():
            tensor.copy_(leaves[name])
