"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017; handbook §11, §30).

``FL(p_t) = -α_t (1 - p_t)^γ log(p_t)``: the factor ``(1 - p_t)^γ`` shrinks the loss of the many easy,
well-classified examples (mostly background anchors) so that the few hard ones dominate training.
Both losses take logits and compute ``log(p_t)`` in log-sigmoid / log-softmax form, so extreme logits
never give ``log(0)``; half-precision and bfloat16 inputs are computed and returned in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionkit.losses._reduction import as_compute_dtype, check_reduction, reduce_loss

__all__ = ["SigmoidFocalLoss", "SoftmaxFocalLoss", "sigmoid_focal_loss", "softmax_focal_loss"]


def _check_gamma(gamma: float) -> None:
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")


def sigmoid_focal_loss(
    logits: Tensor, targets: Tensor, alpha: float | None = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> Tensor:
    """Binary (per-class sigmoid) focal loss, as in RetinaNet.

    Args:
        logits: ``Tensor[*]`` raw scores, any shape (e.g. ``[num_anchors, num_classes]``).
        targets: ``Tensor[*]`` of the same shape, 1 for positives and 0 for negatives (soft targets in
            ``[0, 1]`` are allowed).
        alpha: weight of the positives in ``[0, 1]`` (negatives get ``1 - alpha``); ``None`` = no weighting.
        gamma: focusing parameter ``>= 0``. With ``gamma=0`` and ``alpha=None`` this is exactly
            ``binary_cross_entropy_with_logits``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``. ``"mean"`` of an empty input is 0.0 (and
            back-propagates), where torchvision gives NaN.

    Returns:
        The loss, float32 for half/bfloat16 input (float64 stays float64), shaped like ``logits`` for
        ``reduction="none"``, else a scalar.

    Example:
        >>> sigmoid_focal_loss(torch.tensor([3.0, -3.0]), torch.tensor([1.0, 1.0]), reduction="none")
        tensor([2.7321e-05, 6.9157e-01])
    """
    _check_pair(logits, targets)
    _check_gamma(gamma)
    if alpha is not None and not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1] or None, got {alpha}")
    logits, targets = as_compute_dtype(logits), as_compute_dtype(targets).to(as_compute_dtype(logits).dtype)
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if gamma != 0:
        # 1 - p_t from sigmoid(±x) directly: no cancellation in 1 - sigmoid(x) for large x.
        one_minus_p_t = targets * torch.sigmoid(-logits) + (1 - targets) * torch.sigmoid(logits)
        loss = loss * one_minus_p_t.pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return reduce_loss(loss, reduction)


def softmax_focal_loss(
    logits: Tensor,
    targets: Tensor,
    alpha: float | Tensor | None = None,
    gamma: float = 2.0,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    """Multi-class (softmax) focal loss with an optional per-class ``alpha``.

    Args:
        logits: ``Tensor[N, C]`` or ``Tensor[N, C, d1, ...]`` raw class scores.
        targets: ``Tensor[N]`` or ``Tensor[N, d1, ...]`` int64 class indices in ``[0, C)``; entries equal to
            ``ignore_index`` contribute nothing and are not counted by ``"mean"``.
        alpha: ``None`` (no weighting), a float (every class), or ``Tensor[C]`` per-class weights (for
            instance from :func:`visionkit.losses.class_weights`).
        gamma: focusing parameter ``>= 0``. With ``gamma=0`` this is exactly ``F.cross_entropy`` for
            ``reduction="none"``/``"sum"`` (with ``weight=alpha``), and for ``"mean"`` when ``alpha=None``.
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``; ``"mean"`` divides by the number of non-ignored
            targets (not by the sum of ``alpha`` as weighted ``F.cross_entropy`` does) and is 0.0 when there
            are none.

    Returns:
        Shaped like ``targets`` for ``"none"``, else a scalar.

    Example:
        >>> softmax_focal_loss(torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([0]), gamma=0.0)
        tensor(0.2395)
    """
    if logits.dim() < 2 or targets.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"logits must be [N, C, ...] and targets [N, ...]; got logits {list(logits.shape)} "
            f"and targets {list(targets.shape)}"
        )
    if targets.dtype != torch.int64:
        raise TypeError(f"targets must be int64 class indices, got {targets.dtype}")
    _check_gamma(gamma)
    check_reduction(reduction)
    num_classes = logits.shape[1]
    valid = targets != ignore_index
    if ((targets[valid] < 0) | (targets[valid] >= num_classes)).any():
        raise ValueError(f"targets must be in [0, {num_classes}) or ignore_index={ignore_index}")
    logits = as_compute_dtype(logits)
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets)).unsqueeze(1)
    log_p_t = logits.log_softmax(dim=1).gather(1, safe_targets).squeeze(1)
    loss = -log_p_t
    if gamma != 0:
        loss = loss * (-torch.expm1(log_p_t)).clamp(min=0).pow(gamma)  # (1 - p_t)^γ without cancellation
    if alpha is not None:
        loss = loss * _alpha_per_target(alpha, num_classes, safe_targets.squeeze(1), loss)
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return reduce_loss(loss, reduction, count=valid.sum())


def _alpha_per_target(alpha: float | Tensor, num_classes: int, targets: Tensor, like: Tensor) -> Tensor:
    if not isinstance(alpha, Tensor):
        return like.new_tensor(float(alpha))
    if alpha.shape != (num_classes,):
        raise ValueError(f"alpha must be a float or Tensor[{num_classes}], got shape {list(alpha.shape)}")
    return alpha.to(like)[targets]


def _check_pair(logits: Tensor, targets: Tensor) -> None:
    for name, value in (("logits", logits), ("targets", targets)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must have the same shape, got {list(logits.shape)} and {list(targets.shape)}"
        )
    if logits.device != targets.device:
        raise ValueError(f"logits is on {logits.device} but targets is on {targets.device}")


class SigmoidFocalLoss(nn.Module):
    """Module form of :func:`sigmoid_focal_loss` (stores ``alpha``, ``gamma``, ``reduction``)."""

    def __init__(self, alpha: float | None = 0.25, gamma: float = 2.0, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.alpha, self.gamma, self.reduction = alpha, gamma, reduction

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return sigmoid_focal_loss(logits, targets, self.alpha, self.gamma, self.reduction)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}"


class SoftmaxFocalLoss(nn.Module):
    """Module form of :func:`softmax_focal_loss`; a per-class ``alpha`` is kept as a buffer."""

    alpha: Tensor | None

    def __init__(
        self,
        alpha: float | Tensor | None = None,
        gamma: float = 2.0,
        reduction: str = "mean",
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        self.alpha_value = None if isinstance(alpha, Tensor) else alpha
        self.register_buffer("alpha", alpha.clone() if isinstance(alpha, Tensor) else None)
        self.gamma, self.reduction, self.ignore_index = gamma, reduction, ignore_index

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        alpha = self.alpha if self.alpha is not None else self.alpha_value
        return softmax_focal_loss(logits, targets, alpha, self.gamma, self.reduction, self.ignore_index)

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, reduction={self.reduction!r}"
