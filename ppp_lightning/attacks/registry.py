"""The attack registry: one entry per attack, with what it can do and what it needs.

Each attack registers itself next to its class (``@register("analytic", one_image=True, ...)``);
the rest derives from the entries: :class:`~ppp_lightning.attacks.AttackSpec` (the names and
options it accepts), the audit's suite (:func:`~ppp_lightning.attacks.suite.attack_suite`: which
attacks apply to a model and a defense), the attack callback's accepted names and the docs'
table (:func:`capability_table`). Adding an attack is one file plus its registration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Optional, TypeVar

__all__ = ["REGISTRY", "Capabilities", "capability_table", "check_images", "register"]

AttackClass = TypeVar("AttackClass", bound=type)


@dataclass(frozen=True)
class Capabilities:
    """What a registered attack can do and needs.

    Args:
        name: the registered name (``AttackSpec(name)``, the suite's label).
        summary: one line on what it does, for the docs' table.
        one_image: it recovers one image per shared gradient (a batch of one).
        needs_precode: it attacks a PRECODE's sampling (the suite adds it only to models with one).
        needs_first_linear: it reads the image out of a first ``Linear`` layer that takes it.
        needs_positional_embedding: it reads the image out of a ViT's patch and positional
            embeddings (a torchvision ``VisionTransformer``; :func:`~ppp_lightning.attacks.april.patch_embedding`).
        needs_clean_gradient: it matches the gradients a defense leaves clean (the suite gives it
            the defense's settings, and adds it only where the defense leaves some clean).
        convolution_free: it applies only to models without convolutions (too slow or weak on them).
        needs_candidates: it needs a pool of candidate images holding the victim (the audit passes
            each victim's identification candidates as ``candidates``).
        targets: targeted variants the suite adds against a PRECODE (``<name>/<target>``).
        threat_model: the attack assumes more than a server that sees gradients; named here, it is
            never in the default suite (only where asked for by name), its verdicts carry this text
            and it stays out of the union over attacks.
    """

    name: str
    summary: str
    one_image: bool = False
    needs_precode: bool = False
    needs_first_linear: bool = False
    needs_positional_embedding: bool = False
    needs_clean_gradient: bool = False
    convolution_free: bool = False
    needs_candidates: bool = False
    targets: tuple[str, ...] = ()
    threat_model: Optional[str] = None


# Name -> attack class, in registration order (the suite's order); each class carries its ``capabilities``.
REGISTRY: dict[str, type] = {}


def register(name: str, summary: str, **needs: object) -> Callable[[AttackClass], AttackClass]:
    """Register an attack class under ``name`` with its :class:`Capabilities`.

    Args:
        name: the attack's name.
        summary: one line on what it does.
        needs: the other :class:`Capabilities` fields.

    Raises:
        ValueError: if ``name`` is taken by another class or a capability is unknown.
    """
    known = {field.name for field in fields(Capabilities)} - {"name", "summary"}
    unknown = sorted(set(needs) - known)
    if unknown:
        raise ValueError(f"capabilities {unknown} of attack {name!r}; allowed: {', '.join(sorted(known))}")
    capabilities = Capabilities(name, summary, **needs)  # type: ignore[arg-type]

    def add(cls: AttackClass) -> AttackClass:
        if REGISTRY.get(name, cls) is not cls:
            raise ValueError(f"attack {name!r} is registered already (by {REGISTRY[name].__name__})")
        cls.capabilities = capabilities
        REGISTRY[name] = cls
        return cls

    return add


def check_images(capabilities: Capabilities, shape: Sequence[int]) -> None:
    """Refuse a batch an attack that recovers one image per gradient cannot recover.

    Raises:
        ValueError: if the attack recovers one image and ``shape`` holds more.
    """
    if capabilities.one_image and shape[0] != 1:
        raise ValueError(f"attack {capabilities.name!r} recovers one image per gradient; got shape {tuple(shape)}")


def capability_table() -> str:
    """The registered attacks and their capabilities as a markdown table (the docs hold it)."""
    columns = [field.name for field in fields(Capabilities) if field.name not in ("name", "summary")]
    lines = [f"| attack | what it does | {' | '.join(columns)} |", f"|{'---|' * (len(columns) + 2)}"]
    for name, cls in REGISTRY.items():
        entry = cls.capabilities
        cells = [_cell(getattr(entry, column)) for column in columns]
        lines.append(f"| `{name}` | {entry.summary} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    """A capability as table text: names listed, flags as yes or -, text as is."""
    if isinstance(value, tuple):
        return ", ".join(value) or "-"
    if isinstance(value, str):
        return value
    return "yes" if value else "-"
