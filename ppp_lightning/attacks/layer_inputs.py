"""A layer's input read straight out of its weight and bias gradients (a batch of one).

Used by the analytic recovery (the first ``Linear`` layer's input: the image) and by feature
inversion (PRECODE's encoder input: the features it inverts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from ppp_lightning.defenses.precode import PRECODE
from ppp_lightning.defenses.selection import execution_spans

__all__ = ["ESTIMATORS", "bottleneck_input", "check_estimator", "layer_gradients", "linear_input"]

ESTIMATORS = ("rank_one", "division")


def linear_input(
    weight_grad: Tensor,
    bias_grad: Tensor,
    estimator: Literal["rank_one", "division"] = "rank_one",
) -> Tensor:
    """The input of ``Linear`` from its gradients, for a batch of one.

    For ``y = W x + b`` and one input, ``dL/dW = g x^T`` and ``dL/db = g`` with ``g = dL/dy``:
    the weight gradient is rank one. Both estimators project it on a direction ``u`` of the
    output space, ``x = u^T dL/dW / u^T dL/db``, which is exact (up to rounding) whatever loss and
    layers follow, for any ``u`` not orthogonal to ``g``:

    - ``"division"`` takes ``u = dL/db``, the least-squares solution row by row. Under noise
      ``u`` is as noisy as the bias gradient, and its noise multiplies the weight gradient's.
    - ``"rank_one"`` takes the leading left singular vector of the weight gradient, estimated
      from all of its ``out * in`` entries, so i.i.d. noise on the gradients averages out; the
      bias gradient only sets the sign and scale (through ``u^T dL/db``).

    For a batch it returns a mixture of the inputs (``"rank_one"``: the dominant one).

    Args:
        weight_grad: ``(out_features, in_features)``.
        bias_grad: ``(out_features,)``.
        estimator: ``"rank_one"`` (noise-robust) or ``"division"``.

    Returns:
        ``(1, in_features)``, in ``weight_grad``'s dtype.

    Raises:
        ValueError: if ``estimator`` is unknown, or the bias gradient is zero along ``u`` (nothing
            flows through the layer).
    """
    check_estimator(estimator)
    weight = weight_grad.detach().double()
    bias = bias_grad.detach().double()
    direction = bias if estimator == "division" else _leading_left_vector(weight)
    scale = direction @ bias
    if scale == 0:
        raise ValueError("the bias gradient is zero: the layer's input cannot be recovered")
    return (direction @ weight / scale).to(weight_grad.dtype).unsqueeze(0)


def bottleneck_input(
    model: nn.Module,
    gradients: Mapping[str, Tensor],
    example_input: Tensor,
    estimator: Literal["rank_one", "division"] = "rank_one",
) -> Tensor:
    """The features entering the model's first PRECODE, from its encoder's gradients (batch of one).

    PRECODE's encoder is a ``Linear`` on the flattened features, before any sampling, so its
    shared gradient gives them back as :func:`linear_input` does for an image.

    Args:
        model: the attacked model (traced once on ``example_input`` to order its modules).
        gradients: the shared gradient by parameter name.
        example_input: an input of the model's shape, e.g. zeros of ``(1, C, H, W)``.
        estimator: see :func:`linear_input`.

    Returns:
        ``(1, in_features)`` of the first PRECODE to run.

    Raises:
        ValueError: if ``estimator`` is unknown, no PRECODE runs in the model's forward pass, or
            the encoder's weight or bias gradient is not shared.
    """
    check_estimator(estimator)
    spans = execution_spans(model, example_input)
    ran = sorted(
        (spans[name][0], name) for name, m in model.named_modules() if isinstance(m, PRECODE) and name in spans
    )
    if not ran:
        raise ValueError(f"{type(model).__name__} runs no PRECODE module: there is no bottleneck input to recover")
    encoder = f"{ran[0][1]}.encoder" if ran[0][1] else "encoder"
    return linear_input(*layer_gradients(gradients, encoder), estimator=estimator)


def check_estimator(estimator: str) -> None:
    """Refuse an unknown estimator (see :func:`linear_input`).

    Raises:
        ValueError: naming the estimator and the allowed ones.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator={estimator!r}; allowed: {', '.join(ESTIMATORS)}")


def layer_gradients(
    gradients: Mapping[str, Tensor], layer: str, candidates: Sequence[str] | None = None
) -> tuple[Tensor, Tensor]:
    """The shared weight and bias gradients of ``layer``.

    Raises:
        ValueError: naming the gradients that are not shared (and the candidate layers, if given).
    """
    names = [f"{layer}.weight", f"{layer}.bias"]
    missing = [name for name in names if name not in gradients]
    if missing:
        found = f"; Linear layers: {list(candidates)}" if candidates is not None else ""
        raise ValueError(f"recovering the input of {layer!r} needs the gradients {missing}{found}")
    return gradients[names[0]], gradients[names[1]]


def _leading_left_vector(matrix: Tensor) -> Tensor:
    """A vector along the leading left singular vector of ``matrix`` (sign and length arbitrary).

    Computed from the eigenvectors of the smaller Gram matrix: a full SVD of a
    ``(1024, 3072)`` gradient takes seconds, ``eigh`` of ``(1024, 1024)`` a fraction of one.
    Zero rows and columns (units a ReLU switched off) are left out first: they add nothing to the
    vector, and LAPACK's ``eigh`` can fail to converge on a Gram matrix with many zero eigenvalues.
    """
    live_rows, live_cols = matrix.abs().sum(1) > 0, matrix.abs().sum(0) > 0
    live = matrix[live_rows][:, live_cols]
    vector = matrix.new_zeros(matrix.shape[0])
    if live.numel() == 0:
        return vector
    rows, cols = live.shape
    if rows <= cols:
        vector[live_rows] = torch.linalg.eigh(live @ live.T).eigenvectors[:, -1]
    else:
        # More outputs than inputs (e.g. PRECODE's 2K-wide encoder on fewer features): the smaller
        # Gram matrix gives the right vector, and the matrix maps it onto the left one.
        vector[live_rows] = live @ torch.linalg.eigh(live.T @ live).eigenvectors[:, -1]
    return vector
