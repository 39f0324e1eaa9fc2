"""ppp-lightning: gradient leakage attacks and defenses (PRECODE, PPP) for PyTorch Lightning.

The core modules (``precode``, ``losses``, ``selection``, ``perturbation``, ``defense``,
``gradients``, ``attacks``, ``metrics``, ``victims``) import no Lightning; ``ImageClassifier`` (the
Lightning shell) is loaded on first use, so ``import ppp_lightning.attacks`` stays Lightning-free.
"""

from typing import Any

from ppp_lightning.defenses.precode import PRECODE

__all__ = ["ImageClassifier", "PRECODE"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "ImageClassifier":
        from ppp_lightning.lightning.classifier import ImageClassifier

        return ImageClassifier
    raise AttributeError(f"module 'ppp_lightning' has no attribute {name!r}")
