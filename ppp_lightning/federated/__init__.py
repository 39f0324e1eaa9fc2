"""Federated learning with Flower: clients train with our LightningModules, datamodules and callbacks.

Flower is optional (``pip install 'ppp-lightning[federated]'``). Importing this package changes
nothing in the process: the entry points (``python -m ppp_lightning.federated``, the ServerApp's
``main``, :func:`~ppp_lightning.federated.simulation.simulate`) switch off Flower's telemetry,
update check and runtime dependency installation and Ray's usage statistics with
:func:`~ppp_lightning.federated.environment.quiet_flower`, keeping any value the user set. Code
that imports the Flower apps itself calls it first. The Flower-free core is importable without
Flower:

- :func:`~ppp_lightning.federated.core.shared_gradient`, IID partitions, per-client seeds;
- :class:`~ppp_lightning.federated.config.FederationSettings` and the YAML parser;
- :func:`~ppp_lightning.federated.local_training.train_locally` / ``evaluate_locally``.

With Flower: ``client_app.app``, ``server_app.app`` (deployment), ``server_app.run_federation``,
``strategy.ObservingFedAvg`` (override ``on_client_update`` for server-side analysis),
``in_process.InProcessGrid`` and ``simulation.simulate`` (Ray).
"""

from ppp_lightning.federated.config import FederationSettings
from ppp_lightning.federated.core import shared_gradient
from ppp_lightning.federated.environment import quiet_flower
from ppp_lightning.federated.update import ClientUpdate

__all__ = ["ClientUpdate", "FederationSettings", "quiet_flower", "shared_gradient"]
