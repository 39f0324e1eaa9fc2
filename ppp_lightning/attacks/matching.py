"""The gradient-matching engine shared by Inverting Gradients, DLG and the adaptive attack.

One call attacks many victims at once: every victim (its own shared gradient and labels) times
every restart is an independent *problem*, and all problems run in one loop, each stopping on its
own (:mod:`~ppp_lightning.attacks.optimiser`). The dummy gradients of the active problems are
computed in one of three ways (:mod:`~ppp_lightning.attacks.execution` chooses):

- ``stacked``: all problems' images in one forward pass, gradients split per problem
  (:mod:`~ppp_lightning.attacks.per_sample`; models without BatchNorm in training mode);
- ``vmap``: :func:`torch.func.vmap` over problems (any model :mod:`torch.func` supports);
- ``sequential``: one problem after another with plain autograd (the fastest single problem).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Literal, Optional, get_args

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from ppp_lightning.attacks.execution import ExecutionChoice, signature
from ppp_lightning.attacks.labels import head_bias_gradient, recover_labels
from ppp_lightning.attacks.optimiser import Evaluate, StoppingRule, Tracker, Variables
from ppp_lightning.attacks.per_sample import ProblemGradients, Targets, stackable, stacked_gradients
from ppp_lightning.attacks.result import AttackResult
from ppp_lightning.attacks.targets import Target, check_target, select_gradients
from ppp_lightning.losses import classification_terms
from ppp_lightning.progress import progress_bar
from ppp_lightning.validation import check_number

__all__ = [
    "INITIALISATIONS",
    "GradientMatchingAttack",
    "Initialisation",
    "Problems",
    "detached_parameters",
    "known_labels",
]

# How random initial images are drawn: standard normal (``randn``) or uniform on [-1, 1].
Initialisation = Literal["normal", "uniform"]
INITIALISATIONS: tuple[str, ...] = get_args(Initialisation)


@dataclass
class Problems:
    """The fixed data of every problem: problem ``p`` is restart ``p % R`` of victim ``p // R``.

    Args:
        model: the attacked model.
        params: its parameters, detached, by name.
        names: the gradients matched.
        targets: every victim's shared gradient.
        labels: ``(V, N)`` every victim's labels.
        restarts: restarts per victim.
        shape: ``(N, C, H, W)`` of every victim's batch.
    """

    model: nn.Module
    params: dict[str, Tensor]
    names: list[str]
    targets: Targets
    labels: Tensor
    restarts: int
    shape: tuple[int, ...]

    @property
    def count(self) -> int:
        """The number of problems, ``V * R``."""
        return len(self.labels) * self.restarts

    def victims(self, active: Tensor) -> Tensor:
        """The victim of every problem in ``active``."""
        return torch.div(active, self.restarts, rounding_mode="floor")

    def targets_for(self, active: Tensor) -> dict[str, Tensor]:
        """``name -> (len(active), *shape)``: the shared gradient each active problem matches."""
        victims = self.victims(active)
        return {name: self.targets.rows(name, victims) for name in self.targets.tensors}


class GradientMatchingAttack:
    """Base of the optimisation attacks: find inputs whose gradient matches a shared one.

    Every problem holds its own optimisation variables (``images``, ``(N, C, H, W)``, plus what a
    subclass adds; stacked as ``(P, N, ...)``). The attacker's gradient is the client's:
    cross-entropy + PRECODE's KL (:func:`~ppp_lightning.losses.classification_terms`) in the
    model's current mode, with PRECODE sampling fresh noise unless a subclass optimises it. It is
    computed on the attacker's own leaves, so the model's ``.grad`` and BatchNorm statistics are
    untouched. The attack draws from the model's RNG (PRECODE's generator or torch's global one):
    attack a copy to leave a training run's noise stream alone. Subclasses define
    :meth:`distance` and :meth:`optimise`.

    Args:
        iterations: the budget of optimisation steps per problem.
        lr: learning rate.
        restarts: independent initialisations per victim; the one with the lowest objective wins.
        include: match only gradients whose names match one of these glob patterns.
        ignore: do not match gradients whose names match one of these patterns.
        target: a targeted preset against PRECODE, ``"before_bottleneck"`` or ``"before_decoder"``
            (see :func:`~ppp_lightning.attacks.targets.select_gradients`).
        batched: ``True`` computes all problems together, ``False`` one after another, ``None``
            chooses per model, device and problem count by a short timing probe
            (:class:`~ppp_lightning.attacks.execution.ExecutionChoice`).
        tol: a problem's best objective must improve by this relative amount ...
        patience: ... within this many steps, or its learning rate is divided by 10; after the
            third division it stops. ``0`` runs the whole budget.
        tie_channels: optimise one channel shared by all (data with one true channel, e.g. MNIST
            repeated to three).
        threads: torch's CPU threads during the attack (restored afterwards); ``None`` leaves
            them. One thread is never far from the best on a loaded machine, where more threads
            can be several times slower (``benchmarks/results/attack_speed.md``).
        progress: show a progress bar over iterations with the active problems and best objective.
        seed: seed of the random initialisation.
        initialisation: how random initial images are drawn (without ``init``): ``"normal"``
            (standard normal, in normalised units) or ``"uniform"`` (uniform on ``[-1, 1]``).

    Raises:
        ValueError: if a count, ``lr``, ``tol`` or ``patience`` is out of range, or ``target`` or
            ``initialisation`` is unknown.
    """

    def __init__(
        self,
        iterations: int,
        lr: float,
        restarts: int = 1,
        include: Optional[Sequence[str]] = None,
        ignore: Optional[Sequence[str]] = None,
        target: Optional[Target] = None,
        batched: Optional[bool] = None,
        tol: float = 1e-3,
        patience: int = 100,
        tie_channels: bool = False,
        threads: Optional[int] = 1,
        progress: bool = True,
        seed: int = 0,
        initialisation: Initialisation = "normal",
    ) -> None:
        if iterations < 1 or restarts < 1:
            raise ValueError(f"iterations={iterations} and restarts={restarts}; allowed: >= 1")
        if threads is not None and threads < 1:
            raise ValueError(f"threads={threads}; allowed: None (leave torch's setting) or >= 1")
        check_number("lr", lr, minimum=0, exclusive_minimum=True)
        check_target(target)
        if initialisation not in INITIALISATIONS:
            raise ValueError(f"initialisation={initialisation!r}; allowed: {', '.join(INITIALISATIONS)}")
        self.iterations = iterations
        self.lr = lr
        self.restarts = restarts
        self.include = include
        self.ignore = ignore
        self.target = target
        self.batched = batched
        self.stopping = StoppingRule(tol, patience)
        self.tie_channels = tie_channels
        self.threads = threads
        self.progress = progress
        self.seed = seed
        self.initialisation = initialisation
        self.execution = ExecutionChoice(batched)

    def __call__(
        self,
        model: nn.Module,
        gradients: Mapping[str, Tensor],
        labels: Optional[Tensor] = None,
        shape: Sequence[int] = (1, 3, 32, 32),
        init: Optional[Tensor] = None,
    ) -> AttackResult:
        """Reconstruct the batch behind ``gradients`` (one victim; see :meth:`run` for many).

        Args:
            model: the attacked model, in the client's mode (pass a copy to leave the original alone).
            gradients: the shared gradient by parameter name.
            labels: ``(N,)`` the batch's labels; ``None`` recovers them from the last Linear
                layer's bias gradient (:func:`~ppp_lightning.attacks.labels.recover_labels`).
            shape: ``(N, C, H, W)`` of the batch.
            init: ``(N, C, H, W)`` initial images for every restart instead of random ones.

        Returns:
            The best iterate of the best restart.

        Raises:
            ValueError: if no gradient is selected, or labels must be recovered and the last
                Linear layer's bias gradient is not shared.
        """
        return self.run(model, [gradients], None if labels is None else [labels], shape, init)[0]

    def run(
        self,
        model: nn.Module,
        gradients: Sequence[Mapping[str, Tensor]],
        labels: Optional[Sequence[Optional[Tensor]]] = None,
        shape: Sequence[int] = (1, 3, 32, 32),
        init: Optional[Tensor] = None,
    ) -> list[AttackResult]:
        """Attack many victims in one loop: each victim's gradient, with all restarts.

        Args:
            model: the attacked model, in the clients' mode.
            gradients: every victim's shared gradient by parameter name (the same names).
            labels: every victim's ``(N,)`` labels (``None`` for one, or for all: recovered).
            shape: ``(N, C, H, W)`` of every victim's batch.
            init: ``(N, C, H, W)`` initial images for every problem instead of random ones, or
                ``(V, N, C, H, W)``: one start per victim.

        Returns:
            One result per victim, in order. Problem ``(victim, restart)`` starts from the same
            initialisation whatever the other victims, so a victim's result does not depend on
            which victims it is attacked with.

        Raises:
            ValueError: as :meth:`__call__`.
        """
        shape = tuple(shape)
        problems = self.problems(model, gradients, labels, shape)
        generator = torch.Generator(problems.labels.device).manual_seed(self.seed)
        with _attack_mode(model, self.threads, problems.names):
            variables = self.initial_variables(problems, shape, init, generator)
            evaluate = self.evaluator(problems, variables)
            tracker = self.optimise(evaluate, variables)
        return [self.result(problems, tracker, victim) for victim in range(len(problems.labels))]

    def problems(
        self,
        model: nn.Module,
        gradients: Sequence[Mapping[str, Tensor]],
        labels: Optional[Sequence[Optional[Tensor]]],
        shape: tuple[int, ...],
    ) -> Problems:
        """The problems' fixed data: the matched names, stacked targets and every victim's labels."""
        example = torch.zeros(shape, device=next(model.parameters()).device)
        names = self.matched_names(model, list(gradients[0]), example)
        stacked = {name: torch.stack([shared[name].detach().to(example) for shared in gradients]) for name in names}
        known = known_labels(model, gradients, labels, example)
        return Problems(model, detached_parameters(model), names, Targets(stacked), known, self.restarts, shape)

    def matched_names(self, model: nn.Module, available: list[str], example: Tensor) -> list[str]:
        """The shared gradients the attack matches (``include``, ``ignore`` and ``target``)."""
        return select_gradients(model, available, example, self.include, self.ignore, self.target)

    def initial_variables(
        self, problems: Problems, shape: tuple[int, ...], init: Optional[Tensor], generator: torch.Generator
    ) -> Variables:
        """The optimisation variables of all problems, each with a leading problem dimension."""
        device = problems.labels.device
        channels = 1 if self.tie_channels else shape[1]
        if init is not None:
            start = init.detach().to(device)
            start = start.mean(-3, keepdim=True) if self.tie_channels else start
            if start.dim() > len(shape):  # one start per victim, for all its restarts (problem p: victim p // R)
                return {"images": start.repeat_interleave(self.restarts, 0).contiguous()}
            images = start.expand(self.restarts, *start.shape)
        else:
            size = (self.restarts, shape[0], channels, *shape[2:])
            images = _random_images(self.initialisation, size, generator, device)
        return {"images": self.per_problem(problems, images)}

    def per_problem(self, problems: Problems, per_restart: Tensor) -> Tensor:
        """``(R, ...)`` -> ``(V * R, ...)``: every victim's restarts start from the same draw."""
        return per_restart.repeat(len(problems.labels), *[1] * (per_restart.dim() - 1)).contiguous()

    def images(self, problems: Problems, variables: Variables) -> Tensor:
        """The images the model sees (``(..., C, H, W)``; tied channels repeated)."""
        images = variables["images"]
        return images.expand(*images.shape[:-3], *problems.shape[1:]) if self.tie_channels else images

    def logits(self, problems: Problems, params: Optional[dict[str, Tensor]], variables: Variables) -> Tensor:
        """The model's output on the dummy images, ``(n, classes)`` (subclasses inject more here).

        ``params`` replaces the model's parameters (:mod:`torch.func` paths); ``None`` calls the model.
        """
        images = self.images(problems, variables)
        return problems.model(images) if params is None else functional_call(problems.model, params, (images,))

    def dummy_targets(self, variables: Variables, labels: Tensor) -> Tensor:
        """The targets of the dummy loss: the known or recovered labels."""
        return labels

    def result_labels(self, problems: Problems, variables: Variables, problem: int) -> Tensor:
        """The labels reported with problem ``problem``'s reconstruction."""
        return problems.labels[problem // problems.restarts]

    def distance(self, dummy: ProblemGradients, targets: Targets) -> Tensor:
        """How far each problem's dummy gradient is from its victim's target, ``(P,)``."""
        raise NotImplementedError

    def regulariser(self, variables: Variables) -> Tensor:
        """An image prior added to the distance, ``(P,)`` (none by default)."""
        return variables["images"].new_zeros(len(variables["images"]))

    def optimise(self, evaluate: Evaluate, variables: Variables) -> Tracker:
        """Minimise every problem; returns the tracker with each problem's best iterate."""
        raise NotImplementedError

    def evaluator(self, problems: Problems, variables: Variables) -> Evaluate:
        """The gradients and objectives of active problems, computed the way :attr:`execution` picks."""
        # plain autograd through the model itself: functional_call's parameter swaps cost ~10% on small models
        parameters = {name: problems.model.get_parameter(name) for name in problems.names}
        single = partial(self._evaluate, problems, None, partial(_autograd, parameters))
        if problems.count == 1:
            return single
        evaluators = {"sequential": partial(_one_by_one, single)}
        if stackable(problems.model, problems.names):
            evaluators["stacked"] = partial(
                self._evaluate, problems, None, partial(stacked_gradients, problems.model, problems.names)
            )
        else:
            evaluators["vmap"] = partial(self._evaluate_vmap, problems)
        key = signature(problems.model, problems.count, variables, problems.names)
        return self.execution.evaluator(key, variables, evaluators)

    def result(self, problems: Problems, tracker: Tracker, victim: int) -> AttackResult:
        """Victim ``victim``'s reconstruction: the best iterate of its best restart."""
        span = range(victim * problems.restarts, (victim + 1) * problems.restarts)
        records = tracker.records()
        best = min(span, key=lambda p: records[p].best_objective)
        best_variables = tracker.best_variables
        return AttackResult(
            images=self.images(problems, {k: v[best] for k, v in best_variables.items()}).detach().clone(),
            labels=self.result_labels(problems, best_variables, best),
            loss=records[best].best_objective,
            restart_losses=[records[p].best_objective for p in span],
            restarts=[records[p] for p in span],
        )

    def iterations_bar(self, problems: int) -> tqdm:
        """A live bar over iterations in a terminal, unless ``progress=False`` (none in a file or CI)."""
        name = type(self).__name__
        return progress_bar(total=self.iterations, desc=f"{name} ({problems} problems)", enabled=self.progress, leave=False)

    # --- the three ways to compute active problems' gradients and objectives -------------------

    def _evaluate(
        self,
        problems: Problems,
        params: dict[str, Tensor],
        gradients_of: Callable[[Tensor, Callable[[], Tensor]], ProblemGradients],
        variables: Variables,
        active: Tensor,
    ) -> tuple[Variables, Tensor]:
        """All active problems in one autograd pass, their dummy gradients from ``gradients_of``."""
        leaves = {name: tensor.detach().requires_grad_() for name, tensor in variables.items()}
        flat = {name: tensor.flatten(0, 1) for name, tensor in leaves.items()}
        victims = problems.victims(active)
        labels = problems.labels.index_select(0, victims).flatten()
        count = len(active)

        def total_loss() -> Tensor:  # the sum over problems of each one's client loss (a batch mean)
            forward = partial(self.logits, problems, params, flat)
            return count * classification_terms(forward, self.dummy_targets(flat, labels)).loss

        dummy = gradients_of(victims, total_loss)
        losses = self.distance(dummy, problems.targets) + self.regulariser(leaves)
        grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
        return dict(zip(leaves, grads)), losses.detach()

    def _evaluate_vmap(self, problems: Problems, variables: Variables, active: Tensor) -> tuple[Variables, Tensor]:
        labels = problems.labels.index_select(0, problems.victims(active))

        def objective(variables: Variables, target: dict[str, Tensor], labels: Tensor) -> Tensor:
            def client_loss(selected: dict[str, Tensor]) -> Tensor:
                forward = partial(self.logits, problems, {**problems.params, **selected}, variables)
                return classification_terms(forward, self.dummy_targets(variables, labels)).loss

            dummy = grad(client_loss)({name: problems.params[name] for name in problems.names})
            one = ProblemGradients(torch.zeros(1, dtype=torch.long, device=labels.device), _batch(dummy))
            return (self.distance(one, Targets(_batch(target))) + self.regulariser(_batch(variables)))[0]

        return vmap(grad_and_value(objective), randomness="different")(variables, problems.targets_for(active), labels)


def known_labels(
    model: nn.Module,
    gradients: Sequence[Mapping[str, Tensor]],
    labels: Optional[Sequence[Optional[Tensor]]],
    example: Tensor,
) -> Tensor:
    """``(V, N)`` every victim's labels: the given ones, else recovered from its gradient.

    Raises:
        ValueError: if labels must be recovered and the last Linear layer's bias gradient is not shared.
    """
    labels = labels if labels is not None else [None] * len(gradients)
    known = [
        recover_labels(head_bias_gradient(model, shared, example), len(example)) if given is None else given
        for shared, given in zip(gradients, labels)
    ]
    return torch.stack(known).to(example.device)


def detached_parameters(model: nn.Module) -> dict[str, Tensor]:
    """The model's parameters by name, detached (the attack's constants)."""
    return {name: p.detach() for name, p in model.named_parameters()}


def _random_images(
    initialisation: Initialisation, size: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> Tensor:
    """Initial images of ``size``: standard normal, or uniform on ``[-1, 1]``."""
    if initialisation == "uniform":
        return torch.rand(size, generator=generator, device=device) * 2 - 1
    return torch.randn(size, generator=generator, device=device)


def _batch(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """One problem's tensors as a batch of one."""
    return {name: tensor.unsqueeze(0) for name, tensor in tensors.items()}


def _autograd(leaves: dict[str, Tensor], victims: Tensor, loss: Callable[[], Tensor]) -> ProblemGradients:
    """One problem's dummy gradient by plain autograd, kept differentiable."""
    grads = torch.autograd.grad(loss(), list(leaves.values()), create_graph=True)
    return ProblemGradients(victims, {name: g.unsqueeze(0) for name, g in zip(leaves, grads)})


def _one_by_one(single: Evaluate, variables: Variables, active: Tensor) -> tuple[Variables, Tensor]:
    """Evaluate the active problems one after another."""
    results = [single({k: v[i : i + 1] for k, v in variables.items()}, active[i : i + 1]) for i in range(len(active))]
    grads = {k: torch.cat([g[k] for g, _ in results]) for k in variables}
    return grads, torch.cat([losses for _, losses in results])


@contextmanager
def _attack_mode(model: nn.Module, threads: Optional[int], names: Sequence[str]) -> Iterator[None]:
    """Gradients on (also for the matched parameters), ``threads`` CPU threads, a pure forward pass
    and attention by its plain formula; everything restored afterwards.

    Matching differentiates the model's gradient again, and the fused attention kernels (flash,
    memory-efficient) have no second derivative; the plain one does.

    BatchNorm in training mode normalises with batch statistics whatever its running ones, so
    not tracking them changes no output and removes the in-place update that transforms refuse.
    """
    frozen = [p for p in map(model.get_parameter, names) if not p.requires_grad]
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]
    previous_threads = torch.get_num_threads()
    if threads is not None and next(model.parameters()).device.type == "cpu":
        torch.set_num_threads(threads)
    for norm in norms:
        norm.track_running_stats = False
    for parameter in frozen:
        parameter.requires_grad_(True)
    try:
        with torch.inference_mode(False), torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.set_num_threads(previous_threads)
        for norm in norms:
            norm.track_running_stats = True
        for parameter in frozen:
            parameter.requires_grad_(False)
