"""The Flower ServerApp: FedAvg over the YAML's model; saves the run's metrics and final weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from jsonargparse import Namespace

from ppp_lightning.federated._flower import EXPERIMENT, ArrayRecord, ConfigRecord, Context, Grid, Result, ServerApp
from ppp_lightning.federated.attacking import AttackingFedAvg
from ppp_lightning.federated.config import dump_config, instantiate, parse_config
from ppp_lightning.federated.environment import quiet_flower
from ppp_lightning.federated.strategy import ObservingFedAvg
from ppp_lightning.lightning.wandb_policy import use_offline_wandb_unless_logged_in
from ppp_lightning.seeding import seeded

__all__ = ["app", "make_server_app", "prepare_process", "run_federation"]

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Deployment entry point (``flwr run``): the run config's ``config`` is the YAML's path.

    Sets the entry point's switches first (:func:`prepare_process`).

    Raises:
        ValueError: if the run config names no YAML.
        FileNotFoundError: if the YAML does not exist (relative paths are taken from the ServerApp's
            working directory, so pass an absolute one).
    """
    if "config" not in context.run_config:
        raise ValueError("the run config has no 'config'; pass flwr run ... --run-config \"config='/abs/path.yaml'\"")
    path = Path(str(context.run_config["config"])).expanduser().resolve()
    if not path.is_file():
        raise FileNotFoundError(f"federated config {path} not found (run config 'config', resolved from {Path.cwd()})")
    prepare_process()
    run_federation(grid, parse_config(["--config", str(path)]))


def prepare_process() -> None:
    """Set a server entry point's switches, keeping any value the user set.

    Flower and Ray quiet (:func:`~ppp_lightning.federated.environment.quiet_flower`), W&B offline
    unless logged in.
    """
    quiet_flower()
    use_offline_wandb_unless_logged_in()


def make_server_app(config: Namespace, strategy_cls: Optional[type[ObservingFedAvg]] = None) -> ServerApp:
    """A ServerApp that runs a parsed experiment (used by the simulation runner).

    Its ``main`` is an entry point: it calls :func:`prepare_process` before the run.

    Args:
        config: the experiment from :func:`~ppp_lightning.federated.config.parse_config`.
        strategy_cls: the strategy, :class:`ObservingFedAvg` or a subclass; ``None`` chooses by
            the config (see :func:`run_federation`).
    """
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        prepare_process()
        run_federation(grid, config, strategy_cls)

    return server


def run_federation(
    grid: Grid, config: Namespace, strategy_cls: Optional[type[ObservingFedAvg]] = None
) -> tuple[ObservingFedAvg, Result]:
    """Run FedAvg for ``federation.num_rounds`` rounds on the nodes of ``grid``.

    The run draws from Python's, NumPy's and torch's RNGs seeded with ``federation.seed`` (the
    initial global model, the sampling of clients, the attacks; see
    :func:`~ppp_lightning.seeding.seeded`), and leaves the caller's streams alone. Every round the
    clients receive the global weights and the experiment (:func:`~ppp_lightning.federated.config.dump_config`).
    Aggregated client metrics go to the YAML's ``logger``; at the end ``metrics.json`` (aggregated
    train and evaluate metrics by round) and ``global_weights.pt`` (the final ``state_dict``) are
    written to ``federation.run_dir``. Environment switches are the entry points' business
    (:func:`prepare_process`).

    Args:
        grid: Flower's grid (the simulation's, a deployment's or an
            :class:`~ppp_lightning.federated.in_process.InProcessGrid`).
        config: the experiment from :func:`~ppp_lightning.federated.config.parse_config`.
        strategy_cls: the strategy, built by its ``from_experiment``; ``None`` for
            :class:`~ppp_lightning.federated.attacking.AttackingFedAvg` when the config has an
            ``attack`` section, else :class:`ObservingFedAvg`.

    Returns:
        The strategy (with its observations) and Flower's result.
    """
    with seeded(config.federation.seed):
        experiment = instantiate(config)
        if strategy_cls is None:
            strategy_cls = ObservingFedAvg if experiment.attack is None else AttackingFedAvg
        strategy = strategy_cls.from_experiment(experiment)
        shipped = dump_config(config)
        result = strategy.start(
            grid,
            ArrayRecord.from_torch_state_dict(experiment.model.state_dict()),
            num_rounds=experiment.federation.num_rounds,
            train_config=ConfigRecord({EXPERIMENT: shipped}),
            evaluate_config=ConfigRecord({EXPERIMENT: shipped}),
        )
    _save(result, Path(experiment.federation.run_dir))
    if experiment.logger is not None:
        experiment.logger.finalize("success")
    return strategy, result


def _save(result: Result, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = {
        "train": {r: dict(m) for r, m in result.train_metrics_clientapp.items()},
        "evaluate": {r: dict(m) for r, m in result.evaluate_metrics_clientapp.items()},
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    torch.save(dict(result.arrays.to_torch_state_dict()), run_dir / "global_weights.pt")
