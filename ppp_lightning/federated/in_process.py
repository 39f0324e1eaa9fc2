"""A federation in one process: the ServerApp's messages go straight to a ClientApp object.

No Ray, no sockets, no serialisation; clients run one after another in the order of the messages,
and a client's exception propagates instead of becoming an error reply. For tests, debugging and
quick experiments; the simulation and deployment engines run the same apps.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Optional

from ppp_lightning.federated._flower import (
    NUM_PARTITIONS,
    PARTITION_ID,
    SUPERLINK_NODE_ID,
    ClientApp,
    Context,
    Grid,
    Message,
    RecordDict,
    Run,
    TaskIdentity,
    UserConfig,
)

__all__ = ["InProcessGrid"]

_FIRST_NODE_ID = 100  # node ids are arbitrary; the SuperLink's own is 1


class InProcessGrid(Grid):
    """A Flower ``Grid`` whose ``num_nodes`` virtual nodes call ``client_app`` directly.

    Node ``_FIRST_NODE_ID + i`` holds partition ``i`` of ``num_nodes`` (``partition-id`` and
    ``num-partitions`` in its node config, as in the simulation engine).

    Args:
        client_app: the ClientApp every node runs.
        num_nodes: number of virtual nodes.
        run_id: the run's id.

    Raises:
        ValueError: if ``num_nodes`` is not positive.
    """

    def __init__(self, client_app: ClientApp, num_nodes: int, run_id: int = 1) -> None:
        if num_nodes < 1:
            raise ValueError(f"num_nodes={num_nodes}; allowed: >= 1")
        # Messages built by strategies take their run and sender from the process's task identity.
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SUPERLINK_NODE_ID, 1
        self.client_app = client_app
        self._run = Run.create_empty(run_id)
        self._contexts = {
            _FIRST_NODE_ID + i: Context(
                run_id=run_id,
                node_id=_FIRST_NODE_ID + i,
                node_config=UserConfig({PARTITION_ID: i, NUM_PARTITIONS: num_nodes}),
                state=RecordDict(),
                run_config=UserConfig(),
            )
            for i in range(num_nodes)
        }
        self._replies: dict[str, Message] = {}
        self._ids = itertools.count()

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: Optional[float] = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            ids.append(str(next(self._ids)))
            self._replies[ids[-1]] = self.client_app(message, self._contexts[message.metadata.dst_node_id])
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: Optional[float] = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
