"""Which parameters to perturb: positions relative to PRECODE, in forward order, or name patterns.

Positions work on any model: the PRECODE module is found by its type and the other modules are
placed before or after it by the order in which a forward pass executes them (recorded with
forward hooks, on an example input or during a real training step), not by the order in which
they were registered.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from fnmatch import fnmatchcase
from typing import Any, Optional, Union

import torch
from torch import nn

from ppp_lightning.defenses.precode import PRECODE, trace_bottlenecks

__all__ = ["POSITIONS", "check_layers", "execution_spans", "needs_example_input", "recorded_spans", "select_parameters"]

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


@contextmanager
def recorded_spans(model: nn.Module) -> Iterator[dict[str, list[int]]]:
    """Record when each submodule starts and ends its first call while the block runs.

    Yields:
        A dict, filled as modules run, from module name (as in ``named_modules``, root ``""``) to
        ``[start, end]`` ticks of a clock that advances at every module entry and exit; modules
        never called are absent.
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

    with ExitStack() as stack:
        for name, module in model.named_modules():
            stack.callback(module.register_forward_pre_hook(enter(name)).remove)
            stack.callback(module.register_forward_hook(leave(name)).remove)
        yield spans


def execution_spans(model: nn.Module, example_input: Any) -> dict[str, list[int]]:
    """:func:`recorded_spans` of a forward pass of ``model`` on ``example_input``.

    The pass runs in eval mode under ``no_grad`` and ``torch.random.fork_rng``, with PRECODE drawing
    from a throwaway generator; modes, BatchNorm statistics, torch's RNG and each PRECODE's own
    generator are left as they were, so tracing does not change training.

    Args:
        model: any module with a ``forward``.
        example_input: a tensor (one argument), a tuple (positional arguments) or a dict (keywords),
            as Lightning's ``example_input_array``.
    """
    modes = {module: module.training for module in model.modules()}
    devices = {p.device for p in model.parameters()}
    cuda = sorted({d.index or 0 for d in devices if d.type == "cuda"})
    throwaway = torch.Generator(next(iter(devices), torch.device("cpu")))
    with recorded_spans(model) as spans, torch.random.fork_rng(devices=cuda), torch.no_grad():
        try:
            with trace_bottlenecks(throwaway):
                _call(model.eval(), example_input)
        finally:
            for module, training in modes.items():
                module.training = training
    return spans


def select_parameters(
    model: nn.Module,
    layers: Union[str, Sequence[str]] = "before_bottleneck",
    include_encoder: bool = True,
    example_input: Any = None,
    spans: Optional[Mapping[str, Sequence[int]]] = None,
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
    A module that the traced pass never calls itself (e.g. ``MultiheadAttention.out_proj``, whose
    weights its parent uses directly) is placed where its nearest called ancestor is.

    Args:
        model: any module.
        layers: a position or one or more name patterns.
        include_encoder: whether PRECODE encoders are perturbed (positions only).
        example_input: the input of the traced forward pass (see :func:`execution_spans`).
        spans: instead of ``example_input``, spans already recorded (:func:`recorded_spans`), e.g.
            during a real training step. One of the two is required for positions but ``all``.

    Returns:
        Names as in ``model.named_parameters()``, in forward order for positions.

    Raises:
        ValueError: if the selection is empty, or a position needs a PRECODE the model lacks or an
            example input (or spans) that is missing; the message lists the available parameter names.
    """
    check_layers(model, layers)
    if isinstance(layers, str) and layers in POSITIONS:
        names = _by_position(model, layers, include_encoder, example_input, spans)
    else:
        patterns = [layers] if isinstance(layers, str) else list(layers)
        names = [n for n in _trainable(model) if any(fnmatchcase(n, p) or fnmatchcase(n, f"*.{p}") for p in patterns)]
    if not names:
        raise ValueError(
            f"layers={layers!r} selects no trainable parameter (positions: {', '.join(POSITIONS)}). "
            f"Available parameters: {_trainable(model)}"
        )
    return names


def _by_position(
    model: nn.Module, position: str, include_encoder: bool, example_input: Any, spans: Optional[Mapping[str, Sequence[int]]]
) -> list[str]:
    encoders = {_join(name, "encoder") for name, m in model.named_modules() if isinstance(m, PRECODE)}
    if position == "all":
        return [n for n in _trainable(model) if include_encoder or n.rpartition(".")[0] not in encoders]
    if spans is None and example_input is None:
        raise ValueError(f"layers={position!r} needs an example input (or recorded spans) to trace the forward order")
    spans = execution_spans(model, example_input) if spans is None else spans
    ran = [name for name, m in model.named_modules() if isinstance(m, PRECODE) and name in spans]
    if not ran:
        raise ValueError(f"layers={position!r}: no PRECODE module ran in the traced forward pass")
    start, end = min(spans[n][0] for n in ran), max(spans[n][1] for n in ran)

    def tick(name: str) -> Optional[int]:
        # A module that never runs itself (MultiheadAttention's out_proj is used functionally)
        # is placed where its nearest running ancestor is; with none, it has no position.
        while name not in spans:
            if not name:
                return None
            name = name.rpartition(".")[0]
        return spans[name][0]

    def where(name: str, start_tick: int) -> str:
        if name in encoders:
            return "encoder"
        if any(name == n or name.startswith(_join(n, "")) for n in ran):
            return "bottleneck"
        return "before_bottleneck" if start_tick < start else "after_bottleneck" if start_tick > end else ""

    trainable = set(_trainable(model))
    wanted = {position, "encoder"} if include_encoder else {position}
    placed = sorted(((tick(n), n, m) for n, m in model.named_modules() if tick(n) is not None), key=lambda t: t[0])
    return [
        full
        for start_tick, name, module in placed
        if where(name, start_tick) in wanted
        for full in (_join(name, p) for p, _ in module.named_parameters(recurse=False))
        if full in trainable
    ]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _trainable(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]


def _call(model: nn.Module, example_input: Any) -> Any:
    if isinstance(example_input, tuple):
        return model(*example_input)
    if isinstance(example_input, dict):
        return model(**example_input)
    return model(example_input)
