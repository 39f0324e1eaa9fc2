"""What the server sees of one client in one round."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor

from ppp_lightning.federated.core import shared_gradient

__all__ = ["ClientUpdate"]


@dataclass(frozen=True)
class ClientUpdate:
    """One client's reply to a training round, next to the global weights it started from.

    Args:
        server_round: the round, from 1.
        node_id: the Flower node that replied.
        partition_id: the client's data partition (as the client reports it).
        global_weights: the ``state_dict`` the server sent this round.
        client_weights: the ``state_dict`` the client returned.
        num_examples: the client's number of training examples.
        metrics: the client's training metrics.
        truth: the images and labels the client trained on this round, in order: the simulation's
            ground truth for scoring attacks (``federation.share_truth``), ``None`` otherwise. No
            attack may use it.
    """

    server_round: int
    node_id: int
    partition_id: int
    global_weights: dict[str, Tensor]
    client_weights: dict[str, Tensor]
    num_examples: int
    metrics: dict[str, float]
    truth: Optional[tuple[Tensor, Tensor]] = None

    def shared_gradient(self, lr: float) -> dict[str, Tensor]:
        """The FedSGD gradient ``-(w_client - w_global) / lr``, by :func:`~.core.shared_gradient`."""
        return shared_gradient(self.global_weights, self.client_weights, lr)
