"""Moved to :mod:`ppp_lightning.defenses.precode`.

This module keeps the documented import path ``ppp_lightning.precode``.
"""

from ppp_lightning.defenses.precode import *  # noqa: F403 (the re-exports)
from ppp_lightning.defenses.precode import __all__  # noqa: F401
