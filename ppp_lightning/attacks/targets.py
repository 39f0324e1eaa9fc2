"""Which gradients an attack matches: name patterns and the targeted presets against PRECODE."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Literal, Optional, get_args

from torch import Tensor, nn

from ppp_lightning.defenses.selection import execution_spans, select_parameters

__all__ = ["TARGETS", "Target", "check_target", "linear_layers", "select_gradients"]

# The targeted presets against a PRECODE. Both keep only gradients that PRECODE's noise does not
# reach; "before_decoder" also keeps the encoder's (deterministic: its gradient carries the KL term
# and the upstream of mu and sigma).
Target = Literal["before_bottleneck", "before_decoder"]
TARGETS: tuple[str, ...] = get_args(Target)


def check_target(target: Optional[str]) -> None:
    """Refuse an unknown targeted preset.

    Raises:
        ValueError: if ``target`` is neither ``None`` nor one of :data:`TARGETS`.
    """
    if target is not None and target not in TARGETS:
        raise ValueError(f"target={target!r}; allowed: None, {', '.join(TARGETS)}")


def select_gradients(
    model: nn.Module,
    available: Sequence[str],
    example_input: Tensor,
    include: Optional[Sequence[str]] = None,
    ignore: Optional[Sequence[str]] = None,
    target: Optional[Target] = None,
) -> list[str]:
    """Names of the shared gradients an attack matches, in ``available``'s order.

    Patterns are globs matched against the full parameter name and every dotted suffix, as in
    :func:`ppp_lightning.defenses.selection.select_parameters`.

    Args:
        model: the attacked model.
        available: names of the shared gradients.
        example_input: input of the traced forward pass that orders modules (``target`` only).
        include: keep only names matching one of these patterns (``None``: all).
        ignore: drop names matching one of these patterns.
        target: a preset relative to the first PRECODE in forward order: ``"before_bottleneck"``
            drops the whole PRECODE and everything after it, ``"before_decoder"`` keeps the
            encoder and drops the decoder and everything after it.

    Raises:
        ValueError: if ``target`` needs a PRECODE the model lacks, or nothing is selected;
            the message lists the available names.
    """
    names = [n for n in available if include is None or _matches(n, include)]
    names = [n for n in names if not _matches(n, ignore or ())]
    if target is not None:
        kept = set(select_parameters(model, "before_bottleneck", target == "before_decoder", example_input))
        names = [n for n in names if n in kept]
    if not names:
        raise ValueError(
            f"include={include}, ignore={ignore}, target={target!r} select no gradient; available: {list(available)}"
        )
    return names


def linear_layers(model: nn.Module, example_input: Tensor) -> list[str]:
    """Names of the ``nn.Linear`` modules of ``model`` in the order a forward pass starts them."""
    spans = execution_spans(model, example_input)
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name in spans]
    return sorted(linear, key=lambda name: spans[name][0])


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(name, p) or fnmatchcase(name, f"*.{p}") for p in patterns)
