"""The honest-but-curious server's attack, without Flower: what to attack, and the inversion of one update.

The ``attack`` section of the federated YAML is a :class:`ServerAttack`; the attacking strategy
(:mod:`ppp_lightning.federated.attacking`) is a thin Flower shell around :meth:`ServerAttack.invert`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ppp_lightning.assessment.metrics import LEGIBLE_NCC, METRICS
from ppp_lightning.attacks import AttackResult, AttackSpec
from ppp_lightning.federated.core import shared_gradient

__all__ = ["ServerAttack"]


@dataclass
class ServerAttack:
    """Which client updates the server attacks, and how (the ``attack`` section of the YAML).

    Args:
        name: a registered attack (:data:`~ppp_lightning.attacks.ATTACKS`), e.g. ``inverting`` or ``analytic``.
        kwargs: the attack's options (e.g. ``{iterations: 20}``); the data's ``mean``/``std`` are
            added for attacks that need them (the image box of Inverting Gradients).
        rounds: the rounds to attack (from 1); ``None`` for every round.
        clients: the partition ids of the clients to attack; ``None`` for every client.
        num_images: images per reconstruction; ``None`` for the data's ``batch_size`` (a FedSGD
            client's batch).
        known_labels: give the attack the client's labels (the server knows the client's label set;
            needs the simulation's ground truth, ``federation.share_truth``); ``False`` recovers
            them from the gradient.
        success_metric: metric that decides success: ``psnr``, ``ssim``, ``mse`` or ``ncc``.
        success_threshold: the value at which a reconstruction succeeds (default: the calibrated ``ncc`` rule).
        log_name: folder in the run directory for the PNGs and ``metrics.jsonl``, and prefix of the
            logged keys (``<log_name>/client<partition id>/...``), as the attack callback's ``name``.

    Attributes:
        spec: the :class:`~ppp_lightning.attacks.AttackSpec` of ``name`` and ``kwargs``, which
            validates them and builds the attack.

    Raises:
        ValueError: on an unknown attack, an option it would ignore or a value it refuses (from
            :class:`~ppp_lightning.attacks.AttackSpec`), an unknown metric, or a bad round,
            client or image count.
    """

    name: str = "inverting"
    kwargs: dict[str, Any] = field(default_factory=dict)
    rounds: Optional[list[int]] = field(default_factory=lambda: [1])
    clients: Optional[list[int]] = field(default_factory=lambda: [0])
    num_images: Optional[int] = None
    known_labels: bool = True
    success_metric: str = "ncc"
    success_threshold: float = LEGIBLE_NCC
    log_name: str = "attack"
    spec: AttackSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.spec = AttackSpec(self.name, self.kwargs)
        self.spec.refuse_candidates("the Flower server's attack")
        if self.success_metric not in METRICS:
            raise ValueError(f"attack.success_metric={self.success_metric!r}; allowed: {', '.join(METRICS)}")
        if self.rounds is not None and min(self.rounds, default=1) < 1:
            raise ValueError(f"attack.rounds={self.rounds}; allowed: None or rounds >= 1")
        if self.clients is not None and min(self.clients, default=0) < 0:
            raise ValueError(f"attack.clients={self.clients}; allowed: None or partition ids >= 0")
        if self.num_images is not None and self.num_images < 1:
            raise ValueError(f"attack.num_images={self.num_images}; allowed: None or >= 1")

    def targets(self, server_round: int, partition_id: int) -> bool:
        """Whether the update of client ``partition_id`` in ``server_round`` is attacked."""
        return (self.rounds is None or server_round in self.rounds) and (
            self.clients is None or partition_id in self.clients
        )

    def invert(
        self,
        model: nn.Module,
        global_weights: Mapping[str, Tensor],
        client_weights: Mapping[str, Tensor],
        lr: float,
        shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        labels: Optional[Tensor] = None,
    ) -> AttackResult:
        """Invert one client update as a FedSGD gradient.

        The shared gradient is ``-(w_client - w_global) / lr``
        (:func:`~ppp_lightning.federated.core.shared_gradient`) on the model's trainable
        parameters; the attack runs on a copy of ``model`` holding ``global_weights``, in training
        mode (PRECODE samples as in the client's step). Exact for one step of plain SGD; for
        several local steps the update is a sum of gradients taken at different weights and on
        different batches, and this inversion is only an approximation.

        Args:
            model: the server's model (any instance of the federation's model; left untouched).
            global_weights: the ``state_dict`` the server sent this round.
            client_weights: the ``state_dict`` the client returned.
            lr: the client's learning rate.
            shape: ``(N, C, H, W)`` of the batch to reconstruct.
            mean: the data's normalisation mean.
            std: the data's normalisation standard deviation.
            labels: ``(N,)`` the client's labels, or ``None`` to let the attack recover them.

        Returns:
            The attack's result (normalised images, labels, matching loss).
        """
        attacked = copy.deepcopy(model).train()
        attacked.load_state_dict(global_weights)
        trainable = {name for name, p in attacked.named_parameters() if p.requires_grad}
        gradient = {k: g for k, g in shared_gradient(global_weights, client_weights, lr).items() if k in trainable}
        with torch.random.fork_rng(), torch.enable_grad():
            return self.spec.build(mean, std)(attacked, gradient, labels, tuple(shape))
