"""The server's strategy: FedAvg that shows every client update, with the weights it started from."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

from jsonargparse import Namespace
from pytorch_lightning.loggers import Logger
from torch import Tensor
from typing_extensions import override

from ppp_lightning.federated._flower import (
    ARRAYS,
    CLIENT,
    METRICS,
    NUM_EXAMPLES,
    PARTITION_ID,
    TRUTH,
    ArrayRecord,
    ConfigRecord,
    FedAvg,
    Grid,
    Message,
    MetricRecord,
)
from ppp_lightning.federated.core import decode_batch
from ppp_lightning.federated.update import ClientUpdate

__all__ = ["ObservingFedAvg"]

# FedAvg samples max(int(fraction * connected), min_nodes) nodes; a tiny positive fraction lets the
# minimum alone set the count (a fraction of 0 would skip the stage).
_MINIMUM_ONLY = 1e-9


class ObservingFedAvg(FedAvg):
    """FedAvg (Flower's Message API) that remembers the global weights it sends each round and
    hands every client's reply to :meth:`on_client_update` before aggregating.

    This is the honest-but-curious server's view: subclass it and override
    :meth:`on_client_update`, which receives a :class:`~ppp_lightning.federated.update.ClientUpdate`
    with the round's global weights and the client's returned weights (``update.shared_gradient(lr)``
    recovers a FedSGD client's gradient). :attr:`sent_weights` maps each recent round to the
    ``state_dict`` sent in it. Aggregated metrics go to ``logger`` with the round as step.

    Args:
        clients_per_round: clients sampled for training each round (and needed to start it).
        evaluate_clients: clients sampled to evaluate each new global model; ``None`` for
            ``clients_per_round``, 0 to skip federated evaluation.
        logger: a Lightning logger for the aggregated metrics; ``None`` for none.
        keep_rounds: how many of the latest rounds :attr:`sent_weights` keeps; ``None`` keeps all.

    Raises:
        ValueError: if a count is out of range.
    """

    def __init__(
        self,
        clients_per_round: int = 2,
        evaluate_clients: Optional[int] = None,
        logger: Optional[Logger] = None,
        keep_rounds: Optional[int] = 1,
    ) -> None:
        evaluate = clients_per_round if evaluate_clients is None else evaluate_clients
        if clients_per_round < 1 or evaluate < 0:
            raise ValueError(
                f"clients_per_round={clients_per_round}, evaluate_clients={evaluate_clients}; "
                "allowed: >= 1, and None or >= 0"
            )
        if keep_rounds is not None and keep_rounds < 1:
            raise ValueError(f"keep_rounds={keep_rounds}; allowed: None or >= 1")
        super().__init__(
            fraction_train=_MINIMUM_ONLY,
            fraction_evaluate=_MINIMUM_ONLY if evaluate else 0.0,
            min_train_nodes=clients_per_round,
            min_evaluate_nodes=evaluate,
            min_available_nodes=max(clients_per_round, evaluate),
            weighted_by_key=NUM_EXAMPLES,
            arrayrecord_key=ARRAYS,
        )
        self.logger = logger
        self.keep_rounds = keep_rounds
        self.sent_weights: dict[int, dict[str, Tensor]] = {}

    @classmethod
    def from_experiment(cls, experiment: Namespace) -> ObservingFedAvg:
        """The strategy of an instantiated experiment (:func:`~ppp_lightning.federated.config.instantiate`):
        its ``federation`` counts and the server's ``logger``. Subclasses with more settings override it.
        """
        settings = experiment.federation
        return cls(settings.clients_per_round, settings.evaluate_clients, experiment.logger)

    def on_client_update(self, update: ClientUpdate) -> None:
        """Called once for every successful training reply, before aggregation; does nothing here.

        Args:
            update: the round, the client's node and partition, the global weights it was sent,
                the weights it returned, its number of examples and its metrics.
        """

    @override
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self.sent_weights[server_round] = dict(arrays.to_torch_state_dict())
        if self.keep_rounds is not None:
            for old in sorted(self.sent_weights)[: -self.keep_rounds]:
                del self.sent_weights[old]
        return super().configure_train(server_round, arrays, config, grid)

    @override
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[Optional[ArrayRecord], Optional[MetricRecord]]:
        replies = list(replies)
        for reply in replies:
            if reply.has_content():
                self.on_client_update(self._client_update(server_round, reply))
        arrays, metrics = super().aggregate_train(server_round, replies)
        self._log(server_round, metrics)
        return arrays, metrics

    @override
    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> Optional[MetricRecord]:
        metrics = super().aggregate_evaluate(server_round, replies)
        self._log(server_round, metrics)
        return metrics

    def _client_update(self, server_round: int, reply: Message) -> ClientUpdate:
        metrics = dict(reply.content[METRICS])
        client = reply.content[CLIENT]
        return ClientUpdate(
            server_round=server_round,
            node_id=reply.metadata.src_node_id,
            partition_id=int(client[PARTITION_ID]),
            global_weights=self.sent_weights[server_round],
            client_weights=dict(reply.content[ARRAYS].to_torch_state_dict()),
            num_examples=int(metrics.pop(NUM_EXAMPLES)),
            metrics=metrics,
            truth=decode_batch(client[TRUTH]) if TRUTH in client else None,
        )

    def _log(self, server_round: int, metrics: Optional[MetricRecord]) -> None:
        if self.logger is not None and metrics:
            self.logger.log_metrics(dict(metrics), step=server_round)
