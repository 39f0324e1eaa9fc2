"""The adaptive attack on PRECODE: optimise the bottleneck's noise sample with the image."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Optional

import torch
from torch import Tensor, nn

from ppp_lightning.attacks.inverting import InvertingGradients
from ppp_lightning.attacks.matching import Problems
from ppp_lightning.attacks.optimiser import Variables
from ppp_lightning.attacks.registry import register
from ppp_lightning.defenses.precode import PRECODE

__all__ = ["AdaptiveAttack", "sampling_bottlenecks"]

PREFIX = "eps:"


@register("adaptive", "optimises PRECODE's noise sample with the image", needs_precode=True)
class AdaptiveAttack(InvertingGradients):
    """Inverting Gradients that also optimises the noise ``eps`` of every sampling PRECODE.

    PRECODE makes the shared gradient a function of the client's secret noise sample. Treating
    ``eps`` (``(N, latent_dim)`` per PRECODE, initialised from ``N(0, I)``) as a variable, as the
    Dropout Inversion Attack treats dropout masks, makes the whole gradient a deterministic
    function of what is optimised. ``eps`` reaches ``PRECODE.forward(x, eps)`` through a forward
    pre-hook that lives only while the dummy forward pass runs. On a model whose PRECODE does not
    sample (the positive control of PRECODE: its sampling switched off) there is no ``eps`` to
    optimise and the attack is Inverting Gradients.

    Args:
        **kwargs: arguments of :class:`~ppp_lightning.attacks.inverting.InvertingGradients`.
    """

    def initial_variables(
        self, problems: Problems, shape: tuple[int, ...], init: Optional[Tensor], generator: torch.Generator
    ) -> Variables:
        variables = super().initial_variables(problems, shape, init, generator)
        for name, module in sampling_bottlenecks(problems.model).items():
            size = (self.restarts, shape[0], module.latent_dim)
            eps = torch.randn(size, generator=generator, device=problems.labels.device)
            variables[PREFIX + name] = self.per_problem(problems, eps)
        return variables

    def logits(self, problems: Problems, params: dict[str, Tensor], variables: Variables) -> Tensor:
        with _injected(problems.model, {k[len(PREFIX) :]: v for k, v in variables.items() if k.startswith(PREFIX)}):
            return super().logits(problems, params, variables)


def sampling_bottlenecks(model: nn.Module) -> dict[str, PRECODE]:
    """The PRECODE modules of ``model`` that sample in its current mode, by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, PRECODE) and m.samples}


@contextmanager
def _injected(model: nn.Module, eps: dict[str, Tensor]) -> Iterator[None]:
    """Pass ``eps[name]`` to the PRECODE module ``name`` in every forward call of the context."""
    with ExitStack() as stack:
        for name, sample in eps.items():

            def hook(module: nn.Module, args: tuple, kwargs: dict, sample: Tensor = sample) -> tuple[tuple, dict]:
                return args, {**kwargs, "eps": sample}

            stack.callback(model.get_submodule(name).register_forward_pre_hook(hook, with_kwargs=True).remove)
        yield
