"""A scoped seed: seeded RNGs inside a block, the caller's streams untouched outside it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["seeded"]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with Python's, NumPy's and torch's RNGs seeded, and restore their states after.

    The block draws exactly what it would after ``pl.seed_everything(seed)`` (shuffling, PRECODE's
    samples, initial weights), while the caller's streams and the environment are left alone.

    Args:
        seed: the seed of the three RNGs inside the block.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng():
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)
