"""Reduction shared by the losses: ``"none"``, ``"mean"`` (0.0 over an empty input) or ``"sum"``."""

from __future__ import annotations

import torch
from torch import Tensor

REDUCTIONS = ("none", "mean", "sum")


def check_reduction(reduction: str) -> None:
    """Raise ``ValueError`` naming ``reduction`` unless it is one of :data:`REDUCTIONS`."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")


def reduce_loss(loss: Tensor, reduction: str, count: Tensor | float | None = None) -> Tensor:
    """Reduce an element-wise ``loss``.

    ``"mean"`` divides the sum by ``count`` (default: the number of elements) and, unlike
    ``Tensor.mean``, gives 0.0 over an empty input. The result stays connected to the graph, so
    ``backward()`` works (and yields zero gradients) even when there is nothing to average.
    """
    check_reduction(reduction)
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    if count is None:
        count = float(loss.numel())
    if isinstance(count, Tensor):
        count = count.to(total.dtype)
        return total / torch.where(count > 0, count, torch.ones_like(count))
    return total / count if count > 0 else total


def as_compute_dtype(tensor: Tensor) -> Tensor:
    """Half, bfloat16 and integer inputs are computed in float32; float32/float64 are kept."""
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()
