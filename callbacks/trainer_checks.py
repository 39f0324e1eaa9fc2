"""Checks of the Trainer's settings that our callbacks rely on, run in ``setup`` before any step."""

from __future__ import annotations

import pytorch_lightning as pl

__all__ = ["check_accumulation"]


def check_accumulation(trainer: pl.Trainer) -> None:
    """Refuse ``accumulate_grad_batches < 1`` before any attack or step (Lightning fails only at the first step).

    Raises:
        ValueError: naming the value and what is allowed.
    """
    if trainer.accumulate_grad_batches < 1:
        raise ValueError(f"accumulate_grad_batches={trainer.accumulate_grad_batches}; allowed: >= 1")
