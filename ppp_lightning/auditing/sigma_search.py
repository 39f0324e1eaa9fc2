"""The smallest protective sigma against a leak oracle: a geometric bisection, or sweeps over sigma grids.

The oracle says whether an attack suite leaks at a sigma. Leaking is taken to fall with sigma;
both searches bracket the threshold between a sigma that leaks and one that does not and narrow
the bracket in log space until its ends are within ``factor`` of each other. The answer is the
bracket's upper end: the smallest sigma *measured* not to leak.

- :func:`smallest_protective_sigma` asks one sigma at a time (each answer picks the next sigma);
- :func:`sweep_protective_sigma` asks whole grids at once (the oracle can then audit every sigma
  of a grid in one attack run, :mod:`~ppp_lightning.auditing.sweep`): a coarse geometric grid
  around ``start``, extended while the threshold lies outside it, then one finer grid inside the
  bracket whose steps are at most ``factor``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Optional

from ppp_lightning.validation import check_number

__all__ = ["SigmaSearch", "smallest_protective_sigma", "sweep_protective_sigma"]

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
    _check_range(start, factor, min_sigma, max_sigma)
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


def sweep_protective_sigma(
    leaks: Callable[[Sequence[float]], Mapping[float, bool]],
    start: float = 1.0,
    factor: float = 1.5,
    coarse: float = 4.0,
    span: int = 2,
    min_sigma: float = 1e-3,
    max_sigma: float = 1e3,
    first: Optional[Sequence[float]] = None,
) -> SigmaSearch:
    """Find the smallest sigma at which ``leaks`` says no, to within ``factor``, asking whole grids at once.

    The first grid is ``start * coarse**k`` for ``k`` in ``[-span, span]`` (or ``first``); while every sigma
    asked leaks (or none does) the next grid continues upwards (downwards) by the same steps; then
    one grid of steps at most ``factor`` fills the bracket. The answer is the smallest sigma
    measured not to leak above the largest one measured to leak.

    Args:
        leaks: whether the suite leaks at each of a set of sigmas (monotone: less with more noise).
        start: the centre of the first grid.
        factor: stop when the leaking and the protective sigma are within this ratio (> 1).
        coarse: the first grids' step (> 1; at most ``factor``, no finer grid is needed).
        span: the first grid's sigmas on either side of ``start`` (>= 1).
        min_sigma: the smallest sigma asked.
        max_sigma: the largest sigma asked.
        first: the first grid instead of the coarse one (e.g. sigmas another search already
            audited, which cost nothing to ask again).

    Raises:
        ValueError: if ``factor <= 1``, ``coarse <= 1``, ``span < 1`` or the sigmas are not
            positive and ordered.
    """
    _check_range(start, factor, min_sigma, max_sigma)
    check_number("coarse", coarse, minimum=1, exclusive_minimum=True)
    if span < 1:
        raise ValueError(f"span={span}; allowed: >= 1")
    search = SigmaSearch(None, None)
    found: dict[float, bool] = {}

    def ask(sigmas: Sequence[float]) -> None:
        # 6 significant digits: a sigma reached by two grids is one sigma (and one audit folder)
        new = sorted({float(f"{min(max(sigma, min_sigma), max_sigma):.6g}") for sigma in sigmas} - set(found))
        answers = leaks(new) if new else {}
        for sigma in new:
            found[sigma] = bool(answers[sigma])
            search.evaluations.append((sigma, found[sigma]))
        search.leaking = max((s for s, leaked in found.items() if leaked), default=None)
        search.sigma = min((s for s, leaked in found.items() if not leaked and s > (search.leaking or 0)),
                           default=None)  # fmt: skip

    ask(first or [start * coarse**k for k in range(-span, span + 1)])
    while search.sigma is None and max(found) < max_sigma:  # all leak: continue upwards
        ask([max(found) * coarse**k for k in range(1, 2 * span + 2)])
    while search.leaking is None and min(found) > min_sigma:  # none leaks: continue downwards
        ask([min(found) / coarse**k for k in range(1, 2 * span + 2)])
    while search.sigma is not None and search.leaking is not None and search.sigma / search.leaking > factor:
        steps = math.ceil(math.log(search.sigma / search.leaking) / math.log(factor))
        ratio = (search.sigma / search.leaking) ** (1 / steps)
        ask([search.leaking * ratio**k for k in range(1, steps)])
    return search


def _check_range(start: float, factor: float, min_sigma: float, max_sigma: float) -> None:
    """Refuse a search's precision and range (each named with its allowed values).

    Raises:
        ValueError: if ``factor <= 1`` or the sigmas are not positive and ordered.
    """
    check_number("factor", factor, minimum=1, exclusive_minimum=True)
    for name, value in (("min_sigma", min_sigma), ("start", start), ("max_sigma", max_sigma)):
        check_number(name, value, minimum=0, exclusive_minimum=True)
    if not min_sigma <= start <= max_sigma:
        raise ValueError(f"min_sigma={min_sigma}, start={start}, max_sigma={max_sigma}; allowed: min <= start <= max")
