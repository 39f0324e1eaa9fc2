"""The smallest protective noise: a geometric bisection over sigma against a leak oracle.

The oracle runs an attack suite at one sigma and says whether any victim leaked. Leaking is taken
to fall with sigma; the search brackets the threshold between a sigma that leaks and one that does
not, then halves the bracket in log space until its ends are within ``factor`` of each other. The
answer is the bracket's upper end: the smallest sigma *measured* not to leak.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from ppp_lightning.validation import check_number

__all__ = ["SigmaSearch", "smallest_protective_sigma"]


@dataclass
class SigmaSearch:
    """The outcome of :func:`smallest_protective_sigma`.

    Args:
        sigma: the smallest sigma measured not to leak (``None`` if even ``max_sigma`` leaked).
        leaking: the largest sigma measured to leak (``None`` if even ``min_sigma`` did not).
        evaluations: every ``(sigma, leaked)`` the oracle was asked, in order.
    """

    sigma: Optional[float]
    leaking: Optional[float]
    evaluations: list[tuple[float, bool]] = field(default_factory=list)


def smallest_protective_sigma(
    leaks: Callable[[float], bool],
    start: float = 1.0,
    factor: float = 1.5,
    min_sigma: float = 1e-3,
    max_sigma: float = 1e3,
) -> SigmaSearch:
    """Find the smallest sigma at which ``leaks`` says no, to within ``factor``.

    Args:
        leaks: whether the attack suite leaks any victim at a sigma (monotone: less with more noise).
        start: the first sigma tried.
        factor: stop when the leaking and the protective sigma are within this ratio (> 1).
        min_sigma: the smallest sigma tried while bracketing.
        max_sigma: the largest sigma tried while bracketing.

    Raises:
        ValueError: if ``factor <= 1`` or the sigmas are not positive and ordered.
    """
    check_number("factor", factor, minimum=1, exclusive_minimum=True)
    for name, value in (("min_sigma", min_sigma), ("start", start), ("max_sigma", max_sigma)):
        check_number(name, value, minimum=0, exclusive_minimum=True)
    if not min_sigma <= start <= max_sigma:
        raise ValueError(f"min_sigma={min_sigma}, start={start}, max_sigma={max_sigma}; allowed: min <= start <= max")
    search = SigmaSearch(None, None)

    def ask(sigma: float) -> bool:
        leaked = bool(leaks(sigma))
        search.evaluations.append((sigma, leaked))
        if leaked:
            search.leaking = max(sigma, search.leaking or 0.0)
        else:
            search.sigma = min(sigma, search.sigma or math.inf)
        return leaked

    sigma, step = start, 4.0  # bracket: move by 4x towards the threshold
    leaked = ask(sigma)
    while leaked and sigma < max_sigma:
        sigma = min(sigma * step, max_sigma)
        leaked = ask(sigma)
    while not leaked and sigma > min_sigma and search.leaking is None:
        sigma = max(sigma / step, min_sigma)
        leaked = ask(sigma)
    while search.sigma is not None and search.leaking is not None and search.sigma / search.leaking > factor:
        ask(math.sqrt(search.sigma * search.leaking))
    return search
