"""The honest-but-curious server: FedAvg that inverts chosen client updates and logs the reconstructions."""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

from jsonargparse import Namespace
from pytorch_lightning.loggers import Logger
from torch import Tensor, nn
from typing_extensions import override

from ppp_lightning.assessment.assess import assess
from ppp_lightning.assessment.metrics import ReconstructionMetrics, match_reconstructions
from ppp_lightning.assessment.record import Convergence
from ppp_lightning.assessment.reidentification import POOL_SIZE, Reidentifier
from ppp_lightning.assessment.reporting import Reporter
from ppp_lightning.defenses.precode import PRECODE
from ppp_lightning.federated.server_attack import ServerAttack
from ppp_lightning.federated.strategy import ObservingFedAvg
from ppp_lightning.federated.update import ClientUpdate
from ppp_lightning.lightning.logger_sinks import run_directory, sinks_for

__all__ = ["AttackingFedAvg"]


class AttackingFedAvg(ObservingFedAvg):
    """FedAvg whose server attacks the updates of the configured clients and rounds.

    For each chosen reply it recovers the FedSGD gradient ``-(w_client - w_global) / lr``, runs
    the configured attack on the model at the global weights it sent (:meth:`ServerAttack.invert`),
    scores the reconstruction against the images the client trained on when the simulation shares
    them (``federation.share_truth``; a real client never does), identifying each victim among
    ``pool_size`` candidates from the federation's training data (itself and images of its class:
    scoring only, the server's attack never sees them), and reports it with a
    :class:`~ppp_lightning.assessment.reporting.Reporter`, as the attack callback does: a PNG sheet (ground
    truth above reconstruction) ``round<r>_client<p>.png`` and one line per attack appended to
    ``metrics.jsonl`` in ``<run dir>/<attack.log_name>`` (the run dir is the W&B run's files folder,
    else ``federation.run_dir``), and to the logger the sheet, a victims table and the scalars
    under ``<attack.log_name>/client<p>/`` with the round as step. :attr:`records` keeps the
    records of this run's attacks.

    **Exactness.** The gradient is exact for one local step of plain SGD (FedSGD). With several
    local steps (or momentum, weight decay) the update is a sum of gradients at different weights
    on different batches: the attack inverts it as one batch's gradient at the global weights,
    which is only an approximation, and each reconstruction is scored against the closest distinct
    image among all the client trained on that round (the best case for the attacker).

    Args:
        clients_per_round: clients sampled for training each round.
        evaluate_clients: clients sampled to evaluate; ``None`` for ``clients_per_round``.
        logger: a Lightning logger; ``None`` for none (files are still written).
        attack: what to attack and how.
        model: the federation's model (any instance; the server knows the config it ships).
        lr: the clients' learning rate.
        batch_size: the clients' batch size (images per reconstruction unless ``attack.num_images``).
        image_shape: ``(C, H, W)`` of the images.
        mean: the data's normalisation mean.
        std: the data's normalisation standard deviation.
        run_dir: the federation's run directory.
        exact: whether the clients run FedSGD (one step of plain SGD), for the records.
        keep_rounds: how many of the latest rounds :attr:`sent_weights` keeps.
        one_channel: the data has one true channel (correlations on the channel mean).
        candidates: the federation's training set, items ``(normalised image, label)``, to draw each
            victim's candidates from (``None``: identification is not scored).
        pool_size: ``K``, each victim's candidates (chance ``1/K``).

    Raises:
        ValueError: if a count is out of range.
    """

    def __init__(
        self,
        clients_per_round: int,
        evaluate_clients: Optional[int],
        logger: Optional[Logger],
        attack: ServerAttack,
        model: nn.Module,
        lr: float,
        batch_size: int,
        image_shape: Sequence[int],
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        run_dir: str = "runs/federated",
        exact: bool = True,
        keep_rounds: Optional[int] = 1,
        one_channel: bool = False,
        candidates: Optional[Any] = None,
        pool_size: int = POOL_SIZE,
    ) -> None:
        super().__init__(clients_per_round, evaluate_clients, logger, keep_rounds)
        self.attack = attack
        self.model = model
        self.lr = lr
        self.shape = (attack.num_images or batch_size, *image_shape)
        self.mean, self.std = tuple(mean), tuple(std)
        rule = attack.success_metric, attack.success_threshold
        self.metrics = ReconstructionMetrics(self.mean, self.std, *rule, one_channel=one_channel)
        self.reidentifier = None if candidates is None else Reidentifier(candidates, mean, std, one_channel, pool_size)
        self.run_dir = Path(run_dir)
        self.exact = exact
        self.records: list[dict[str, Any]] = []

    @classmethod
    @override
    def from_experiment(cls, experiment: Namespace) -> AttackingFedAvg:
        """The attacking strategy of an instantiated experiment with an ``attack`` section.

        The learning rate, optimizer and image shape come from the model's hyperparameters
        (``lr``, ``optimizer``, ``input_shape``; the data's ``input_shape`` otherwise), the batch
        size and normalisation from the datamodule.

        Raises:
            ValueError: if the experiment has no ``attack``, the model no ``lr`` or image shape, or
                the labels are to be known but the clients share no ground truth.
        """
        attack, settings, model, data = experiment.attack, experiment.federation, experiment.model, experiment.data
        hparams = dict(getattr(model, "hparams", {}))
        shape = hparams.get("input_shape", getattr(data, "input_shape", None))
        if attack is None or "lr" not in hparams or shape is None or not hasattr(data, "batch_size"):
            raise ValueError(
                f"AttackingFedAvg needs an 'attack' section (got {attack}), a model with 'lr' and 'input_shape' "
                f"hyperparameters (got {sorted(hparams)}) and a datamodule with a batch_size"
            )
        if attack.known_labels and not settings.share_truth:
            raise ValueError(
                "attack.known_labels=true takes the labels from the simulation's ground truth: set "
                "federation.share_truth: true, or attack.known_labels: false to recover them"
            )
        data.prepare_data()
        data.setup("fit")  # the candidates to score identification against
        return cls(
            settings.clients_per_round,
            settings.evaluate_clients,
            experiment.logger,
            attack,
            model,
            lr=float(hparams["lr"]),
            batch_size=data.batch_size,
            image_shape=tuple(shape),
            mean=getattr(data, "mean", (0.0,)),
            std=getattr(data, "std", (1.0,)),
            run_dir=settings.run_dir,
            exact=settings.local_steps == 1 and hparams.get("optimizer") == "sgd",
            one_channel=getattr(data, "one_channel", False),
            candidates=getattr(data, "train_set", None),
        )

    @override
    def on_client_update(self, update: ClientUpdate) -> None:
        """Attack the update if its round and client are configured, score it and report it."""
        if not self.attack.targets(update.server_round, update.partition_id):
            return
        truth = update.truth
        known = truth[1][: self.shape[0]] if self.attack.known_labels and truth is not None else None
        started = time.perf_counter()
        result = self.attack.invert(
            self.model, update.global_weights, update.client_weights, self.lr, self.shape, self.mean, self.std, known
        )
        record: dict[str, Any] = {
            "round": update.server_round,
            "partition_id": update.partition_id,
            "node_id": update.node_id,
            "attack": self.attack.spec.name,
            "settings": dict(self.attack.spec.settings),
            "defense": {"precode": [m.extra_repr() for m in self.model.modules() if isinstance(m, PRECODE)]},
            "exact_gradient": self.exact,
            "labels": None,
            "attack_labels": result.labels.tolist(),
            "matching_loss": result.loss,
            "seconds": time.perf_counter() - started,
        }
        reconstruction, victims = result.images, None
        if truth is None:
            warnings.warn("no ground truth in the reply (federation.share_truth: false): the reconstruction is not scored")
        else:
            victims, labels = self._victims(reconstruction, *truth)
            # no control: the clients' noise is theirs
            assessed = assess(self.metrics, reconstruction, victims, labels, None, self.reidentifier,
                              convergence=Convergence.of([result]))  # fmt: skip
            reconstruction = assessed.reconstructions
            record = assessed.record({**record, "labels": labels.tolist()}).to_dict()
        written = self.reporter.report(
            f"round{update.server_round:04d}_client{update.partition_id}.png",
            victims,
            reconstruction,
            record,
            step=update.server_round,
            prefix=f"{self.attack.log_name}/client{update.partition_id}",
        )
        self.records.append(written)

    @cached_property
    def reporter(self) -> Reporter:
        """The reporter of :attr:`attack`'s ``log_name``, made at the first attack (it may start the W&B run)."""
        loggers = [] if self.logger is None else [self.logger]
        folder = run_directory(loggers, self.run_dir) / self.attack.log_name
        return Reporter(folder, self.attack.log_name, self.mean, self.std, sinks_for(loggers))

    @staticmethod
    def _victims(reconstruction: Tensor, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The trained-on images to score against: all of them for one batch, else the closest distinct ones.

        Raises:
            ValueError: if the client trained on fewer images than were reconstructed.
        """
        if len(images) < len(reconstruction):
            raise ValueError(
                f"the client trained on {len(images)} images but {len(reconstruction)} were reconstructed; "
                "set attack.num_images to at most the client's batch"
            )
        if len(images) == len(reconstruction):
            return images, labels
        chosen = match_reconstructions(images, reconstruction.to(images))  # images[chosen[i]] ~ reconstruction[i]
        return images[chosen], labels[chosen]
