"""IoU-based box-regression losses on matched pairs of xyxy boxes.

* GIoU (Rezatofighi et al., CVPR 2019): ``1 - IoU + |C \\ (A ∪ B)| / |C|`` with ``C`` the smallest
  enclosing box, so disjoint boxes still get a gradient.
* DIoU (Zheng et al., AAAI 2020): ``1 - IoU + ρ²(centres) / c²`` with ``c`` the diagonal of ``C``.
* CIoU (same paper): DIoU ``+ α v`` with the aspect-ratio term ``v = 4/π² (atan(w_gt/h_gt) - atan(w/h))²``
  and ``α = v / (1 - IoU + v)`` treated as a constant (no gradient), as in the paper and torchvision.

``boxes1`` are the predictions and ``boxes2`` the targets, ``Tensor[N, 4]`` xyxy each, same dtype and
device. The IoU terms come from :mod:`visionkit.ops.boxes` (the element-wise functions), which divide
exactly where the denominator is positive and give 0 where it is 0, so a zero-area pair has a finite loss,
never NaN (torchvision instead adds ``eps=1e-7`` to every denominator: the values differ by about 1e-8
relative). Half precision and integer boxes are computed in float32.
"""

from __future__ import annotations

from torch import Tensor, nn

from visionkit.losses._reduction import check_reduction, reduce_loss
from visionkit.ops.boxes import (
    elementwise_complete_box_iou,
    elementwise_distance_box_iou,
    elementwise_generalized_box_iou,
)

__all__ = ["CIoULoss", "DIoULoss", "GIoULoss", "ciou_loss", "diou_loss", "giou_loss"]


def giou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none") -> Tensor:
    """Generalized-IoU loss ``1 - GIoU`` of matched xyxy pairs ``Tensor[N, 4]`` → ``Tensor[N]`` (or scalar).

    Values lie in ``[0, 2]``; 0 for identical boxes. ``"mean"`` over no boxes is 0.0.

    Example:
        >>> import torch
        >>> giou_loss(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[4.0, 0.0, 6.0, 2.0]]))
        tensor([1.3333])
    """
    check_reduction(reduction)
    return reduce_loss(1 - elementwise_generalized_box_iou(boxes1, boxes2), reduction)


def diou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none") -> Tensor:
    """Distance-IoU loss ``1 - IoU + ρ²/c²`` of matched xyxy pairs ``Tensor[N, 4]`` → ``Tensor[N]``.

    Example:
        >>> import torch
        >>> diou_loss(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]]))
        tensor([0.7436])
    """
    check_reduction(reduction)
    return reduce_loss(1 - elementwise_distance_box_iou(boxes1, boxes2), reduction)


def ciou_loss(boxes1: Tensor, boxes2: Tensor, reduction: str = "none") -> Tensor:
    """Complete-IoU loss: DIoU plus the aspect-ratio penalty ``α v`` (``α`` without gradient).

    Example:
        >>> import torch
        >>> ciou_loss(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[0.0, 0.0, 4.0, 2.0]]))
        tensor([0.5532])
    """
    check_reduction(reduction)
    return reduce_loss(1 - elementwise_complete_box_iou(boxes1, boxes2), reduction)


class _BoxLoss(nn.Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class GIoULoss(_BoxLoss):
    """Module form of :func:`giou_loss` (default ``reduction="mean"``)."""

    def forward(self, boxes1: Tensor, boxes2: Tensor) -> Tensor:
        return giou_loss(boxes1, boxes2, self.reduction)


class DIoULoss(_BoxLoss):
    """Module form of :func:`diou_loss` (default ``reduction="mean"``)."""

    def forward(self, boxes1: Tensor, boxes2: Tensor) -> Tensor:
        return diou_loss(boxes1, boxes2, self.reduction)


class CIoULoss(_BoxLoss):
    """Module form of :func:`ciou_loss` (default ``reduction="mean"``)."""

    def forward(self, boxes1: Tensor, boxes2: Tensor) -> Tensor:
        return ciou_loss(boxes1, boxes2, self.reduction)
