"""Losses for class imbalance (handbook §30): class weights from frequencies, weighted CE, BCE pos_weight.

Class-weight schemes, for a class seen ``n_c`` times:

* ``"inverse"``: ``1 / n_c``;
* ``"inverse_sqrt"``: ``1 / sqrt(n_c)`` (milder);
* ``"effective_number"``: ``(1 - β) / (1 - β^{n_c})`` (Cui et al., "Class-Balanced Loss Based on
  Effective Number of Samples", CVPR 2019); ``β → 0`` gives equal weights, ``β → 1`` the inverse.

The weights are scaled so that they sum to the number of classes present; a class with no samples gets
weight 0 (it never occurs as a target, and an infinite weight would poison a weighted mean).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionkit.losses._reduction import as_compute_dtype, check_reduction, reduce_loss

__all__ = [
    "BCEWithPosWeightLoss",
    "WeightedCrossEntropyLoss",
    "bce_with_pos_weight",
    "class_weights",
    "class_weights_from_labels",
    "weighted_cross_entropy",
]

METHODS = ("inverse", "inverse_sqrt", "effective_number")


def class_weights(counts: Tensor, method: str = "inverse", beta: float = 0.999) -> Tensor:
    """Per-class loss weights ``Tensor[C]`` (float32, computed in float64) from class counts.

    Args:
        counts: ``Tensor[C]`` non-negative number of samples per class.
        method: ``"inverse"`` | ``"inverse_sqrt"`` | ``"effective_number"``.
        beta: the effective-number hyper-parameter in ``[0, 1)``.

    Returns:
        Weights summing to the number of classes with a non-zero count; 0 for absent classes.

    Example:
        >>> class_weights(torch.tensor([90, 10]), "inverse")
        tensor([0.2000, 1.8000])
    """
    if (
        not isinstance(counts, Tensor)
        or counts.dim() != 1
        or counts.is_complex()
        or counts.dtype == torch.bool
    ):
        raise ValueError(
            f"counts must be a real Tensor[C], got {getattr(counts, 'shape', type(counts).__name__)}"
        )
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    counts = counts.double()
    if (counts < 0).any() or not torch.isfinite(counts).all():
        raise ValueError(f"counts must be finite and >= 0, got {counts.tolist()}")
    present = counts > 0
    safe = torch.where(present, counts, torch.ones_like(counts))
    if method == "inverse":
        raw = 1 / safe
    elif method == "inverse_sqrt":
        raw = safe.rsqrt()
    else:
        raw = (1 - beta) / (1 - torch.pow(torch.tensor(beta, dtype=torch.float64), safe))
    raw = torch.where(present, raw, torch.zeros_like(raw))
    total = raw.sum()
    weights = raw * present.sum() / total if total > 0 else raw
    return weights.float()


def class_weights_from_labels(
    labels: Tensor, num_classes: int, method: str = "inverse", beta: float = 0.999
) -> Tensor:
    """:func:`class_weights` from a ``Tensor[N]`` of int64 labels in ``[0, num_classes)``.

    Example:
        >>> class_weights_from_labels(torch.tensor([0, 0, 0, 1]), 2, "inverse_sqrt")
        tensor([0.7321, 1.2679])
    """
    if labels.dim() != 1 or labels.dtype != torch.int64:
        raise ValueError(f"labels must be an int64 Tensor[N], got {labels.dtype} {list(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes}), got min {labels.min()} max {labels.max()}")
    return class_weights(torch.bincount(labels, minlength=num_classes), method, beta)


def weighted_cross_entropy(
    logits: Tensor,
    targets: Tensor,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    """Class-weighted cross-entropy ``-w[y] log softmax(x)[y]``.

    Equal to ``F.cross_entropy(logits, targets, weight)``: ``"mean"`` divides by the sum of the weights
    of the (non-ignored) targets; over an empty batch it is 0.0 (torch gives NaN).

    Args:
        logits: ``Tensor[N, C]`` (or ``[N, C, d1, ...]``); half precision is computed in float32.
        targets: ``Tensor[N]`` (or ``[N, d1, ...]``) int64 class indices.
        weight: ``Tensor[C]``, e.g. from :func:`class_weights`; ``None`` = unweighted.

    Example:
        >>> weighted_cross_entropy(torch.tensor([[0.0, 0.0]]), torch.tensor([1]), torch.tensor([1.0, 3.0]))
        tensor(0.6931)
    """
    check_reduction(reduction)
    if logits.dim() < 2 or targets.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            "logits must be [N, C, ...] and targets [N, ...]; "
            f"got {list(logits.shape)} and {list(targets.shape)}"
        )
    if weight is not None and weight.shape != (logits.shape[1],):
        raise ValueError(f"weight must be Tensor[{logits.shape[1]}], got {list(weight.shape)}")
    logits = as_compute_dtype(logits)
    weight = None if weight is None else weight.to(logits)
    loss = F.cross_entropy(logits, targets, weight=weight, reduction="none", ignore_index=ignore_index)
    valid = targets != ignore_index
    if weight is None:
        count = valid.sum()
    else:
        safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
        count = torch.where(valid, weight[safe_targets], torch.zeros_like(loss)).sum()
    return reduce_loss(loss, reduction, count=count)


def bce_with_pos_weight(
    logits: Tensor, targets: Tensor, pos_weight: Tensor | float | None = None, reduction: str = "mean"
) -> Tensor:
    """Binary cross-entropy from logits with the positive term scaled by ``pos_weight``.

    ``-[p · y log σ(x) + (1 - y) log(1 - σ(x))]``; ``pos_weight = num_negatives / num_positives`` balances
    a rare positive class. ``pos_weight`` broadcasts over the last dimension (one per class).
    Equal to ``F.binary_cross_entropy_with_logits``, except ``"mean"`` over nothing is 0.0.

    Example:
        >>> bce_with_pos_weight(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]), pos_weight=3.0)
        tensor(1.3863)
    """
    check_reduction(reduction)
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must have one shape, got {list(logits.shape)} and {list(targets.shape)}"
        )
    logits = as_compute_dtype(logits)
    if pos_weight is not None and not isinstance(pos_weight, Tensor):
        pos_weight = logits.new_tensor(float(pos_weight))
    if pos_weight is not None and (pos_weight < 0).any():
        raise ValueError(f"pos_weight must be >= 0, got {pos_weight}")
    pos_weight = None if pos_weight is None else pos_weight.to(logits)
    loss = F.binary_cross_entropy_with_logits(
        logits, targets.to(logits), pos_weight=pos_weight, reduction="none"
    )
    return reduce_loss(loss, reduction)


class WeightedCrossEntropyLoss(nn.Module):
    """Module form of :func:`weighted_cross_entropy`; the class weights are a buffer."""

    weight: Tensor | None

    def __init__(
        self, weight: Tensor | None = None, reduction: str = "mean", ignore_index: int = -100
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        self.register_buffer("weight", None if weight is None else weight.clone())
        self.reduction, self.ignore_index = reduction, ignore_index

    @classmethod
    def from_counts(cls, counts: Tensor, method: str = "inverse", beta: float = 0.999, **kwargs: object):
        """Build with weights from per-class ``counts`` (see :func:`class_weights`)."""
        return cls(class_weights(counts, method, beta), **kwargs)  # type: ignore[arg-type]

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return weighted_cross_entropy(logits, targets, self.weight, self.reduction, self.ignore_index)


class BCEWithPosWeightLoss(nn.Module):
    """Module form of :func:`bce_with_pos_weight`; ``pos_weight`` is a buffer."""

    pos_weight: Tensor | None

    def __init__(self, pos_weight: Tensor | float | None = None, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        if pos_weight is not None and not isinstance(pos_weight, Tensor):
            pos_weight = torch.tensor(float(pos_weight))
        self.register_buffer("pos_weight", None if pos_weight is None else pos_weight.clone())
        self.reduction = reduction

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return bce_with_pos_weight(logits, targets, self.pos_weight, self.reduction)
