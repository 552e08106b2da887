"""Box utilities. Boxes are ``Tensor[N, 4]`` in ``(x1, y1, x2, y2)`` absolute pixels unless named otherwise.

Integer and half-precision inputs are computed in float32; float64 stays float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from visionkit.ops._validate import check_boxes, check_same_device

__all__ = ["box_area", "box_convert", "box_iou"]

_FORMATS = ("xyxy", "xywh", "cxcywh")


def _as_float(boxes: Tensor) -> Tensor:
    """Promote to float32 unless already float32/float64 (fp16/bf16/int are computed in float32)."""
    return boxes if boxes.dtype in (torch.float32, torch.float64) else boxes.float()


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert ``Tensor[N, 4]`` boxes between ``"xyxy"``, ``"xywh"`` and ``"cxcywh"``.

    Example:
        >>> box_convert(torch.tensor([[10.0, 20.0, 4.0, 6.0]]), "cxcywh", "xyxy")
        tensor([[ 8., 17., 12., 23.]])
    """
    for arg, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in _FORMATS:
            raise ValueError(f"{arg} must be one of {_FORMATS}, got {fmt!r}")
    check_boxes(boxes)
    if in_fmt == out_fmt:
        return boxes.clone()
    a, b, c, d = boxes.unbind(-1)
    if in_fmt == "xywh":
        xyxy = torch.stack((a, b, a + c, b + d), dim=-1)
    elif in_fmt == "cxcywh":
        xyxy = torch.stack((a - c / 2, b - d / 2, a + c / 2, b + d / 2), dim=-1)
    else:
        xyxy = boxes
    x1, y1, x2, y2 = xyxy.unbind(-1)
    if out_fmt == "xyxy":
        return xyxy.clone() if xyxy is boxes else xyxy
    if out_fmt == "xywh":
        return torch.stack((x1, y1, x2 - x1, y2 - y1), dim=-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``Tensor[N, 4]`` xyxy boxes → ``Tensor[N]``; inverted sides count as zero width/height.

    Example:
        >>> box_area(torch.tensor([[0.0, 0.0, 2.0, 3.0], [5.0, 5.0, 4.0, 9.0]]))
        tensor([6., 0.])
    """
    check_boxes(boxes)
    boxes = _as_float(boxes)
    return (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection-over-union of xyxy boxes: ``Tensor[N, 4]``, ``Tensor[M, 4]`` → ``Tensor[N, M]``.

    A pair whose union is zero (two zero-area boxes) has IoU 0, never NaN.

    Example:
        >>> box_iou(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), torch.tensor([[1.0, 0.0, 3.0, 2.0]]))
        tensor([[0.3333]])
    """
    check_boxes(boxes1, "boxes1")
    check_boxes(boxes2, "boxes2")
    check_same_device(("boxes1", boxes1), ("boxes2", boxes2))
    dtype = torch.promote_types(_as_float(boxes1).dtype, _as_float(boxes2).dtype)
    boxes1, boxes2 = boxes1.to(dtype), boxes2.to(dtype)
    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(dtype).tiny), torch.zeros_like(inter))
