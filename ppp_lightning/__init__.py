"""ppp-lightning: gradient leakage attacks and defenses (PRECODE, PPP) for PyTorch Lightning."""

from ppp_lightning.classifier import ImageClassifier
from ppp_lightning.precode import PRECODE

__all__ = ["ImageClassifier", "PRECODE"]
__version__ = "0.1.0"
