"""Box-regression losses on coordinates or encoded deltas: smooth L1 (Fast R-CNN; handbook §10) and L1."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from visionkit.losses._reduction import as_compute_dtype, check_reduction, reduce_loss

__all__ = ["L1Loss", "SmoothL1Loss", "l1_loss", "smooth_l1_loss"]


def _difference(input: Tensor, target: Tensor) -> Tensor:
    for name, value in (("input", input), ("target", target)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if input.shape != target.shape:
        raise ValueError(
            f"input and target must have the same shape, got {list(input.shape)} and {list(target.shape)}"
        )
    if input.device != target.device:
        raise ValueError(f"input is on {input.device} but target is on {target.device}")
    input = as_compute_dtype(input)
    return input - target.to(input.dtype)


def smooth_l1_loss(input: Tensor, target: Tensor, beta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Smooth L1 (Huber-like) loss: ``0.5 d² / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta``.

    Quadratic near zero (a gradient that shrinks with the error), linear far away (outliers do not
    dominate). ``beta=0`` is exactly the L1 loss. Equal to ``torch.nn.functional.smooth_l1_loss``
    except that ``"mean"`` over an empty input is 0.0 (a positive-free image) instead of NaN.

    Args:
        input, target: ``Tensor[*]`` of one shape, e.g. ``[N, 4]`` box deltas; half precision is computed
            in float32.
        beta: the switch point ``>= 0`` (Fast R-CNN uses 1, Detectron2's RPN 1/9).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.

    Example:
        >>> smooth_l1_loss(torch.tensor([0.5, 3.0]), torch.zeros(2), reduction="none")
        tensor([0.1250, 2.5000])
    """
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    check_reduction(reduction)
    distance = _difference(input, target).abs()
    if beta == 0:
        return reduce_loss(distance, reduction)
    loss = torch.where(distance < beta, 0.5 * distance.square() / beta, distance - 0.5 * beta)
    return reduce_loss(loss, reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Mean absolute error ``|input - target|``; ``"mean"`` over an empty input is 0.0.

    Example:
        >>> l1_loss(torch.tensor([1.0, -2.0]), torch.zeros(2))
        tensor(1.5000)
    """
    check_reduction(reduction)
    return reduce_loss(_difference(input, target).abs(), reduction)


class SmoothL1Loss(nn.Module):
    """Module form of :func:`smooth_l1_loss`."""

    def __init__(self, beta: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.beta, self.reduction = beta, reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return smooth_l1_loss(input, target, self.beta, self.reduction)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, reduction={self.reduction!r}"


class L1Loss(nn.Module):
    """Module form of :func:`l1_loss`."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return l1_loss(input, target, self.reduction)
