"""The federated experiment's YAML: model, data, callbacks, local Trainer options and the federation.

One file configures both sides. The server parses it and sends it (without its logger and its
attack) to the clients with every round, so a SuperNode needs the package installed but no config file.

```yaml
model: {class_path: ppp_lightning.ImageClassifier, init_args: {...}}   # any LightningModule
data: {class_path: datamodules.OfflineMNISTDataModule, init_args: {...}}  # any LightningDataModule
callbacks: [{class_path: callbacks.PartialPerturbation, init_args: {...}}]  # clients' callbacks
trainer: {accelerator: cpu}            # extra keyword arguments of the clients' local Trainer
logger: {class_path: ..., init_args: {...}}  # the server's Lightning logger (optional)
federation: {num_rounds: 2, clients_per_round: 2, local_steps: 1, seed: 0, run_dir: runs/federated}
attack: {name: dlg, kwargs: {iterations: 20}, rounds: [1], clients: [0]}  # the server's (optional)
```
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import pytorch_lightning as pl
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from pytorch_lightning.loggers import Logger

from ppp_lightning.federated.server_attack import ServerAttack

__all__ = [
    "FederationSettings",
    "dump_config",
    "experiment_parser",
    "instantiate",
    "load_config",
    "parse_config",
    "settings",
]


@dataclass
class FederationSettings:
    """How the federation runs (the ``federation`` section of the YAML).

    The learning rate is the model's (``model.init_args.lr``); FedSGD is ``local_steps: 1`` with
    ``optimizer: sgd``.

    Args:
        num_rounds: rounds of federated training.
        clients_per_round: clients sampled for training each round; the server waits until this
            many are connected.
        evaluate_clients: clients that evaluate the new global model on their validation
            partition after each round; ``None`` for ``clients_per_round``, 0 for none.
        local_steps: optimizer steps of local training per round; ``None`` to train
            ``local_epochs`` epochs instead.
        local_epochs: epochs of local training per round, used when ``local_steps`` is ``None``.
        seed: seed of the initial global model, of the IID partition and (per client and round,
            see :func:`~ppp_lightning.federated.core.client_seed`) of local training.
        run_dir: folder of the run's outputs: ``metrics.json``, ``global_weights.pt`` and Ray's
            temporary files.
        share_truth: simulation only: every client attaches the images and labels it trained on
            to its reply, so the server can score its attacks (see
            :mod:`ppp_lightning.federated.attacking`). A real client never would: leave it off in
            deployments.

    Raises:
        ValueError: if a count is not positive or not exactly one of ``local_steps`` and
            ``local_epochs`` is set.
    """

    num_rounds: int = 2
    clients_per_round: int = 2
    evaluate_clients: Optional[int] = None
    local_steps: Optional[int] = 1
    local_epochs: Optional[int] = None
    seed: int = 0
    run_dir: str = "runs/federated"
    share_truth: bool = False

    def __post_init__(self) -> None:
        for name in ("num_rounds", "clients_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"federation.{name}={getattr(self, name)}; allowed: >= 1")
        if self.evaluate_clients is not None and self.evaluate_clients < 0:
            raise ValueError(f"federation.evaluate_clients={self.evaluate_clients}; allowed: None or >= 0")
        if (self.local_steps is None) == (self.local_epochs is None):
            raise ValueError(
                f"federation.local_steps={self.local_steps}, local_epochs={self.local_epochs}; "
                "allowed: exactly one of them set (local_steps: null to train local_epochs)"
            )
        local = self.local_steps or self.local_epochs
        if local < 1:
            raise ValueError(f"federation.local_steps/local_epochs={local}; allowed: >= 1")

    def check_nodes(self, num_nodes: int) -> None:
        """Fail early if ``num_nodes`` virtual nodes are too few (the server would wait for more forever).

        Raises:
            ValueError: naming the counts.
        """
        needed = max(self.clients_per_round, self.evaluate_clients or 0)
        if num_nodes < needed:
            raise ValueError(
                f"num_supernodes={num_nodes} < {needed} clients per round (clients_per_round={self.clients_per_round}, "
                f"evaluate_clients={self.evaluate_clients}); allowed: >= {needed}"
            )


def experiment_parser() -> ArgumentParser:
    """The parser of the federated YAML (``--config`` file, any key also as a flag)."""
    parser = ArgumentParser(description="ppp-lightning federated experiment")
    parser.add_argument("--config", action=ActionConfigFile, help="the experiment's YAML file")
    parser.add_subclass_arguments(pl.LightningModule, "model", required=True)
    parser.add_subclass_arguments(pl.LightningDataModule, "data", required=True)
    parser.add_argument("--callbacks", type=Optional[list[pl.Callback]], default=None)
    parser.add_argument("--trainer", type=dict[str, Any], default={}, help="extra kwargs of the clients' Trainer")
    parser.add_argument("--logger", type=Optional[Logger], default=None, help="the server's logger")
    parser.add_class_arguments(FederationSettings, "federation")
    parser.add_argument("--attack", type=Optional[ServerAttack], default=None, help="the server's attack")
    return parser


def parse_config(args: Optional[Sequence[str]], parser: Optional[ArgumentParser] = None) -> Namespace:
    """Parse and validate arguments, e.g. ``["--config", "configs/federated/fedsgd_mlp.yaml"]``.

    Args:
        args: command-line arguments; ``None`` reads ``sys.argv``.
        parser: :func:`experiment_parser` or an extension of it; ``None`` for the former.

    Raises:
        ValueError: if the federation or attack settings are invalid (the parser exits on other errors).
    """
    config = (parser or experiment_parser()).parse_args(None if args is None else list(args))
    settings(config)
    if config.attack is not None:
        ServerAttack(**vars(config.attack))
    return config


def settings(config: Namespace) -> FederationSettings:
    """The validated federation settings of a parsed experiment.

    Raises:
        ValueError: if they are invalid.
    """
    return FederationSettings(**vars(config.federation))


def dump_config(config: Namespace) -> str:
    """The experiment as YAML for the clients: everything but the server's logger and attack."""
    shipped = config.clone()
    shipped.logger = None
    shipped.attack = None
    return experiment_parser().dump(shipped)


def load_config(text: str) -> Namespace:
    """Parse a YAML string written by :func:`dump_config`."""
    return experiment_parser().parse_string(text)


def instantiate(config: Namespace) -> Namespace:
    """Build the objects: ``model``, ``data``, ``callbacks`` (a list), ``logger``, ``federation``, ``attack``."""
    built = experiment_parser().instantiate(config)
    built.callbacks = built.callbacks or []
    return built
