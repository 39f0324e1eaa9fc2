"""Which parameters to perturb: positions relative to PRECODE, in forward order, or name patterns.

Positions work on any model: the PRECODE module is found by its type and the other modules are
placed before or after it by the order in which a traced forward pass executes them (forward
hooks), not by the order in which they were registered.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from fnmatch import fnmatchcase
from typing import Any, Union

import torch
from torch import nn

from ppp_lightning.precode import PRECODE

__all__ = ["POSITIONS", "check_layers", "execution_spans", "needs_example_input", "select_parameters"]

POSITIONS = ("before_bottleneck", "bottleneck", "after_bottleneck", "all")


def needs_example_input(layers: Union[str, Sequence[str]]) -> bool:
    """Whether resolving ``layers`` traces a forward pass (a position other than ``all``)."""
    return isinstance(layers, str) and layers in POSITIONS and layers != "all"


def check_layers(model: nn.Module, layers: Union[str, Sequence[str]]) -> None:
    """Fail early if ``layers`` is a position relative to PRECODE and ``model`` has none.

    Raises:
        ValueError: naming the position and listing the available parameter names.
    """
    if needs_example_input(layers) and not any(isinstance(m, PRECODE) for m in model.modules()):
        raise ValueError(
            f"layers={layers!r} is relative to a PRECODE bottleneck but the model has none; use 'all' or "
            f"name patterns. Available parameters: {_trainable(model)}"
        )


def execution_spans(model: nn.Module, example_input: Any) -> dict[str, tuple[int, int]]:
    """When each submodule starts and ends its first call in a forward pass on ``example_input``.

    The pass runs in eval mode under ``no_grad`` and ``torch.random.fork_rng``; modes, BatchNorm
    statistics, torch's RNG and each PRECODE's generator, ``kl`` and ``last_eps`` are restored,
    so tracing does not change training.

    Args:
        model: any module.
        example_input: a tensor (one argument), a tuple (positional arguments) or a dict (keywords),
            as Lightning's ``example_input_array``.

    Returns:
        Module name (as in ``named_modules``, root ``""``) to ``(start, end)`` ticks of a clock
        that advances at every module entry and exit; modules never called are absent.
    """
    clock = itertools.count()
    spans: dict[str, list[int]] = {}

    def enter(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            spans.setdefault(name, [next(clock), -1])

        return hook

    def leave(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if spans[name][1] < 0:
                spans[name][1] = next(clock)

        return hook

    modes = {module: module.training for module in model.modules()}
    bottlenecks = [(m, m.kl, m.last_eps, m.generator and m.generator.get_state()) for m in _precodes(model)]
    cuda = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    with ExitStack() as stack:
        for name, module in model.named_modules():
            stack.callback(module.register_forward_pre_hook(enter(name)).remove)
            stack.callback(module.register_forward_hook(leave(name)).remove)
        stack.enter_context(torch.random.fork_rng(devices=cuda))
        stack.enter_context(torch.no_grad())
        try:
            _call(model.eval(), example_input)
        finally:
            for module, training in modes.items():
                module.training = training
            for module, kl, last_eps, state in bottlenecks:
                module.kl, module.last_eps = kl, last_eps
                if state is not None:
                    module.generator.set_state(state)
    return {name: (start, end) for name, (start, end) in spans.items()}


def select_parameters(
    model: nn.Module,
    layers: Union[str, Sequence[str]] = "before_bottleneck",
    include_encoder: bool = True,
    example_input: Any = None,
) -> list[str]:
    """Names of the trainable parameters to perturb.

    Positions (relative to the first PRECODE to run and the last one to finish):

    - ``before_bottleneck``: parameters of modules whose forward starts before the bottleneck
      (PPP's default; a module that directly owns parameters and encloses the bottleneck counts
      as before it, since its forward starts first);
    - ``bottleneck``: the PRECODE modules' own parameters (encoder and decoder);
    - ``after_bottleneck``: parameters of modules that start after the bottleneck has finished;
    - ``all``: every trainable parameter (no PRECODE needed, no tracing).

    ``include_encoder`` decides whether the PRECODE encoders' parameters are in a positional set
    (added to ``before_bottleneck``/``after_bottleneck``, removed from ``bottleneck``/``all``
    when ``False``): an unperturbed encoder gradient reveals the encoder's input, the features.
    Patterns (``fnmatch``, matched against the full name and against every dotted suffix, so
    ``features.0.*`` matches ``network.features.0.weight``) select exactly what they match.
    Parameters of modules that the traced pass never calls belong to no position but ``all``.

    Args:
        model: any module.
        layers: a position or one or more name patterns.
        include_encoder: whether PRECODE encoders are perturbed (positions only).
        example_input: the input of the traced forward pass (see :func:`execution_spans`);
            required for positions other than ``all``.

    Returns:
        Names as in ``model.named_parameters()``, in forward order for positions.

    Raises:
        ValueError: if the selection is empty, or a position needs a PRECODE the model lacks or an
            example input that is missing; the message lists the available parameter names.
    """
    check_layers(model, layers)
    if isinstance(layers, str) and layers in POSITIONS:
        names = _by_position(model, layers, include_encoder, example_input)
    else:
        patterns = [layers] if isinstance(layers, str) else list(layers)
        names = [n for n in _trainable(model) if any(fnmatchcase(n, p) or fnmatchcase(n, f"*.{p}") for p in patterns)]
    if not names:
        raise ValueError(
            f"layers={layers!r} selects no trainable parameter (positions: {', '.join(POSITIONS)}). "
            f"Available parameters: {_trainable(model)}"
        )
    return names


def _by_position(model: nn.Module, position: str, include_encoder: bool, example_input: Any) -> list[str]:
    encoders = {_join(name, "encoder") for name, m in model.named_modules() if isinstance(m, PRECODE)}
    if position == "all":
        return [n for n in _trainable(model) if include_encoder or n.rpartition(".")[0] not in encoders]
    if example_input is None:
        raise ValueError(f"layers={position!r} needs an example input to trace the forward order")
    spans = execution_spans(model, example_input)
    ran = [name for name, m in model.named_modules() if isinstance(m, PRECODE) and name in spans]
    if not ran:
        raise ValueError(f"layers={position!r}: no PRECODE module ran in the traced forward pass")
    start, end = min(spans[n][0] for n in ran), max(spans[n][1] for n in ran)

    def where(name: str) -> str:
        if name in encoders:
            return "encoder"
        if any(name == n or name.startswith(_join(n, "")) for n in ran):
            return "bottleneck"
        return "before_bottleneck" if spans[name][0] < start else "after_bottleneck" if spans[name][0] > end else ""

    trainable = set(_trainable(model))
    wanted = {position, "encoder"} if include_encoder else {position}
    return [
        full
        for name in sorted(spans, key=lambda n: spans[n][0])
        if where(name) in wanted
        for full in (_join(name, p) for p, _ in model.get_submodule(name).named_parameters(recurse=False))
        if full in trainable
    ]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _precodes(model: nn.Module) -> list[PRECODE]:
    return [m for m in model.modules() if isinstance(m, PRECODE)]


def _trainable(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def _call(model: nn.Module, example_input: Any) -> Any:
    if isinstance(example_input, tuple):
        return model(*example_input)
    if isinstance(example_input, dict):
        return model(**example_input)
    return model(example_input)
