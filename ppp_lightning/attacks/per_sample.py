"""Per-problem parameter gradients from one stacked forward pass, differentiable twice.

Many independent problems (victims x restarts) share the model's parameters; only their
gradients differ. Running all their images through the model as one batch and taking each
layer's input ``a`` and output gradient ``delta`` gives every problem's weight gradient as
``G_p = sum_m delta_pm a_pm^T`` (over the problem's images and, for convolutions, positions).
The distances need only inner products of these gradients, which come without forming ``G_p``:
``<G_p, T> = sum_m delta_pm . (T a_pm)`` and ``|G_p|^2 = sum_mk (delta_pm . delta_pk)(a_pm . a_pk)``.
A weight gradient is kept *factored* this way when its Gram matrices are smaller than the
gradient itself (an mlp's first layer: 1,024 x 3,072 values against one), and formed otherwise.
This is exact for layers whose outputs depend on one sample at a time (``Linear``, ``Conv2d``,
``GroupNorm``, ``LayerNorm``); :func:`stackable` says when a model qualifies (BatchNorm in
training mode mixes samples, so it never does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ProblemGradients", "Targets", "stackable", "stacked_gradients"]

LAYERS = (nn.Linear, nn.Conv2d, nn.GroupNorm, nn.LayerNorm)
Records = dict[str, tuple[Tensor, Tensor]]


# Gather a target per problem (one batched product) up to this many values; beyond, loop over victims.
GATHER_LIMIT = 1 << 24
# Below this many columns M, <delta a^T, T> is taken as (delta^T T) . a^T: a batch of matrix-vector
# products T a is several times slower on a CPU (cnn's last convolution, M = 1: 7.9 ms against 2.5 ms
# forward and backward for 64 problems; at M = 25 the other side is 1.5 times faster).
FEW_COLUMNS = 16


@dataclass
class Targets:
    """Every victim's shared gradient, ``name -> (V, *shape)``, with its squared norm."""

    tensors: dict[str, Tensor]
    square_norms: Tensor = field(init=False)
    _gathered: dict[str, tuple[tuple[int, ...], Tensor]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.square_norms = _summed([t.square().flatten(1).sum(1) for t in self.tensors.values()])

    def rows(self, name: str, victims: Tensor, limit: Optional[int] = None) -> Optional[Tensor]:
        """Each problem's target ``(P, *shape)`` (a broadcast view for one victim), or ``None`` past
        ``limit`` values. The last gather per name is kept: active sets change rarely."""
        target = self.tensors[name]
        if len(target) == 1:
            return target.expand(len(victims), *target.shape[1:])
        if limit is not None and len(victims) * target[0].numel() > limit:
            return None
        key = tuple(victims.tolist())
        if self._gathered.get(name, (None,))[0] != key:
            self._gathered[name] = (key, target.index_select(0, victims))
        return self._gathered[name][1]


@dataclass
class ProblemGradients:
    """The dummy gradients of a set of problems, each materialised or factored.

    Args:
        victims: ``(P,)`` the victim (index into :class:`Targets`) of every problem, ascending.
        materialised: ``name -> (P, *shape)``.
        factored: ``name -> (a, delta)`` with ``a: (P, in, M)``, ``delta: (P, out, M)``, the gradient
            being ``delta a^T`` reshaped to the parameter's shape.
    """

    victims: Tensor
    materialised: dict[str, Tensor]
    factored: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict)

    def dot(self, targets: Targets) -> Tensor:
        """``(P,)`` every problem's inner product with its victim's target."""
        terms = [_per_row(g * targets.rows(name, self.victims)) for name, g in self.materialised.items()]
        for name, (inputs, delta) in self.factored.items():
            rows = targets.rows(name, self.victims, GATHER_LIMIT)
            if rows is not None:
                terms.append(_factored_dot(rows.flatten(2), inputs, delta))
                continue
            target = targets.tensors[name].flatten(2)
            terms.append(torch.cat([_factored_dot(target[v], a, d) for v, a, d in self._by_victim(inputs, delta)]))
        return _summed(terms)

    def square_norm(self) -> Tensor:
        """``(P,)`` every problem's squared gradient norm."""
        terms = [_per_row(g.square()) for g in self.materialised.values()]
        for inputs, delta in self.factored.values():
            grams = torch.bmm(inputs.transpose(1, 2), inputs) * torch.bmm(delta.transpose(1, 2), delta)
            terms.append(grams.flatten(1).sum(1))
        return _summed(terms)

    def square_distance(self, targets: Targets) -> Tensor:
        """``(P,)`` every problem's squared distance to its victim's target.

        Materialised gradients are subtracted directly (no cancellation as the distance vanishes);
        factored ones through ``|G|^2 - 2 <G, T> + |T|^2``.
        """
        terms = [_per_row((g - targets.rows(name, self.victims)).square()) for name, g in self.materialised.items()]
        if self.factored:
            factored = ProblemGradients(self.victims, {}, self.factored)
            squares = _summed([t.square().flatten(1).sum(1) for n, t in targets.tensors.items() if n in self.factored])
            terms.append(factored.square_norm() - 2 * factored.dot(targets) + squares.index_select(0, self.victims))
        return _summed(terms)

    def _by_victim(self, *tensors: Tensor) -> Iterator[tuple[int, ...]]:
        victims, counts = torch.unique_consecutive(self.victims, return_counts=True)
        chunks = [t.split(counts.tolist()) for t in tensors]
        return zip(victims.tolist(), *chunks)


def stackable(model: nn.Module, names: Sequence[str]) -> bool:
    """Whether :func:`stacked_gradients` computes the gradients ``names`` of ``model`` exactly.

    Args:
        model: the attacked model, in the client's mode.
        names: the parameter names whose per-problem gradients are needed.
    """
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in model.modules()):
        return False
    owners = _owners(model, names)
    return len(owners) == len(names) and all(_supported(module) for module, _ in owners.values())


def stacked_gradients(
    model: nn.Module, names: Sequence[str], victims: Tensor, loss: Callable[[], Tensor]
) -> ProblemGradients:
    """The gradient of every problem's loss with respect to the parameters ``names``.

    Args:
        model: the attacked model (:func:`stackable` must hold).
        names: parameter names.
        victims: ``(P,)`` every problem's victim; the stacked batch holds the problems in this order.
        loss: runs the forward pass on the stacked batch and returns the *sum* of the problems'
            losses.

    Returns:
        The gradients, with the graph kept for a second derivative.

    Raises:
        RuntimeError: if a layer runs more than once in a forward pass.
    """
    owners = _owners(model, names)
    with _recorded(model, sorted({layer for _, layer in owners.values()})) as records:
        total = loss()
    layers = sorted(records)
    deltas = dict(zip(layers, torch.autograd.grad(total, [records[n][1] for n in layers], create_graph=True)))
    gradients = ProblemGradients(victims, {})
    for name in names:
        module, layer = owners[name]
        inputs, delta = records[layer][0], deltas[layer]
        leaf = name.rsplit(".", 1)[1]
        if isinstance(module, (nn.Linear, nn.Conv2d)) and leaf == "weight":
            factors = _factors(module, inputs, delta, len(victims))
            if _cheaper_factored(*factors):
                gradients.factored[name] = factors
            else:
                formed = torch.bmm(factors[1], factors[0].transpose(1, 2))
                gradients.materialised[name] = formed.view(len(victims), *module.weight.shape)
        else:
            gradients.materialised[name] = _formed(module, leaf, inputs, delta, len(victims))
    return gradients


def _factors(module: nn.Module, inputs: Tensor, delta: Tensor, problems: int) -> tuple[Tensor, Tensor]:
    """``(a, delta)`` of a weight gradient, ``(P, in, M)`` and ``(P, out, M)`` (views where the layout allows)."""
    if isinstance(module, nn.Conv2d):
        delta = delta.flatten(2)
        if delta.shape[-1] == 1 and module.padding == (0, 0) and tuple(inputs.shape[-2:]) == module.kernel_size:
            columns = inputs.flatten(1)[..., None]  # the kernel covers the whole input: no unfolding
        else:
            columns = F.unfold(inputs, module.kernel_size, module.dilation, module.padding, module.stride)
        return _per_problem_columns(columns, problems), _per_problem_columns(delta, problems)
    inputs, delta = inputs.reshape(problems, -1, inputs.shape[-1]), delta.reshape(problems, -1, delta.shape[-1])
    return inputs.transpose(1, 2), delta.transpose(1, 2)


def _per_problem_columns(columns: Tensor, problems: int) -> Tensor:
    """``(P * n, features, L)`` -> ``(P, features, n * L)``: a problem's samples side by side."""
    if len(columns) == problems:
        return columns
    grouped = columns.reshape(problems, -1, *columns.shape[1:])
    return grouped.transpose(1, 2).reshape(problems, columns.shape[1], -1)


def _cheaper_factored(inputs: Tensor, delta: Tensor) -> bool:
    """Whether the Gram matrices (``M x M``) are smaller than the gradient (``out x in``)."""
    return inputs.shape[2] ** 2 < inputs.shape[1] * delta.shape[1]


def _formed(module: nn.Module, leaf: str, inputs: Tensor, delta: Tensor, problems: int) -> Tensor:
    """A bias or normalisation parameter's gradient per problem."""
    per_sample = delta * _normalised(module, inputs) if leaf == "weight" else delta  # weight: a norm's scale
    if isinstance(module, (nn.Conv2d, nn.GroupNorm)):  # channels at dim 1, positions after
        return _group(per_sample.flatten(2), problems).sum((1, 3))
    shape = getattr(module, leaf).shape
    return _group(per_sample, problems).reshape(problems, -1, *shape).sum(1)


def _owners(model: nn.Module, names: Sequence[str]) -> dict[str, tuple[nn.Module, str]]:
    owners = {}
    for name in names:
        layer, _, leaf = name.rpartition(".")
        module = model.get_submodule(layer) if layer else model
        if isinstance(module, LAYERS) and leaf in ("weight", "bias"):
            owners[name] = (module, layer)
    return owners


def _supported(module: nn.Module) -> bool:
    return not isinstance(module, nn.Conv2d) or (module.groups == 1 and module.padding_mode == "zeros")


@contextmanager
def _recorded(model: nn.Module, layers: Sequence[str]) -> Iterator[Records]:
    """Record the input and output of every module in ``layers`` during the block's forward pass."""
    records: Records = {}
    handles = []
    for layer in layers:

        def hook(module: nn.Module, args: tuple, output: Tensor, layer: str = layer) -> None:
            if layer in records:
                raise RuntimeError(
                    f"module {layer!r} runs more than once per forward pass: its gradient cannot be split"
                )
            records[layer] = (args[0], output)

        handles.append(model.get_submodule(layer).register_forward_hook(hook))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def _normalised(module: nn.Module, inputs: Tensor) -> Tensor:
    if isinstance(module, nn.GroupNorm):
        return F.group_norm(inputs, module.num_groups, eps=module.eps)
    return F.layer_norm(inputs, module.normalized_shape, eps=module.eps)


def _group(tensor: Tensor, problems: int) -> Tensor:
    """``(P * n, ...)`` -> ``(P, n, ...)``: a problem's samples are consecutive."""
    return tensor.reshape(problems, -1, *tensor.shape[1:])


def _factored_dot(target: Tensor, inputs: Tensor, delta: Tensor) -> Tensor:
    """``(P,)`` every problem's ``<delta a^T, T>``.

    Args:
        target: ``(P, out, in)``, or ``(out, in)`` shared by all problems.
        inputs: ``a``, ``(P, in, M)``.
        delta: ``(P, out, M)``.
    """
    if inputs.shape[-1] < FEW_COLUMNS:
        return _per_row(torch.matmul(delta.transpose(-2, -1), target) * inputs.transpose(-2, -1))
    return _per_row(torch.matmul(target, inputs) * delta)


def _summed(terms: list[Tensor]) -> Tensor:
    """The sum of per-problem terms in one reduction: chained additions cost an autograd node each."""
    return terms[0] if len(terms) == 1 else torch.stack(terms).sum(0)


def _per_row(tensor: Tensor) -> Tensor:
    """Sum over everything but the leading (problem) dimension."""
    return tensor.sum(tuple(range(1, tensor.dim())))
