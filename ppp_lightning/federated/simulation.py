"""Flower's simulation engine (Ray): ``num_supernodes`` virtual SuperNodes on this machine."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Optional

from jsonargparse import Namespace

from ppp_lightning.federated.client_app import app as client_app
from ppp_lightning.federated.config import settings
from ppp_lightning.federated.environment import quiet_flower
from ppp_lightning.federated.server_app import make_server_app
from ppp_lightning.federated.strategy import ObservingFedAvg

__all__ = ["simulate"]


def simulate(
    config: Namespace,
    num_supernodes: int,
    cpus_per_client: float = 1.0,
    gpus_per_client: float = 0.0,
    strategy_cls: Optional[type[ObservingFedAvg]] = None,
) -> None:
    """Run the experiment with Flower's simulation engine and shut Ray down afterwards.

    An entry point: before Ray starts it switches Flower and Ray quiet for the worker processes
    (:func:`~ppp_lightning.federated.environment.quiet_flower`: no telemetry, no usage statistics;
    a value the user set wins). This process read Flower's telemetry switch when it imported
    Flower: call ``quiet_flower()`` before that, as ``python -m ppp_lightning.federated`` does.
    Ray keeps its temporary files (logs, session data) in ``<federation.run_dir>/ray``. A client
    that fails becomes a failed reply, which FedAvg skips; check ``metrics.json`` or the log.

    Args:
        config: the experiment from :func:`~ppp_lightning.federated.config.parse_config`.
        num_supernodes: number of virtual SuperNodes (clients); node ``i`` holds partition ``i``.
        cpus_per_client: CPU cores Ray reserves per client (how many clients run at once).
        gpus_per_client: GPU share Ray reserves per client.
        strategy_cls: the server's strategy; ``None`` chooses by the config (an ``attack``
            section selects :class:`~ppp_lightning.federated.attacking.AttackingFedAvg`).

    Raises:
        ImportError: if Ray (Flower's ``simulation`` extra) is missing.
        ValueError: if there are fewer SuperNodes than clients per round.
    """
    if find_spec("ray") is None:
        raise ImportError("the simulation engine needs Ray: pip install 'ppp-lightning[federated]'")
    import ray
    from flwr.simulation import run_simulation

    settings(config).check_nodes(num_supernodes)
    quiet_flower()
    backend = {"client_resources": {"num_cpus": cpus_per_client, "num_gpus": gpus_per_client}}
    with _short_path(Path(config.federation.run_dir, "ray")) as ray_dir:
        backend["init_args"] = {"_temp_dir": str(ray_dir), "include_dashboard": False}
        try:
            run_simulation(make_server_app(config, strategy_cls), client_app, num_supernodes, backend_config=backend)
        finally:
            if ray.is_initialized():
                ray.shutdown()


@contextmanager
def _short_path(target: Path) -> Iterator[Path]:
    """A short symlink to ``target``: Ray's socket paths under it must stay below 108 bytes."""
    target.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix="ppp-"))
    link = holder / "ray"
    link.symlink_to(target.resolve(), target_is_directory=True)
    try:
        yield link
    finally:
        link.unlink()
        shutil.rmtree(holder, ignore_errors=True)
