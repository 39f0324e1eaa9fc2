"""One check for every numeric setting: finite, and in its allowed range, or a message that says so."""

from __future__ import annotations

import math
from typing import Optional

__all__ = ["check_number"]


def check_number(
    name: str,
    value: float,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    exclusive_minimum: bool = False,
) -> float:
    """Return ``value`` as a float if it is finite and in range, else raise naming it.

    NaN passes every ``<``/``>`` comparison, so without this a NaN noise level or learning rate
    would slip through range checks and silently switch a defense or training off.

    Args:
        name: the setting's name, as the user typed it.
        value: its value.
        minimum: the smallest allowed value (``None``: no bound).
        maximum: the largest allowed value (``None``: no bound).
        exclusive_minimum: whether ``minimum`` itself is refused.

    Raises:
        ValueError: ``"<name>=<value>; allowed: a finite number ..."`` when it is not a number,
            not finite or out of range.
    """
    bounds = []
    if minimum is not None:
        bounds.append(f"{'>' if exclusive_minimum else '>='} {minimum:g}")
    if maximum is not None:
        bounds.append(f"<= {maximum:g}")
    allowed = "a finite number" + (f" {' and '.join(bounds)}" if bounds else "")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}; allowed: {allowed}") from None
    too_low = minimum is not None and (number <= minimum if exclusive_minimum else number < minimum)
    if not math.isfinite(number) or too_low or (maximum is not None and number > maximum):
        raise ValueError(f"{name}={value}; allowed: {allowed}")
    return number
