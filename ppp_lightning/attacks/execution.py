"""Batched or sequential: how an attack computes its problems, chosen by a timing probe.

Batching many problems into one computation wins on small models (the cnn: several times faster)
and loses on large ones on a CPU (resnet18 with BatchNorm: ``vmap`` runs grouped convolutions per
problem). :class:`ExecutionChoice` times one batched and one single evaluation on the real
problems, keeps the faster way for that model signature, device and problem count, and falls back
to sequential execution, with a warning, where batching fails.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping
from typing import Any, Optional

import torch
from torch import Tensor

from ppp_lightning.attacks.optimiser import Evaluate

__all__ = ["MODES", "ExecutionChoice"]

MODES = ("stacked", "vmap", "sequential")
FAILURES = (RuntimeError, NotImplementedError)


class ExecutionChoice:
    """Which evaluation an attack uses, per problem signature.

    Args:
        batched: ``True`` always batches, ``False`` never does, ``None`` decides by a probe whose
            result is cached per model signature (parameter names, shapes and modes), device,
            problem count and variable shapes.
    """

    def __init__(self, batched: Optional[bool] = None) -> None:
        self.batched = batched
        self.choices: dict[Any, str] = {}

    def evaluator(self, signature: Any, variables: dict[str, Tensor], evaluators: Mapping[str, Evaluate]) -> Evaluate:
        """The evaluation to use.

        Args:
            signature: what identifies the problems (see :func:`signature`).
            variables: the problems' initial variables (the probe runs on copies).
            evaluators: the batched way (``stacked`` or ``vmap``) and ``sequential``.
        """
        batched_mode = next(mode for mode in evaluators if mode != "sequential")
        if self.batched is False:
            return evaluators["sequential"]
        if self.batched is None and signature not in self.choices:
            self.choices[signature] = _probe(variables, batched_mode, evaluators)
        mode = batched_mode if self.batched else self.choices[signature]
        return _falling_back(evaluators[mode], evaluators["sequential"]) if mode != "sequential" else evaluators[mode]


def signature(model: torch.nn.Module, count: int, variables: dict[str, Tensor], names: list[str]) -> tuple:
    """What the best way to compute a set of problems depends on."""
    parameters = tuple((name, tuple(p.shape)) for name, p in model.named_parameters())
    modes = tuple(m.training for m in model.modules())
    shapes = tuple((name, tuple(t.shape[1:])) for name, t in variables.items())
    device = next(iter(variables.values())).device
    return type(model).__name__, parameters, modes, str(device), count, shapes, tuple(names)


def _probe(variables: dict[str, Tensor], batched_mode: str, evaluators: Mapping[str, Evaluate]) -> str:
    """Time one batched evaluation of all problems against one single problem's, times the count."""
    count = len(next(iter(variables.values())))
    everything = torch.arange(count, device=next(iter(variables.values())).device)
    try:
        batched = _seconds(evaluators[batched_mode], {k: v.clone() for k, v in variables.items()}, everything)
    except FAILURES as err:
        warnings.warn(f"problems run one after another: batching ({batched_mode}) failed on this model ({err})")
        return "sequential"
    one = {k: v[:1].clone() for k, v in variables.items()}
    sequential = count * _seconds(evaluators["sequential"], one, everything[:1])
    return batched_mode if batched <= sequential else "sequential"


def _seconds(evaluate: Evaluate, variables: dict[str, Tensor], active: Tensor) -> float:
    """Seconds of one evaluation after a warm-up one."""
    evaluate(variables, active)
    device = active.device
    start = time.perf_counter()
    evaluate(variables, active)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _falling_back(batched: Evaluate, sequential: Evaluate) -> Evaluate:
    """``batched``, switching to ``sequential`` for good (with a warning) when it fails."""
    failed = []

    def evaluate(variables: dict[str, Tensor], active: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        if not failed:
            try:
                return batched(variables, active)
            except FAILURES as err:
                warnings.warn(f"problems run one after another: batching failed on this model ({err})")
                failed.append(err)
        return sequential(variables, active)

    return evaluate
