"""Gradient perturbation as plain functions over named gradients, and tensor hooks that apply it.

The functional core of the PPP defense. :class:`GradientPerturbation` turns the gradients a client
would share into perturbed ones: clip their joint L2 norm, prune each tensor, add noise.
:class:`PerturbationHooks` applies it in place from post-accumulate-grad hooks on the parameters,
i.e. while ``backward`` runs and before DDP reads the gradient for its all-reduce.
The Lightning callback (``callbacks.PartialPerturbation``), the attacks and the benchmarks all call
this code, so the gradient that is attacked is perturbed exactly as in training.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Literal, Optional, get_args

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ppp_lightning.validation import check_number

__all__ = ["MECHANISMS", "GradientPerturbation", "Mechanism", "PerturbationHooks"]

# The noise mechanisms (``none``: clipping and pruning only).
Mechanism = Literal["gaussian", "laplace", "none"]
MECHANISMS: tuple[str, ...] = get_args(Mechanism)

# Parameters that carry hooks, so that a second attachment is refused instead of perturbing twice.
# Keyed by id (tensors compare elementwise); weak values drop the entry when the tensor dies.
_HOOKED: "weakref.WeakValueDictionary[int, Tensor]" = weakref.WeakValueDictionary()


def _unit_noise(like: Tensor, mechanism: str, generator: Optional[torch.Generator]) -> Tensor:
    """Noise of ``like``'s shape with mean 0 and standard deviation 1 (float32 or wider)."""
    dtype = torch.promote_types(like.dtype, torch.float32)
    if mechanism == "gaussian":
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=dtype)
    # Laplace from one uniform draw: the bit u >= 1/2 is the sign, frac(2u) in [0, 1) gives
    # Exp(1) = -log1p(-frac(2u)) (finite, unlike log(|.|) transforms that can hit log(0)).
    u = torch.rand(like.shape, generator=generator, device=like.device, dtype=dtype).mul_(2)
    sign = (u >= 1).to(dtype).mul_(2).sub_(1)
    return u.frac_().neg_().log1p_().mul_(sign).mul_(-1 / math.sqrt(2))


class GradientPerturbation:
    """Clip, prune and add noise to a set of named gradients (one client's shared gradient).

    The steps run in this order, each one optional:

    1. **clip**: scale all gradients by ``min(1, clip_norm / ||g||)`` where ``||g||`` is the joint
       L2 norm of the whole set (as DP-SGD clips, here once per shared gradient);
    2. **prune**: in each tensor, zero all but the ``keep_ratio`` fraction of entries of largest
       magnitude (``round(keep_ratio * numel)``, at least one), the defense of Zhu et al. (DLG);
    3. **noise**: add i.i.d. noise to every entry whose **standard deviation is** ``sigma`` for both
       mechanisms. For ``"laplace"`` the scale parameter is therefore ``b = sigma / sqrt(2)``: we
       read the issue's "scale sigma per gradient entry" as the noise's spread, so that Gaussian
       and Laplacian noise of the same ``sigma`` carry the same power. With ``relative=True`` the
       standard deviation of each tensor's noise is ``sigma * RMS`` of that tensor's gradient (as it
       stands after clipping and pruning), i.e. ``sigma`` is a noise-to-signal ratio per layer.

    Clipping is the only step that couples the tensors; without it (:attr:`separable`) perturbing
    the tensors one at a time is the same as perturbing the set at once.

    Args:
        mechanism: ``"gaussian"``, ``"laplace"`` or ``"none"`` (clip and prune only).
        sigma: standard deviation of the noise per entry (absolute, or relative to the RMS).
        relative: scale ``sigma`` by each tensor's gradient RMS.
        clip_norm: bound on the joint L2 norm of the set before the noise; ``None`` to not clip.
        keep_ratio: fraction of entries kept per tensor by pruning, in ``(0, 1]``; ``None`` to not prune.

    Raises:
        ValueError: if ``mechanism`` is unknown, ``sigma`` is negative (or positive with
            ``mechanism="none"``), ``clip_norm`` is not positive or ``keep_ratio`` is outside ``(0, 1]``.
    """

    def __init__(
        self,
        mechanism: Mechanism = "gaussian",
        sigma: float = 0.0,
        relative: bool = False,
        clip_norm: Optional[float] = None,
        keep_ratio: Optional[float] = None,
    ) -> None:
        if mechanism not in MECHANISMS:
            raise ValueError(f"mechanism={mechanism!r}; allowed: {', '.join(MECHANISMS)}")
        check_number("sigma", sigma, minimum=0)
        if mechanism == "none" and sigma > 0:
            raise ValueError(f"sigma={sigma}; allowed: 0 with mechanism='none'")
        if clip_norm is not None:
            check_number("clip_norm", clip_norm, minimum=0, exclusive_minimum=True)
        if keep_ratio is not None:
            check_number("keep_ratio", keep_ratio, minimum=0, maximum=1, exclusive_minimum=True)
        self.mechanism = mechanism
        self.sigma = float(sigma)
        self.relative = relative
        self.clip_norm = clip_norm
        self.keep_ratio = keep_ratio

    @property
    def separable(self) -> bool:
        """Whether each tensor can be perturbed on its own (no joint-norm clipping)."""
        return self.clip_norm is None

    def __call__(self, grads: Mapping[str, Tensor], generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        """Perturbed copies of the given gradients (one joint set: clip joint L2 norm, then prune, then noise).

        Args:
            grads: the set's gradients by name; they are not modified.
            generator: source of the noise (on the gradients' device); ``None`` uses torch's global RNG.

        Returns:
            New tensors, by the same names, in the same order.
        """
        copies = {name: grad.detach().clone() for name, grad in grads.items()}
        self.apply_(copies, generator)
        return copies

    def apply_(
        self, grads: Mapping[str, Tensor], generator: Optional[torch.Generator] = None, scale: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Perturb ``grads`` in place, as :meth:`__call__` does.

        Args:
            grads: the set's gradients by name, modified in place.
            generator: source of the noise; ``None`` uses torch's global RNG.
            scale: factor the gradients carry (an fp16 loss scale): ``clip_norm`` and ``sigma`` stay
                in unscaled units, so the result equals ``scale`` times the unscaled perturbation.

        Returns:
            The squared L2 norms, in unscaled units, of the clean input set and of the added noise.
        """
        clean, noise = self.perturb_(list(grads.values()), generator, scale)
        return _squared_total(clean, scale), _squared_total(noise, scale)

    def perturb_(
        self, tensors: Sequence[Tensor], generator: Optional[torch.Generator] = None, scale: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Perturb ``tensors`` (one joint set) in place, as :meth:`apply_` does.

        The per-tensor norms are returned rather than summed, so that a caller perturbing a set
        piece by piece (the hooks) reduces them once per step instead of once per piece.

        Args:
            tensors: the set's gradients, modified in place.
            generator: source of the noise; ``None`` uses torch's global RNG.
            scale: factor the gradients carry (see :meth:`apply_`).

        Returns:
            ``(len(tensors),)`` every tensor's L2 norm before the perturbation, and the L2 norm of
            the noise added to it (empty without noise), in the gradients' (scaled) units.
        """
        clean = _norms(tensors)
        if self.clip_norm is not None:
            factor = (self.clip_norm / (_squared_total(clean, scale).sqrt() + 1e-6)).clamp(max=1.0)
            for grad in tensors:
                grad.mul_(factor.to(grad.device))
        if self.keep_ratio is not None:
            for grad in tensors:
                self._prune_(grad)
        if self.mechanism == "none" or self.sigma == 0 or not tensors:
            return clean, clean[:0]
        units = [_unit_noise(grad, self.mechanism, generator) for grad in tensors]
        if not self.relative:  # one standard deviation for all: a fused add
            torch._foreach_add_(tensors, units, alpha=self.sigma * scale)
            return clean, _norms(units).mul_(self.sigma * scale)
        # each tensor's RMS as it stands after clipping and pruning (from the clean norms when neither ran)
        current = clean if self.clip_norm is None and self.keep_ratio is None else _norms(tensors)
        stds = current * torch.tensor([self.sigma / math.sqrt(g.numel()) for g in tensors], device=current.device)
        for grad, unit, std in zip(tensors, units, stds):
            grad.addcmul_(unit, std.to(grad.device))
        return clean, _norms(units) * stds

    def _prune_(self, grad: Tensor) -> None:
        keep = max(1, round(self.keep_ratio * grad.numel()))
        if keep < grad.numel():
            mask = torch.zeros(grad.numel(), dtype=torch.bool, device=grad.device)
            mask[grad.detach().abs().flatten().topk(keep, sorted=False).indices] = True
            grad.mul_(mask.view(grad.shape))


def _squared_total(norms: Tensor, scale: float = 1.0) -> Tensor:
    """The squared L2 norm of a set from its pieces' ``norms``, divided by ``scale**2``."""
    total = norms.square().sum()
    return total if scale == 1.0 else total / scale**2


def _norms(tensors: Sequence[Tensor]) -> Tensor:
    """``(len(tensors),)`` every tensor's L2 norm, accumulated in float32 at least, on the first one's device."""
    if not tensors:
        return torch.zeros(0)
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)
    device = tensors[0].device
    return torch.stack([norm.to(device) for norm in torch._foreach_norm(tensors, 2, dtype=dtype)])


class PerturbationHooks:
    """Apply a :class:`GradientPerturbation` to named parameters of a model, once per :meth:`arm`.

    With ``during_backward``, a separable perturbation (no joint clipping) runs in a
    post-accumulate-grad hook of each parameter, i.e. on the complete (accumulated) ``.grad`` as
    soon as ``backward`` has produced it and before DDP's reducer reads it, so every rank (client)
    shares its own perturbed gradient. Otherwise (joint clipping needs the whole set at once; in one
    process nothing reads the gradients during ``backward``) the set is perturbed in one pass in
    :meth:`finish`, after ``backward``, which costs less than a hook per tensor. :meth:`finish` also
    perturbs any selected gradient that no hook reached (a parameter unused in the last backward),
    so each armed step perturbs every selected gradient exactly once.

    Args:
        model: the module whose parameters are perturbed.
        names: parameter names as in ``model.named_parameters()``.
        perturbation: what to do to the gradients.
        generator: source of the noise; ``None`` uses torch's global RNG.
        during_backward: perturb each gradient while ``backward`` runs (needed where something
            reads gradients during ``backward``, as DDP does); ``False`` waits for :meth:`finish`.

    Raises:
        ValueError: if a name is not a parameter of ``model``.
        RuntimeError: if a parameter already carries perturbation hooks (attached twice).
    """

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str],
        perturbation: GradientPerturbation,
        generator: Optional[torch.Generator] = None,
        during_backward: bool = True,
    ) -> None:
        available = dict(model.named_parameters())
        missing = [name for name in names if name not in available]
        if missing:
            raise ValueError(f"not parameters of the model: {missing}; available: {list(available)}")
        self.params = {name: available[name] for name in names}
        hooked = [name for name, param in self.params.items() if id(param) in _HOOKED]
        if hooked:
            raise RuntimeError(f"parameters already carry perturbation hooks (attached twice?): {hooked}")
        self.perturbation = perturbation
        self.generator = generator
        self._handles: list[RemovableHandle] = []
        if perturbation.separable and during_backward:
            self._handles = [
                param.register_post_accumulate_grad_hook(self._hook(name)) for name, param in self.params.items()
            ]
        _HOOKED.update({id(param): param for param in self.params.values()})
        self._scale: Optional[float] = None
        self.scale = 1.0  # the factor of the last finished step
        self._done: set[str] = set()
        self._clean_norms: list[Tensor] = []
        self._noise_norms: list[Tensor] = []

    def matches(self, model: nn.Module) -> bool:
        """Whether ``model`` still holds the hooked parameter objects under their names."""
        current = dict(model.named_parameters())
        return all(current.get(name) is param for name, param in self.params.items())

    def arm(self, scale: float = 1.0) -> None:
        """Perturb the gradients of the next backward pass.

        Args:
            scale: factor the gradients carry (fp16 loss scale); noise and clipping stay unscaled.
        """
        self._scale = scale
        self._done, self._clean_norms, self._noise_norms = set(), [], []

    @property
    def armed(self) -> bool:
        """Whether the next gradients will be perturbed."""
        return self._scale is not None

    def finish(self) -> Optional[dict[str, Tensor]]:
        """Perturb what the hooks did not reach, disarm, and report the step's statistics.

        Returns:
            ``None`` when not armed, else ``num_tensors``, ``num_elements``, ``clean_norm`` and
            ``noise_norm`` (unscaled L2 norms over the perturbed set) as tensors; :attr:`scale`
            keeps the step's factor (an fp16 loss scale, under which inf gradients are expected).
        """
        if self._scale is None:
            return None
        rest = {name: p.grad for name, p in self.params.items() if name not in self._done and p.grad is not None}
        if rest:
            self._perturb(rest)
        scale = self.scale = self._scale
        self._scale = None
        return {
            "num_tensors": torch.tensor(len(self._done)),
            "num_elements": torch.tensor(sum(self.params[name].numel() for name in self._done)),
            "clean_norm": _joint_norm(self._clean_norms, scale),
            "noise_norm": _joint_norm(self._noise_norms, scale),
        }

    def remove(self) -> None:
        """Remove the hooks; the parameters can be hooked again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for param in self.params.values():
            _HOOKED.pop(id(param), None)
        self._scale = None

    def _perturb(self, grads: dict[str, Tensor]) -> None:
        # per-tensor norms, reduced once in finish(): a hook's share of the step stays a few kernels
        clean, noise = self.perturbation.perturb_(list(grads.values()), self.generator, self._scale)
        self._clean_norms.append(clean)
        self._noise_norms.append(noise)
        self._done.update(grads)

    def _hook(self, name: str) -> Callable[[Tensor], None]:
        def hook(param: Tensor) -> None:
            if self._scale is not None and name not in self._done and param.grad is not None:
                self._perturb({name: param.grad})

        return hook


def _joint_norm(pieces: Sequence[Tensor], scale: float) -> Tensor:
    """The unscaled L2 norm of a set from the per-tensor norms its pieces reported (on the first's device)."""
    if not pieces:
        return torch.zeros(())
    device = pieces[0].device
    return _squared_total(torch.cat([norms.to(device) for norms in pieces]), scale).sqrt()
