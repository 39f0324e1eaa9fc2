"""One check for every numeric setting: finite, and in its allowed range, or a message that says so."""

from __future__ import annotations

import math
from typing import Optional

__all__ = ["MAX_SEED", "check_integer", "check_number", "check_seed"]

# The largest seed (Lightning's seed_everything and NumPy accept 0 to 2**32 - 1).
MAX_SEED = 2**32 - 1


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


def check_integer(name: str, value: int, minimum: int, note: str = "") -> int:
    """Return ``value`` if it is an integer (not a bool) of at least ``minimum``, else raise naming it.

    Args:
        name: the setting's name, as the user typed it.
        value: its value.
        minimum: the smallest allowed value.
        note: said after the allowed values (e.g. ``"(0: none)"``).

    Raises:
        ValueError: ``"<name>=<value>; allowed: an integer >= <minimum>"``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r}; allowed: an integer >= {minimum}{f' {note}' if note else ''}")
    return value


def check_seed(seed: int) -> int:
    """Return ``seed`` if it is an integer in ``[0, 2**32 - 1]`` (what Lightning's ``seed_everything`` allows).

    Raises:
        ValueError: ``"seed=<value>; allowed: an integer from 0 to 4294967295 ..."``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed={seed!r}; allowed: an integer from 0 to {MAX_SEED} (2**32 - 1, as seed_everything)")
    return seed
