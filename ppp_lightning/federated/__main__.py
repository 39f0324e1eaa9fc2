"""``python -m ppp_lightning.federated --config FILE``: a federated run on this machine.

Flags: ``--num-supernodes N`` virtual clients (default 2), ``--engine ray`` (Flower's simulation
engine, default) or ``in-process`` (no Ray), ``--cpus-per-client``, ``--gpus-per-client``, and any
key of the YAML (``--federation.num_rounds 5``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Optional

from ppp_lightning.federated.config import experiment_parser, parse_config, settings
from ppp_lightning.federated.environment import quiet_flower

__all__ = ["main"]

_RUNNER_KEYS = ("num_supernodes", "engine", "cpus_per_client", "gpus_per_client")


def main(args: Optional[Sequence[str]] = None) -> None:
    """Parse the arguments and run the federation.

    Flower and Ray are switched quiet first (keeping any value the user set), before Flower is
    imported: Flower reads its telemetry switch on import.

    Args:
        args: command-line arguments; ``None`` reads ``sys.argv``.
    """
    quiet_flower()
    # Flower reads its telemetry switch when imported: import the apps only now.
    from ppp_lightning.federated.client_app import app as client_app
    from ppp_lightning.federated.in_process import InProcessGrid
    from ppp_lightning.federated.server_app import prepare_process, run_federation
    from ppp_lightning.federated.simulation import simulate

    parser = experiment_parser()
    parser.add_argument("--num-supernodes", type=int, default=2, help="virtual clients")
    parser.add_argument("--engine", type=Literal["ray", "in-process"], default="ray", help="simulation engine")
    parser.add_argument("--cpus-per-client", type=float, default=1.0, help="Ray's CPU reservation per client")
    parser.add_argument("--gpus-per-client", type=float, default=0.0, help="Ray's GPU reservation per client")
    config = parse_config(args, parser)
    runner = {key: config.pop(key) for key in _RUNNER_KEYS}
    if runner["engine"] == "in-process":
        settings(config).check_nodes(runner["num_supernodes"])
        prepare_process()
        run_federation(InProcessGrid(client_app, runner["num_supernodes"]), config)
    else:
        simulate(config, runner["num_supernodes"], runner["cpus_per_client"], runner["gpus_per_client"])


if __name__ == "__main__":
    main()
