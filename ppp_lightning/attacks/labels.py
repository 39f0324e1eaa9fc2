"""Label recovery from the gradient of the classifier's last layer."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from ppp_lightning.attacks.targets import linear_layers

__all__ = ["head_bias_gradient", "recover_labels"]


def recover_labels(bias_grad: Tensor, num_images: int) -> Tensor:
    """The labels of a batch from the bias gradient of the last (classifier) layer.

    With cross-entropy the bias gradient is ``mean_n(softmax(logits_n) - onehot(y_n))``: only the
    classes present in the batch can be negative. One image gives its label exactly (iDLG, Zhao et
    al. 2020: the one negative entry); a batch gives the set of its labels (the sign rule), which is
    exact for distinct labels. When fewer classes are negative than there are images, the batch
    repeats labels and the most negative classes are repeated to fill it (a guess).

    Args:
        bias_grad: ``(num_classes,)`` gradient of the last layer's bias.
        num_images: the batch size ``N``.

    Returns:
        ``(N,)`` labels, most negative bias gradient first.

    Raises:
        ValueError: if ``num_images`` is not positive.
    """
    if num_images < 1:
        raise ValueError(f"num_images={num_images}; allowed: >= 1")
    present = max(1, int((bias_grad < 0).sum()))
    labels = bias_grad.detach().argsort()[:present]
    return labels.repeat(-(-num_images // present))[:num_images]


def head_bias_gradient(model: nn.Module, gradients: Mapping[str, Tensor], example_input: Tensor) -> Tensor:
    """The shared gradient of the bias of the last ``Linear`` layer in forward order.

    Raises:
        ValueError: if the model has no ``Linear`` layer or that bias gradient is not shared.
    """
    layers = linear_layers(model, example_input)
    name = f"{layers[-1]}.bias" if layers else None
    if name not in gradients:
        raise ValueError(f"recovering labels needs the bias gradient of the last Linear layer ({name}); pass labels")
    return gradients[name]
