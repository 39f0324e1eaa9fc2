"""The one door to Flower, an optional dependency: a clear message when it is missing.

Flower reads its telemetry switch when imported: entry points call
:func:`~ppp_lightning.federated.environment.quiet_flower` before they import this module.
"""

try:
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict, UserConfig
    from flwr.clientapp import ClientApp
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg, Result
    from flwr.supercore.run import Run
    from flwr.supercore.task_identity import TaskIdentity
except ImportError as error:
    raise ImportError(
        f"ppp_lightning.federated needs Flower ({error}); install it with: pip install 'ppp-lightning[federated]'"
    ) from error

__all__ = [
    "ARRAYS",
    "CLIENT",
    "CONFIG",
    "EXPERIMENT",
    "METRICS",
    "NUM_EXAMPLES",
    "NUM_PARTITIONS",
    "PARTITION_ID",
    "SUPERLINK_NODE_ID",
    "TRUTH",
    "ArrayRecord",
    "ClientApp",
    "ConfigRecord",
    "Context",
    "FedAvg",
    "Grid",
    "Message",
    "MetricRecord",
    "RecordDict",
    "Result",
    "Run",
    "ServerApp",
    "TaskIdentity",
    "UserConfig",
]

# The layout of our messages. Server to client: FedAvg's "arrays" (global weights) and "config"
# (with the experiment's YAML under EXPERIMENT). Client to server: the weights under ARRAYS, the
# metrics under METRICS (with FedAvg's weighting key NUM_EXAMPLES) and the partition under CLIENT
# (with, in simulations with ``federation.share_truth``, the batches it trained on under TRUTH).
ARRAYS, METRICS, CONFIG, CLIENT, TRUTH = "arrays", "metrics", "config", "client", "truth"
EXPERIMENT, NUM_EXAMPLES, PARTITION_ID, NUM_PARTITIONS = "experiment", "num-examples", "partition-id", "num-partitions"
