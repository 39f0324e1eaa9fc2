"""Federated learning with Flower: clients train with our LightningModules, datamodules and callbacks.

Flower is optional (``pip install 'ppp-lightning[federated]'``). Importing this package first
switches off Flower's telemetry, update check and runtime dependency installation, so every entry
point (the apps, the simulation runner, ``python -m ppp_lightning.federated``) sets them before
Flower is imported. The Flower-free core is importable without Flower:

- :func:`~ppp_lightning.federated.core.shared_gradient`, IID partitions, per-client seeds;
- :class:`~ppp_lightning.federated.config.FederationSettings` and the YAML parser;
- :func:`~ppp_lightning.federated.local_training.train_locally` / ``evaluate_locally``.

With Flower: ``client_app.app``, ``server_app.app`` (deployment), ``server_app.run_federation``,
``strategy.ObservingFedAvg`` (override ``on_client_update`` for server-side analysis),
``in_process.InProcessGrid`` and ``simulation.simulate`` (Ray).
"""

import os

os.environ.update(
    {
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
)

from ppp_lightning.federated.config import FederationSettings  # noqa: E402
from ppp_lightning.federated.core import shared_gradient  # noqa: E402
from ppp_lightning.federated.update import ClientUpdate  # noqa: E402

__all__ = ["ClientUpdate", "FederationSettings", "shared_gradient"]
