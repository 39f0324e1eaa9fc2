"""The gradient-matching loop shared by Inverting Gradients, DLG and the adaptive attack."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal, Optional

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, vmap
from tqdm.auto import tqdm

from ppp_lightning.attacks.labels import head_bias_gradient, recover_labels
from ppp_lightning.attacks.result import AttackResult
from ppp_lightning.attacks.targets import TARGETS, select_gradients
from ppp_lightning.losses import classification_terms
from ppp_lightning.validation import check_number

__all__ = ["GradientMatchingAttack"]

Variables = dict[str, Tensor]
Step = Callable[[Variables], tuple[Variables, Tensor]]


@dataclass
class Problem:
    """One attack's fixed data: the model, its (detached) parameters, labels and target gradients."""

    model: nn.Module
    params: dict[str, Tensor]
    selected: dict[str, Tensor]
    target: dict[str, Tensor]
    labels: Tensor


class GradientMatchingAttack:
    """Base of the optimisation attacks: find inputs whose gradient matches a shared one.

    Every restart holds its own optimisation variables (``images``, ``(R, N, C, H, W)``, plus what a
    subclass adds). The attacker's gradient is the client's: cross-entropy + PRECODE's KL
    (:func:`~ppp_lightning.losses.classification_terms`) in the model's current mode, with
    PRECODE sampling fresh noise unless a subclass optimises it. It is computed with
    :mod:`torch.func` on detached parameters, so the model's ``.grad`` and BatchNorm statistics
    are untouched, and restarts run batched under :func:`torch.func.vmap` (falling back to a loop
    over restarts, with a warning, when the model does not support it). The attack draws from the
    model's RNG (PRECODE's generator or torch's global one): attack a copy to leave a training
    run's noise stream alone. Subclasses define :meth:`distance` and :meth:`optimise`.

    Args:
        iterations: optimisation steps.
        lr: learning rate.
        restarts: independent initialisations; the one with the lowest final objective wins.
        include: match only gradients whose names match one of these glob patterns.
        ignore: do not match gradients whose names match one of these patterns.
        target: a targeted preset against PRECODE, ``"before_bottleneck"`` or ``"before_decoder"``
            (see :func:`~ppp_lightning.attacks.targets.select_gradients`).
        batched: run restarts batched with ``vmap``; ``False`` runs them one after another. Batched
            restarts compute one weight gradient per restart (grouped convolutions): 1.9x faster
            for 4 restarts on the cnn on CPU, but 0.6-0.8x on resnet18 on CPU
            (``benchmarks/results/attack_speed.md``).
        progress: show a progress bar with the iteration and the current loss.
        seed: seed of the random initialisation.

    Raises:
        ValueError: if a count or ``lr`` is not positive or ``target`` is unknown.
    """

    def __init__(
        self,
        iterations: int,
        lr: float,
        restarts: int = 1,
        include: Optional[Sequence[str]] = None,
        ignore: Optional[Sequence[str]] = None,
        target: Optional[Literal["before_bottleneck", "before_decoder"]] = None,
        batched: bool = True,
        progress: bool = True,
        seed: int = 0,
    ) -> None:
        if iterations < 1 or restarts < 1:
            raise ValueError(f"iterations={iterations} and restarts={restarts}; allowed: >= 1")
        check_number("lr", lr, minimum=0, exclusive_minimum=True)
        if target is not None and target not in TARGETS:
            raise ValueError(f"target={target!r}; allowed: None, {', '.join(TARGETS)}")
        self.iterations = iterations
        self.lr = lr
        self.restarts = restarts
        self.include = include
        self.ignore = ignore
        self.target = target
        self.batched = batched
        self.progress = progress
        self.seed = seed

    def __call__(
        self,
        model: nn.Module,
        gradients: Mapping[str, Tensor],
        labels: Optional[Tensor] = None,
        shape: Sequence[int] = (1, 3, 32, 32),
        init: Optional[Tensor] = None,
    ) -> AttackResult:
        """Reconstruct the batch behind ``gradients``.

        Args:
            model: the attacked model, in the client's mode (pass a copy to leave the original alone).
            gradients: the shared gradient by parameter name.
            labels: ``(N,)`` the batch's labels; ``None`` recovers them from the last Linear
                layer's bias gradient (:func:`~ppp_lightning.attacks.labels.recover_labels`).
            shape: ``(N, C, H, W)`` of the batch.
            init: ``(N, C, H, W)`` initial images for every restart instead of random ones.

        Returns:
            The reconstruction of the best restart.

        Raises:
            ValueError: if no gradient is selected, or labels must be recovered and the last
                Linear layer's bias gradient is not shared.
        """
        device = next(model.parameters()).device
        example = torch.zeros(tuple(shape), device=device)
        names = select_gradients(model, list(gradients), example, self.include, self.ignore, self.target)
        if labels is None:
            labels = recover_labels(head_bias_gradient(model, gradients, example), shape[0])
        params = {name: p.detach() for name, p in model.named_parameters()}
        problem = Problem(
            model,
            params,
            {name: params[name] for name in names},
            {name: gradients[name].detach().to(device) for name in names},
            labels.to(device),
        )
        generator = torch.Generator(device).manual_seed(self.seed)
        with torch.inference_mode(False), torch.enable_grad(), _attack_mode(model):
            variables = self.initial_variables(problem, tuple(shape), init, generator)
            losses = self.optimise(partial(self.objective, problem), variables).nan_to_num(torch.inf)
        best = int(losses.argmin())
        return AttackResult(
            images=variables["images"][best].detach(),
            labels=self.result_labels(problem, variables, best),
            loss=float(losses[best]),
            restart_losses=losses.tolist(),
        )

    def initial_variables(
        self, problem: Problem, shape: tuple[int, ...], init: Optional[Tensor], generator: torch.Generator
    ) -> Variables:
        """The optimisation variables of all restarts, each with a leading restart dimension."""
        device = problem.labels.device
        if init is not None:
            images = init.detach().to(device).expand(self.restarts, *shape).clone()
        else:
            images = torch.randn((self.restarts, *shape), generator=generator, device=device)
        return {"images": images}

    def objective(self, problem: Problem, variables: Variables) -> Tensor:
        """The loss of one restart: gradient distance plus :meth:`regulariser`."""
        dummy = grad(partial(self.client_loss, problem, variables))(problem.selected)
        return self.distance(dummy, problem.target) + self.regulariser(variables)

    def client_loss(self, problem: Problem, variables: Variables, selected: dict[str, Tensor]) -> Tensor:
        """The client's loss on the dummy batch, as a function of the selected parameters."""
        forward = partial(self.logits, problem, {**problem.params, **selected}, variables)
        return classification_terms(forward, self.dummy_targets(problem, variables)).loss

    def logits(self, problem: Problem, params: dict[str, Tensor], variables: Variables) -> Tensor:
        """The model's output on the dummy images (subclasses inject more variables here)."""
        return functional_call(problem.model, params, (variables["images"],))

    def dummy_targets(self, problem: Problem, variables: Variables) -> Tensor:
        """The targets of the dummy loss: the known or recovered labels."""
        return problem.labels

    def result_labels(self, problem: Problem, variables: Variables, best: int) -> Tensor:
        """The labels reported with the reconstruction."""
        return problem.labels

    def distance(self, dummy: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
        """How far the dummy gradient is from the shared one."""
        raise NotImplementedError

    def regulariser(self, variables: Variables) -> Tensor:
        """An image prior added to the distance (none by default)."""
        return torch.zeros((), device=variables["images"].device)

    def optimise(self, objective: Callable[[Variables], Tensor], variables: Variables) -> Tensor:
        """Update ``variables`` in place and return the final objective of every restart, ``(R,)``."""
        raise NotImplementedError

    def step_function(self, objective: Callable[[Variables], Tensor]) -> Step:
        """``variables -> (gradients, losses)`` over all restarts, batched with ``vmap`` if possible."""
        single = grad_and_value(objective)
        batched = vmap(single, randomness="different")

        def step(variables: Variables) -> tuple[Variables, Tensor]:
            restarts = len(variables["images"])
            if self.batched and restarts > 1:
                try:
                    return batched(variables)
                except (RuntimeError, NotImplementedError) as err:
                    warnings.warn(f"restarts run one after another: vmap failed on this model ({err})")
                    self.batched = False
            results = [single({k: v[r] for k, v in variables.items()}) for r in range(restarts)]
            grads = {k: torch.stack([g[k] for g, _ in results]) for k in variables}
            return grads, torch.stack([loss for _, loss in results])

        return step

    def iterations_bar(self) -> tqdm:
        """The iterations, shown as a progress bar unless ``progress=False``."""
        return tqdm(range(self.iterations), desc=type(self).__name__, disable=not self.progress, leave=False)


@contextmanager
def _attack_mode(model: nn.Module) -> Iterator[None]:
    """Make the model's forward pure for :mod:`torch.func`, restoring everything afterwards.

    BatchNorm in training mode normalises with batch statistics whatever its running ones, so
    not tracking them changes no output and removes the in-place update that transforms refuse.
    """
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    for norm in norms:
        norm.track_running_stats = False
    try:
        yield
    finally:
        for norm in norms:
            norm.track_running_stats = True
