"""An attack's settings as one object: the only place that validates attack names and options.

:class:`AttackSpec` knows the registered attacks (:mod:`~ppp_lightning.attacks.registry`), the
options each one takes (an option the chosen attack would ignore is refused), which attacks need
the data's normalisation for their pixel box,
and builds an attack that follows the :class:`Attack` protocol. The attack callback, the
benchmarks, the audit and the Flower server attack all build through it.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Protocol, runtime_checkable

from torch import Tensor, nn

from ppp_lightning.attacks import adaptive, analytic, april, clean, dlg, features, inverting, linkage  # noqa: F401 (they register)
from ppp_lightning.attacks.registry import REGISTRY, Capabilities
from ppp_lightning.attacks.result import AttackResult

__all__ = ["ATTACKS", "Attack", "AttackName", "AttackSpec"]

# Every registered attack by name (:mod:`~ppp_lightning.attacks.registry`).
ATTACKS = REGISTRY
# The registered names as a type, for signatures the CLI reads (AttackSpec accepts later registrations too).
AttackName = Literal[tuple(REGISTRY)]  # type: ignore[valid-type]
# Set from the data, never by the user: the box of valid pixels in normalised units.
NORMALISATION = ("mean", "std")


@runtime_checkable
class Attack(Protocol):
    """What every attack is: a call from a shared gradient to a reconstruction, and many at once."""

    def __call__(
        self, model: nn.Module, gradients: Mapping[str, Tensor], labels: Optional[Tensor], shape: Sequence[int]
    ) -> AttackResult:
        """Reconstruct the batch of ``shape`` behind ``gradients`` (labels ``None``: recovered)."""
        ...

    def run(
        self,
        model: nn.Module,
        gradients: Sequence[Mapping[str, Tensor]],
        labels: Optional[Sequence[Optional[Tensor]]],
        shape: Sequence[int],
    ) -> list[AttackResult]:
        """Reconstruct every victim's batch (one shared gradient each), in one computation where possible."""
        ...


def _options(cls: type) -> dict[str, inspect.Parameter]:
    """Keyword options of ``cls``, following ``**kwargs`` that are passed on to base classes."""
    options: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = list(inspect.signature(klass.__init__).parameters.values())[1:]
        for p in parameters:
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                options.setdefault(p.name, p)
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return options


@dataclass(frozen=True)
class AttackSpec:
    """A registered attack and its options, validated once.

    Args:
        name: a registered attack (:data:`ATTACKS`, e.g. ``inverting`` or ``analytic``).
        settings: the attack's options (e.g. ``iterations``, ``lr``, ``tv_weight``, ``restarts``,
            ``target``, ``include``, ``ignore``); options the attack does not take are refused,
            and ``mean``/``std`` come from the data at :meth:`build`.

    Raises:
        ValueError: on an unknown name, an option the attack would ignore, or a value the attack
            refuses; the message names the value and what is allowed.
    """

    name: str = "inverting"
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ValueError(f"attack={self.name!r}; allowed: {', '.join(ATTACKS)}")
        object.__setattr__(self, "settings", dict(self.settings))
        allowed = sorted(set(self.options()) - set(NORMALISATION))
        refused = sorted(set(self.settings) - set(allowed))
        if refused:
            raise ValueError(f"attack={self.name!r} does not take {refused}; its options: {', '.join(allowed)}")
        self.build()  # the attack validates the values

    @property
    def needs_normalisation(self) -> bool:
        """Whether the attack takes the data's ``mean``/``std`` (for its box of valid pixels)."""
        return all(key in self.options() for key in NORMALISATION)

    @property
    def capabilities(self) -> Capabilities:
        """What the attack can do and needs (its registry entry)."""
        return ATTACKS[self.name].capabilities

    @property
    def label(self) -> str:
        """A short readable name: the attack and its target, e.g. ``inverting/before_decoder``."""
        target = self.settings.get("target")
        return f"{self.name}/{target}" if target else self.name

    def refuse_candidates(self, consumer: str) -> None:
        """Refuse an attack that picks among candidates where ``consumer`` has none to give it.

        Raises:
            ValueError: if the attack needs candidates (only the audit holds them).
        """
        if self.capabilities.needs_candidates:
            raise ValueError(
                f"attack={self.name!r} picks among candidates the attacker holds, which {consumer} does not have; "
                "run it with `ppp-lightning audit --attacks linkage` (or audit(..., attacks=...))"
            )

    def options(self) -> dict[str, inspect.Parameter]:
        """Every keyword option of the attack with its default."""
        return _options(ATTACKS[self.name])

    def get(self, option: str) -> Any:
        """The value of ``option``: the given one, else the attack's default."""
        return self.settings.get(option, self.options()[option].default)

    def replace(self, **settings: Any) -> AttackSpec:
        """A copy with some options changed (validated again)."""
        return AttackSpec(self.name, {**self.settings, **settings})

    def smoke_test(self, iterations: int = 2) -> AttackSpec:
        """The same attack with at most ``iterations`` steps (for Lightning's ``fast_dev_run``)."""
        if "iterations" not in self.options():
            return self
        return self.replace(iterations=min(self.get("iterations"), iterations))

    def build(self, mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)) -> Attack:
        """Make the attack.

        Args:
            mean: the data's per-channel normalisation mean (used by attacks that need it).
            std: the data's per-channel normalisation standard deviation.
        """
        box = {"mean": tuple(mean), "std": tuple(std)} if self.needs_normalisation else {}
        return ATTACKS[self.name](**box, **self.settings)

    def to_dict(self) -> dict[str, Any]:
        """The name and settings as plain values (for records)."""
        return {"name": self.name, "settings": dict(self.settings)}
