"""Inverting Gradients (Geiping et al. 2020)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.functional.image import total_variation

from ppp_lightning.attacks.matching import GradientMatchingAttack, Variables
from ppp_lightning.validation import check_number

__all__ = ["InvertingGradients"]

# Geiping et al. divide the learning rate by 10 at 3/8, 5/8 and 7/8 of the iterations.
DECAY_POINTS = (3 / 8, 5 / 8, 7 / 8)


class InvertingGradients(GradientMatchingAttack):
    """Inverting Gradients: cosine distance + total variation, Adam on signed gradients.

    Minimises ``1 - cos(dummy gradient, shared gradient)`` (one cosine over all selected tensors
    jointly) ``+ tv_weight * TV(images)``, where TV is torchmetrics' anisotropic total variation per
    pixel value. Adam steps on the sign of the gradient, the learning rate is divided by 10 at 3/8,
    5/8 and 7/8 of the iterations, and after every step the images are clamped to the box of valid
    pixels, ``[(0 - mean) / std, (1 - mean) / std]`` per channel.

    Args:
        iterations: optimisation steps (paper: 4,800 on CIFAR-10).
        lr: Adam's learning rate (paper: 0.1).
        tv_weight: weight of the total-variation prior (paper: 1e-4 to 1e-1 depending on the data).
        mean: the data's per-channel normalisation mean (one value for all channels allowed).
        std: the data's per-channel normalisation standard deviation.
        **kwargs: ``restarts``, ``include``, ``ignore``, ``target``, ``batched``, ``progress``,
            ``seed`` of :class:`~ppp_lightning.attacks.matching.GradientMatchingAttack`.

    Raises:
        ValueError: if ``tv_weight`` is negative, a ``std`` is not positive or the base class rejects
            an argument.
    """

    def __init__(
        self,
        iterations: int = 500,
        lr: float = 0.1,
        tv_weight: float = 1e-4,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        **kwargs: Any,
    ) -> None:
        super().__init__(iterations, lr, **kwargs)
        check_number("tv_weight", tv_weight, minimum=0)
        for option, values in (("mean", mean), ("std", std)):
            for value in values:
                check_number(option, value, minimum=0 if option == "std" else None, exclusive_minimum=True)
        self.tv_weight = tv_weight
        self.mean = tuple(mean)
        self.std = tuple(std)

    def distance(self, dummy: dict[str, Tensor], target: dict[str, Tensor]) -> Tensor:
        dot = sum((dummy[k] * target[k]).sum() for k in target)
        dummy_norm = sum(dummy[k].square().sum() for k in target).sqrt()
        target_norm = sum(target[k].square().sum() for k in target).sqrt()
        return 1 - dot / (dummy_norm * target_norm).clamp_min(1e-12)

    def regulariser(self, variables: Variables) -> Tensor:
        images = variables["images"]
        return self.tv_weight * total_variation(images) / images.numel()

    def optimise(self, objective: Callable[[Variables], Tensor], variables: Variables) -> Tensor:
        step = self.step_function(objective)
        optimizer = torch.optim.Adam(list(variables.values()), lr=self.lr)
        milestones = [int(point * self.iterations) for point in DECAY_POINTS]
        scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
        low, high = self._box(variables["images"])
        bar = self.iterations_bar()
        for iteration in bar:
            grads, losses = step(variables)
            for name, tensor in variables.items():
                tensor.grad = grads[name].sign()
            optimizer.step()
            scheduler.step()
            torch.maximum(variables["images"], low, out=variables["images"])
            torch.minimum(variables["images"], high, out=variables["images"])
            if iteration % 10 == 0:
                bar.set_postfix(loss=float(losses.min()))
        return step(variables)[1]

    def _box(self, images: Tensor) -> tuple[Tensor, Tensor]:
        mean = images.new_tensor(self.mean).view(-1, 1, 1)
        std = images.new_tensor(self.std).view(-1, 1, 1)
        return -mean / std, (1 - mean) / std
