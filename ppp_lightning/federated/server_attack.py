"""The honest-but-curious server's attack, without Flower: what to attack, and the inversion of one update.

The ``attack`` section of the federated YAML is a :class:`ServerAttack`; the attacking strategy
(:mod:`ppp_lightning.federated.attacking`) is a thin Flower shell around :meth:`ServerAttack.invert`.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ppp_lightning.attacks import ATTACKS, AttackResult, build_attack
from ppp_lightning.federated.core import shared_gradient
from ppp_lightning.metrics import METRICS

__all__ = ["ServerAttack"]


@dataclass
class ServerAttack:
    """Which client updates the server attacks, and how (the ``attack`` section of the YAML).

    Args:
        name: a registered attack: ``inverting``, ``dlg``, ``adaptive`` or ``analytic``.
        kwargs: the attack's init arguments (e.g. ``{iterations: 20}``); ``mean``/``std`` of the
            data are added for attacks that take them (the image box of Inverting Gradients).
        rounds: the rounds to attack (from 1); ``None`` for every round.
        clients: the partition ids of the clients to attack; ``None`` for every client.
        num_images: images per reconstruction; ``None`` for the data's ``batch_size`` (a FedSGD
            client's batch).
        known_labels: give the attack the client's labels (the server knows the client's label set;
            needs the simulation's ground truth, ``federation.share_truth``); ``False`` recovers
            them from the gradient.
        success_metric: metric that decides success: ``psnr``, ``ssim``, ``mse`` or ``ncc``.
        success_threshold: the value at which a reconstruction succeeds.
        log_name: folder in the run directory for the PNGs and ``metrics.json``, and prefix of the
            logged keys (``<log_name>/client<partition id>/...``), as the attack callback's ``name``.

    Raises:
        ValueError: on an unknown attack or metric, a bad round, client or image count, or
            attack arguments the attack refuses.
    """

    name: str = "inverting"
    kwargs: dict[str, Any] = field(default_factory=dict)
    rounds: Optional[list[int]] = field(default_factory=lambda: [1])
    clients: Optional[list[int]] = field(default_factory=lambda: [0])
    num_images: Optional[int] = None
    known_labels: bool = True
    success_metric: str = "ncc"
    success_threshold: float = 0.85
    log_name: str = "attack"

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ValueError(f"attack.name={self.name!r}; allowed: {', '.join(ATTACKS)}")
        if self.success_metric not in METRICS:
            raise ValueError(f"attack.success_metric={self.success_metric!r}; allowed: {', '.join(METRICS)}")
        if self.rounds is not None and min(self.rounds, default=1) < 1:
            raise ValueError(f"attack.rounds={self.rounds}; allowed: None or rounds >= 1")
        if self.clients is not None and min(self.clients, default=0) < 0:
            raise ValueError(f"attack.clients={self.clients}; allowed: None or partition ids >= 0")
        if self.num_images is not None and self.num_images < 1:
            raise ValueError(f"attack.num_images={self.num_images}; allowed: None or >= 1")
        self.build((0.0,), (1.0,))  # refuse bad attack arguments when the YAML is read

    def targets(self, server_round: int, partition_id: int) -> bool:
        """Whether the update of client ``partition_id`` in ``server_round`` is attacked."""
        return (self.rounds is None or server_round in self.rounds) and (
            self.clients is None or partition_id in self.clients
        )

    def build(self, mean: Sequence[float], std: Sequence[float]) -> Any:
        """The configured attack, with the data's normalisation if it takes one.

        Args:
            mean: the data's normalisation mean.
            std: the data's normalisation standard deviation.
        """
        accepted = inspect.signature(ATTACKS[self.name]).parameters
        box = {"mean": tuple(mean), "std": tuple(std)} if "mean" in accepted and "std" in accepted else {}
        return build_attack(self.name, **{**box, **self.kwargs})

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
            return self.build(mean, std)(attacked, gradient, labels, tuple(shape))
