"""Feature inversion: recover the features entering PRECODE analytically, then invert the feature extractor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ppp_lightning.attacks.inverting import InvertingGradients
from ppp_lightning.attacks.layer_inputs import bottleneck_input
from ppp_lightning.attacks.matching import Evaluate, Problems, detached_parameters, known_labels
from ppp_lightning.attacks.optimiser import Variables
from ppp_lightning.attacks.per_sample import Targets
from ppp_lightning.attacks.registry import check_images, register
from ppp_lightning.defenses.precode import PRECODE

__all__ = ["FeatureInversion", "bottleneck_features"]

FEATURES = "features"  # the one target "gradient" of a feature-inversion problem


@register("feature_inversion", "recovers the features entering PRECODE, then an image with them", one_image=True,
          needs_precode=True)  # fmt: skip
class FeatureInversion(InvertingGradients):
    """Recover the features entering the first PRECODE, then find an image with those features.

    PRECODE's encoder is a ``Linear`` on the features, before any sampling, so its shared gradient
    gives them back (:func:`~ppp_lightning.attacks.layer_inputs.bottleneck_input`, the noise-robust
    rank-one estimate). The image is then optimised so that the model's features on it (the input
    of the first PRECODE to run, captured by a forward hook) match them, with Inverting
    Gradients' machinery: ``1 - |cos(features, recovered)|`` (blind to the scale and sign errors
    a noisy estimate can carry) ``+ tv_weight * TV(images)``, signed Adam with per-problem
    learning-rate decay and stopping, the pixel box, and the best iterate returned. The features
    of all problems come from one forward pass, which is exact for models whose features treat
    samples independently (no BatchNorm in training mode).

    Args:
        iterations: optimisation steps.
        lr: Adam's learning rate.
        tv_weight: weight of the total-variation prior.
        mean: the data's per-channel normalisation mean.
        std: the data's per-channel normalisation standard deviation.
        restarts: independent initialisations per victim; the lowest objective wins.
        tol: relative improvement that resets a problem's stall count ...
        patience: ... within this many steps (``0``: run the whole budget).
        tie_channels: optimise one channel shared by all (e.g. MNIST repeated to three).
        threads: torch's CPU threads during the attack; ``None`` leaves them.
        progress: show a progress bar.
        seed: seed of the random initialisation.

    Raises:
        ValueError: as :class:`~ppp_lightning.attacks.inverting.InvertingGradients` on a bad value.
    """

    def __init__(
        self,
        iterations: int = 1000,
        lr: float = 0.1,
        tv_weight: float = 1e-2,
        mean: Sequence[float] = (0.0,),
        std: Sequence[float] = (1.0,),
        restarts: int = 1,
        tol: float = 1e-3,
        patience: int = 100,
        tie_channels: bool = False,
        threads: Optional[int] = 1,
        progress: bool = True,
        seed: int = 0,
    ) -> None:
        # No gradient is matched, so the gradient selection and its execution choice are not options.
        super().__init__(
            iterations,
            lr,
            tv_weight,
            mean,
            std,
            restarts=restarts,
            tol=tol,
            patience=patience,
            tie_channels=tie_channels,
            threads=threads,
            progress=progress,
            seed=seed,
        )

    def problems(
        self,
        model: nn.Module,
        gradients: Sequence[Mapping[str, Tensor]],
        labels: Optional[Sequence[Optional[Tensor]]],
        shape: tuple[int, ...],
    ) -> Problems:
        """Every victim's recovered features as the target (labels as the engine recovers them).

        Raises:
            ValueError: if the batch is not one image, the model runs no PRECODE, its encoder's
                gradients are not shared, or labels must be recovered and cannot be.
        """
        check_images(self.capabilities, shape)
        example = torch.zeros(shape, device=next(model.parameters()).device)
        recovered = torch.cat([bottleneck_input(model, shared, example) for shared in gradients]).to(example)
        known = known_labels(model, gradients, labels, example)
        return Problems(
            model, detached_parameters(model), [], Targets({FEATURES: recovered}), known, self.restarts, shape
        )

    def evaluator(self, problems: Problems, variables: Variables) -> Evaluate:
        """The feature distance and TV of the active problems, all in one forward pass."""

        def evaluate(current: Variables, active: Tensor) -> tuple[Variables, Tensor]:
            leaves = {name: tensor.detach().requires_grad_() for name, tensor in current.items()}
            images = self.images(problems, leaves).flatten(0, 1)
            features = bottleneck_features(problems.model, problems.params, images)
            recovered = problems.targets_for(active)[FEATURES]
            losses = 1 - F.cosine_similarity(features, recovered, dim=1, eps=1e-12).abs() + self.regulariser(leaves)
            grads = torch.autograd.grad(losses.sum(), list(leaves.values()))
            return dict(zip(leaves, grads)), losses.detach()

        return evaluate


class _Reached(Exception):
    """Raised by the hook on the first PRECODE: its input is all the forward pass is run for."""

    def __init__(self, features: Tensor) -> None:
        super().__init__()
        self.features = features


def bottleneck_features(model: nn.Module, params: Mapping[str, Tensor], images: Tensor) -> Tensor:
    """The input of the first PRECODE to run on ``images``, flattened to ``(n, d)``, differentiable.

    The forward pass stops at that PRECODE, so nothing draws noise and the head is never run.

    Args:
        model: any model with a PRECODE module.
        params: the parameters to run it with, by name (e.g. detached ones).
        images: ``(n, C, H, W)``.

    Raises:
        ValueError: if no PRECODE runs in the forward pass.
    """

    def hook(module: nn.Module, args: tuple) -> None:
        raise _Reached(args[0].flatten(1))

    with ExitStack() as stack:
        for module in model.modules():
            if isinstance(module, PRECODE):
                stack.callback(module.register_forward_pre_hook(hook).remove)
        try:
            functional_call(model, dict(params), (images,))
        except _Reached as reached:
            return reached.features
    raise ValueError(f"{type(model).__name__} runs no PRECODE module: there are no bottleneck features to match")
