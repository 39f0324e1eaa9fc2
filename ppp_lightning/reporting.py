"""Moved to :mod:`ppp_lightning.assessment.reporting`.

This module keeps the documented import path ``ppp_lightning.reporting``.
"""

from ppp_lightning.assessment.reporting import *  # noqa: F403 (the re-exports)
from ppp_lightning.assessment.reporting import __all__  # noqa: F401
