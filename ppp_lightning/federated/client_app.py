"""The Flower ClientApp: each SuperNode trains the server's model on its own partition with Lightning.

A node finds its partition in its node config (``partition-id`` and ``num-partitions``, set by the
simulation engine, or by ``flower-supernode --node-config "partition-id=0 num-partitions=2"``).
"""

from __future__ import annotations

from jsonargparse import Namespace
from torch import Tensor

from ppp_lightning.federated._flower import (
    ARRAYS,
    CLIENT,
    CONFIG,
    EXPERIMENT,
    METRICS,
    NUM_EXAMPLES,
    NUM_PARTITIONS,
    PARTITION_ID,
    TRUTH,
    ArrayRecord,
    ClientApp,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from ppp_lightning.federated.config import load_config
from ppp_lightning.federated.core import encode_batch
from ppp_lightning.federated.local_training import evaluate_locally, train_locally

__all__ = ["app"]

app = ClientApp()


@app.train()
def train(message: Message, context: Context) -> Message:
    """Train the received global model locally and reply with the weights, example count and metrics.

    With ``federation.share_truth`` (simulations only) the reply also carries the images and labels
    the client trained on (``client.truth``, see :func:`~ppp_lightning.federated.core.encode_batch`).
    """
    config, weights, server_round = _read(message)
    partition_id, num_partitions = _partition(context)
    trained, num_examples, metrics, batches = train_locally(config, weights, partition_id, num_partitions, server_round)
    client = {PARTITION_ID: partition_id, **({} if batches is None else {TRUTH: encode_batch(*batches)})}
    content = RecordDict(
        {
            ARRAYS: ArrayRecord.from_torch_state_dict(trained),
            METRICS: MetricRecord({**metrics, NUM_EXAMPLES: num_examples}),
            CLIENT: ConfigRecord(client),
        }
    )
    return Message(content=content, reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Validate the received global model on this node's validation partition."""
    config, weights, server_round = _read(message)
    num_examples, metrics = evaluate_locally(config, weights, *_partition(context), server_round)
    content = RecordDict({METRICS: MetricRecord({**metrics, NUM_EXAMPLES: num_examples})})
    return Message(content=content, reply_to=message)


def _read(message: Message) -> tuple[Namespace, dict[str, Tensor], int]:
    config = message.content[CONFIG]
    weights = message.content[ARRAYS].to_torch_state_dict()
    return load_config(str(config[EXPERIMENT])), weights, int(config["server-round"])


def _partition(context: Context) -> tuple[int, int]:
    try:
        return int(context.node_config[PARTITION_ID]), int(context.node_config[NUM_PARTITIONS])
    except KeyError as error:
        raise ValueError(
            f"node config {dict(context.node_config)} lacks {error}; start the SuperNode with "
            f'--node-config "{PARTITION_ID}=0 {NUM_PARTITIONS}=2"'
        ) from error
