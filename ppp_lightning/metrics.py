"""Moved to :mod:`ppp_lightning.assessment.metrics`.

This module keeps the documented import path ``ppp_lightning.metrics``.
"""

from ppp_lightning.assessment.metrics import *  # noqa: F403 (the re-exports)
from ppp_lightning.assessment.metrics import __all__  # noqa: F401
