"""Box utilities. Boxes are ``Tensor[N, 4]`` in ``(x1, y1, x2, y2)`` absolute pixels unless named otherwise.

Dtypes: float32 and float64 inputs are computed and returned in their own dtype; float16, bfloat16 and
integer inputs are computed in float32 and every overlap measure (IoU, GIoU, DIoU, CIoU, IoA, area) is
returned as float32. Two box tensors given to one function must share dtype and device (a
``ValueError`` names both otherwise).

Degenerate boxes: a zero-area box has IoU 0 with everything (never NaN), and GIoU/DIoU/CIoU stay finite.
Inverted boxes (``x2 < x1`` or ``y2 < y1``) are not rejected by the fast functions (checking costs a
synchronisation): their width/height count as zero, so their area, intersection and IoU are 0; the
enclosing box of GIoU/DIoU uses their raw corners. Call :func:`validate_boxes` to reject them by index.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from visionkit.ops._validate import check_boxes, check_same_device, check_same_dtype

__all__ = [
    "box_area",
    "box_convert",
    "box_ioa",
    "box_iou",
    "clip_boxes_to_image",
    "complete_box_iou",
    "distance_box_iou",
    "elementwise_box_iou",
    "elementwise_complete_box_iou",
    "elementwise_distance_box_iou",
    "elementwise_generalized_box_iou",
    "generalized_box_iou",
    "remove_small_boxes",
    "validate_boxes",
]

_FORMATS = ("xyxy", "xywh", "cxcywh")


def _as_float(boxes: Tensor) -> Tensor:
    """Promote to float32 unless already float32/float64 (fp16/bf16/int are computed in float32)."""
    return boxes if boxes.dtype in (torch.float32, torch.float64) else boxes.float()


def _safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` where the denominator is positive, else 0 — with finite gradients."""
    positive = denominator > 0
    return torch.where(positive, numerator / torch.where(positive, denominator, 1.0), 0.0)


def validate_boxes(boxes: Tensor, name: str = "boxes") -> Tensor:
    """Raise ``ValueError`` naming the indices of non-finite or inverted (``x2 < x1``/``y2 < y1``) boxes.

    Zero-area boxes (``x2 == x1``) are valid. Returns ``boxes`` unchanged so it can be chained.

    Example:
        >>> validate_boxes(torch.tensor([[0.0, 0.0, 1.0, 1.0], [5.0, 0.0, 4.0, 1.0]]), name="detections")
        Traceback (most recent call last):
        ...
        ValueError: detections has 1 inverted box(es) (x2 < x1 or y2 < y1) at index [1]: first is [5.0, ...]
    """
    check_boxes(boxes, name)
    if boxes.is_floating_point():
        bad = (~torch.isfinite(boxes)).any(dim=1).nonzero().flatten()
        if bad.numel():
            raise ValueError(
                f"{name} has {bad.numel()} non-finite box(es) (NaN or Inf) at index {bad[:10].tolist()}: "
                f"first is {boxes[bad[0]].tolist()}"
            )
    inverted = ((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).nonzero().flatten()
    if inverted.numel():
        raise ValueError(
            f"{name} has {inverted.numel()} inverted box(es) (x2 < x1 or y2 < y1) at index "
            f"{inverted[:10].tolist()}: first is {boxes[inverted[0]].tolist()}"
        )
    return boxes


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``Tensor[N, 4]`` boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"``.

    Returns a new tensor of the input dtype for floating inputs (half types are computed in float32)
    and float32 for integer inputs.

    Example:
        >>> box_convert(torch.tensor([[10.0, 20.0, 4.0, 6.0]]), "cxcywh", "xyxy")
        tensor([[ 8., 17., 12., 23.]])
    """
    for arg, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in _FORMATS:
            raise ValueError(f"{arg} must be one of {_FORMATS}, got {fmt!r}")
    check_boxes(boxes)
    out_dtype = boxes.dtype if boxes.is_floating_point() else torch.float32
    work = _as_float(boxes)
    a, b, c, d = work.unbind(-1)
    if in_fmt == "xywh":
        x1, y1, x2, y2 = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        x1, y1, x2, y2 = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    else:
        x1, y1, x2, y2 = a, b, c, d
    if out_fmt == "xyxy":
        out = torch.stack((x1, y1, x2, y2), dim=-1)
    elif out_fmt == "xywh":
        out = torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)
    else:
        out = torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)
    return out.to(out_dtype)


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``Tensor[N, 4]`` xyxy boxes → ``Tensor[N]``; inverted sides count as zero width/height.

    Example:
        >>> box_area(torch.tensor([[0.0, 0.0, 2.0, 3.0], [5.0, 5.0, 4.0, 9.0]]))
        tensor([6., 0.])
    """
    check_boxes(boxes)
    boxes = _as_float(boxes)
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip xyxy ``Tensor[N, 4]`` boxes to an image of ``size = (height, width)``; keeps the dtype.

    Example:
        >>> clip_boxes_to_image(torch.tensor([[-5.0, 2.0, 50.0, 8.0]]), (10, 20))
        tensor([[ 0.,  2., 20.,  8.]])
    """
    check_boxes(boxes)
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0 for s in size):
        raise ValueError(f"size must be (height, width) with non-negative numbers, got {size!r}")
    height, width = size
    x = boxes[:, 0::2].clamp(min=0, max=width)
    y = boxes[:, 1::2].clamp(min=0, max=height)
    return torch.stack((x[:, 0], y[:, 0], x[:, 1], y[:, 1]), dim=1)


def remove_small_boxes(boxes: Tensor, min_size: float) -> Tensor:
    """Indices (``Tensor[K]`` int64, increasing) of boxes whose width and height are both ``>= min_size``.

    Example:
        >>> remove_small_boxes(torch.tensor([[0.0, 0.0, 1.0, 5.0], [0.0, 0.0, 4.0, 4.0]]), 2.0)
        tensor([1])
    """
    check_boxes(boxes)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return ((widths >= min_size) & (heights >= min_size)).nonzero().flatten()


def _prepare_pair(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    check_same_device(("boxes1", boxes1), ("boxes2", boxes2))
    check_same_dtype(("boxes1", boxes1), ("boxes2", boxes2))
    return _as_float(boxes1), _as_float(boxes2)


def _prepare_elementwise(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    boxes1, boxes2 = _prepare_pair(boxes1, boxes2)
    if boxes1.shape != boxes2.shape:
        raise ValueError(
            f"element-wise ops need boxes1 and boxes2 of the same shape [N, 4], got {list(boxes1.shape)} "
            f"and {list(boxes2.shape)}"
        )
    return boxes1, boxes2


def _iou_parts(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Intersection, union and IoU of broadcastable ``[..., 4]`` xyxy boxes (IoU 0 where union is 0)."""
    area1 = (boxes1[..., 2] - boxes1[..., 0]).clamp(min=0) * (boxes1[..., 3] - boxes1[..., 1]).clamp(min=0)
    area2 = (boxes2[..., 2] - boxes2[..., 0]).clamp(min=0) * (boxes2[..., 3] - boxes2[..., 1]).clamp(min=0)
    top_left = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1 + area2 - inter
    return inter, union, _safe_divide(inter, union)


def _enclosing_wh(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Width and height ``[..., 2]`` of the smallest box enclosing both (raw corners, never negative)."""
    top_left = torch.minimum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.maximum(boxes1[..., 2:], boxes2[..., 2:])
    return (bottom_right - top_left).clamp(min=0)


def _giou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    _, union, iou = _iou_parts(boxes1, boxes2)
    enclosing = _enclosing_wh(boxes1, boxes2)
    enclosing_area = enclosing[..., 0] * enclosing[..., 1]
    return iou - _safe_divide(enclosing_area - union, enclosing_area)


def _diou_parts(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """IoU and the DIoU penalty ``rho² / c²`` (centre distance over enclosing diagonal, both squared)."""
    _, _, iou = _iou_parts(boxes1, boxes2)
    enclosing = _enclosing_wh(boxes1, boxes2)
    diagonal_sq = enclosing[..., 0] ** 2 + enclosing[..., 1] ** 2
    centre1 = (boxes1[..., :2] + boxes1[..., 2:]) / 2
    centre2 = (boxes2[..., :2] + boxes2[..., 2:]) / 2
    distance_sq = ((centre1 - centre2) ** 2).sum(dim=-1)
    return iou, _safe_divide(distance_sq, diagonal_sq)


def _ciou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    iou, penalty = _diou_parts(boxes1, boxes2)
    wh1 = (boxes1[..., 2:] - boxes1[..., :2]).clamp(min=0)
    wh2 = (boxes2[..., 2:] - boxes2[..., :2]).clamp(min=0)
    # atan2(w, h) = atan(w / h) for h > 0 and stays defined (0 or pi/2) for zero-height boxes.
    aspect_gap = torch.atan2(wh2[..., 0], wh2[..., 1]) - torch.atan2(wh1[..., 0], wh1[..., 1])
    v = (4 / math.pi**2) * aspect_gap**2
    with torch.no_grad():  # alpha is a trade-off weight, not differentiated (Zheng et al. 2020)
        alpha = _safe_divide(v, 1 - iou + v)
    return iou - penalty - alpha * v


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection-over-union of xyxy boxes: ``Tensor[N, 4]``, ``Tensor[M, 4]`` → ``Tensor[N, M]``.

    A pair whose union is zero (two zero-area boxes) has IoU 0, never NaN.

    Example:
        >>> box_iou(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]]))
        tensor([[0.3333]])
    """
    boxes1, boxes2 = _prepare_pair(boxes1, boxes2)
    return _iou_parts(boxes1[:, None, :], boxes2[None, :, :])[2]


def box_ioa(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over the area of the *first* box: ``[N, 4]``, ``[M, 4]`` → ``[N, M]``.

    This is COCO's crowd matching (overlap / detection area). A zero-area first box gives 0.

    Example:
        >>> box_ioa(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 9.0, 9.0]]))
        tensor([[0.5000]])
    """
    boxes1, boxes2 = _prepare_pair(boxes1, boxes2)
    inter = _iou_parts(boxes1[:, None, :], boxes2[None, :, :])[0]
    area1 = (boxes1[:, 2] - boxes1[:, 0]).clamp(min=0) * (boxes1[:, 3] - boxes1[:, 1]).clamp(min=0)
    return _safe_divide(inter, area1[:, None].expand_as(inter))


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise GIoU = IoU − (C − U)/C, C the enclosing box area (Rezatofighi et al. 2019). ``[N, M]``.

    In ``[-1, 1]``; where C is 0 (identical point boxes) the penalty is 0.

    Example:
        >>> generalized_box_iou(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[2.0, 0.0, 3.0, 1.0]]))
        tensor([[-0.3333]])
    """
    boxes1, boxes2 = _prepare_pair(boxes1, boxes2)
    return _giou(boxes1[:, None, :], boxes2[None, :, :])


def distance_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise DIoU = IoU − ρ²/c² (centre distance over enclosing diagonal; Zheng et al. 2020). ``[N, M]``.

    Example:
        >>> distance_box_iou(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([[2.0, 0.0, 3.0, 1.0]]))
        tensor([[-0.4000]])
    """
    boxes1, boxes2 = _prepare_pair(boxes1, boxes2)
    iou, penalty = _diou_parts(boxes1[:, None, :], boxes2[None, :, :])
    return iou - penalty


def complete_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise CIoU = DIoU − αv, v the aspect-ratio gap, α = v/(1 − IoU + v) (Zheng et al. 2020).

    Example:
        >>> complete_box_iou(torch.tensor([[0.0, 0.0, 2.0, 1.0]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
        tensor([[0.4468]])
    """
    boxes1, boxes2 = _prepare_pair(boxes1, boxes2)
    return _ciou(boxes1[:, None, :], boxes2[None, :, :])


def elementwise_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of matching rows: ``Tensor[N, 4]``, ``Tensor[N, 4]`` → ``Tensor[N]`` (differentiable).

    Example:
        >>> elementwise_box_iou(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]]))
        tensor([0.3333])
    """
    return _iou_parts(*_prepare_elementwise(boxes1, boxes2))[2]


def elementwise_generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """GIoU of matching rows ``[N, 4]``, ``[N, 4]`` → ``[N]``; a GIoU loss is ``1 - this``.

    Example:
        >>> elementwise_generalized_box_iou(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[2.0, 0, 3, 1]]))
        tensor([-0.3333])
    """
    return _giou(*_prepare_elementwise(boxes1, boxes2))


def elementwise_distance_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """DIoU of matching rows ``[N, 4]``, ``[N, 4]`` → ``[N]``; a DIoU loss is ``1 - this``.

    Example:
        >>> elementwise_distance_box_iou(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([[2.0, 0, 3, 1]]))
        tensor([-0.4000])
    """
    iou, penalty = _diou_parts(*_prepare_elementwise(boxes1, boxes2))
    return iou - penalty


def elementwise_complete_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """CIoU of matching rows ``[N, 4]``, ``[N, 4]`` → ``[N]``; a CIoU loss is ``1 - this``.

    Example:
        >>> elementwise_complete_box_iou(torch.tensor([[0.0, 0, 2, 1]]), torch.tensor([[0.0, 0, 1, 1]]))
        tensor([0.4468])
    """
    return _ciou(*_prepare_elementwise(boxes1, boxes2))
