"""The switches that keep Flower and Ray from calling out: for entry points to set, never at import.

Flower reads some of them when it is imported (telemetry) and Ray when it starts, so an entry
point calls :func:`quiet_flower` before it imports the Flower apps or starts the simulation.
"""

from __future__ import annotations

import os

__all__ = ["SWITCHES", "quiet_flower"]

# No telemetry, no update check, no run-time package installs, no Ray usage statistics.
SWITCHES = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def quiet_flower() -> dict[str, str]:
    """Set each of :data:`SWITCHES` that the environment does not set yet (a user's value wins).

    Returns:
        The switches' values now in effect.
    """
    for key, value in SWITCHES.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in SWITCHES}
