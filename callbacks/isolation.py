"""How attack callbacks run beside training without touching it: forked RNG, autograd on, smoke tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytorch_lightning as pl
import torch

from ppp_lightning.attacks import AttackSpec

__all__ = ["SMOKE_ITERATIONS", "isolated", "for_this_run"]

SMOKE_ITERATIONS = 2  # under fast_dev_run, as Lightning runs one batch of everything


@contextmanager
def isolated(device: torch.device) -> Iterator[None]:
    """Leave training's RNG streams as they were, and allow autograd (even in an inference context)."""
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda), torch.inference_mode(False), torch.enable_grad():
        yield


def for_this_run(spec: AttackSpec, trainer: pl.Trainer) -> AttackSpec:
    """The spec that runs: under ``fast_dev_run`` a smoke test of :data:`SMOKE_ITERATIONS` steps."""
    return spec.smoke_test(SMOKE_ITERATIONS) if trainer.fast_dev_run else spec
