"""Inverting Gradients (Geiping et al. 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ppp_lightning.attacks.matching import Evaluate, GradientMatchingAttack
from ppp_lightning.attacks.optimiser import Tracker, Variables, signed_adam
from ppp_lightning.attacks.per_sample import ProblemGradients, Targets
from ppp_lightning.attacks.registry import register
from ppp_lightning.attacks.targets import TARGETS
from ppp_lightning.validation import check_number

__all__ = ["InvertingGradients"]


@register("inverting", "Inverting Gradients: cosine gradient matching with total variation", targets=TARGETS)
class InvertingGradients(GradientMatchingAttack):
    """Inverting Gradients: cosine distance + total variation, Adam on signed gradients.

    Minimises ``1 - cos(dummy gradient, shared gradient)`` (one cosine over all selected tensors
    jointly) ``+ tv_weight * TV(images)``, where TV is the anisotropic total variation per
    pixel value. Adam steps on the sign of the gradient, the learning rate is divided by 10 at 3/8,
    5/8 and 7/8 of the budget or earlier when a problem stalls (then it stops; see ``tol`` and
    ``patience``), and after every step the images are clamped to the box of valid pixels,
    ``[(0 - mean) / std, (1 - mean) / std]`` per channel. The best iterate is returned.

    Args:
        iterations: the budget of optimisation steps per problem (paper: 4,800 on CIFAR-10). The
            defaults (1,000 steps, lr 0.1, TV 1e-2, stopping after 100 steps without a 0.1%
            improvement) reconstruct 16/16 training victims of the undefended cnn and mlp at
            initialisation and after one epoch, stopping after a median 510-774 steps
            (``benchmarks/results/attack_tuning.md``).
        lr: Adam's learning rate (paper: 0.1).
        tv_weight: weight of the total-variation prior (paper: 1e-4 to 1e-1 depending on the data).
        mean: the data's per-channel normalisation mean (one value for all channels allowed).
        std: the data's per-channel normalisation standard deviation.
        **kwargs: ``restarts``, ``include``, ``ignore``, ``target``, ``batched``, ``tol``,
            ``patience``, ``tie_channels``, ``threads``, ``progress``, ``seed``, ``initialisation`` of
            :class:`~ppp_lightning.attacks.matching.GradientMatchingAttack`.

    Raises:
        ValueError: if ``tv_weight`` is negative, a ``std`` is not positive, channels are tied
            under different per-channel normalisations, or the base class rejects an argument.
    """

    def __init__(
        self,
        iterations: int = 1000,
        lr: float = 0.1,
        tv_weight: float = 1e-2,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        **kwargs: Any,
    ) -> None:
        super().__init__(iterations, lr, **kwargs)
        check_number("tv_weight", tv_weight, minimum=0)
        for option, values in (("mean", mean), ("std", std)):
            for value in values:
                check_number(option, value, minimum=0 if option == "std" else None, exclusive_minimum=True)
        if self.tie_channels and (len(set(mean)) > 1 or len(set(std)) > 1):
            raise ValueError(f"tie_channels=True needs one normalisation for all channels; got mean={mean}, std={std}")
        self.tv_weight = tv_weight
        self.mean = tuple(mean)
        self.std = tuple(std)

    def distance(self, dummy: ProblemGradients, targets: Targets) -> Tensor:
        target_norm = targets.square_norms.index_select(0, dummy.victims).sqrt()
        return 1 - dummy.dot(targets) / (dummy.square_norm().sqrt() * target_norm).clamp_min(1e-12)

    def regulariser(self, variables: Variables) -> Tensor:
        images = variables["images"]  # (P, N, C, H, W); anisotropic TV summed per problem
        rows = (images[..., 1:, :] - images[..., :-1, :]).abs().sum((1, 2, 3, 4))
        columns = (images[..., 1:] - images[..., :-1]).abs().sum((1, 2, 3, 4))
        return self.tv_weight * (rows + columns) / images[0].numel()

    def optimise(self, evaluate: Evaluate, variables: Variables) -> Tracker:
        images = variables["images"]
        mean = images.new_tensor(self.mean).view(-1, 1, 1)
        std = images.new_tensor(self.std).view(-1, 1, 1)
        low, high = -mean / std, (1 - mean) / std
        if self.tie_channels:  # one optimised channel; __init__ checked that all channels share the box
            low, high = low[:1], high[:1]

        def project(current: Variables) -> None:
            torch.maximum(current["images"], low, out=current["images"])
            torch.minimum(current["images"], high, out=current["images"])

        with self.iterations_bar(len(images)) as bar:
            return signed_adam(evaluate, variables, self.iterations, self.lr, self.stopping, project, bar)
