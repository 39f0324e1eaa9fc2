"""ppp-lightning: gradient leakage attacks and defenses (PRECODE, PPP) for PyTorch Lightning.

The core (``defenses/``, ``attacks/``, ``assessment/``, ``auditing/``, ``models/`` and the
top-level modules) imports no Lightning; the shell is ``lightning/`` and ``federated/`` here, with
``callbacks`` and ``datamodules`` beside the package. ``ImageClassifier`` is loaded on first use,
so ``import ppp_lightning`` stays Lightning-free (docs/architecture.md has the map).
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
