"""The overlap formulas of ``visionkit.ops.boxes`` and of torchvision, written once more in
:class:`running_error.Bounded` arithmetic, operation by operation in each library's order, so that a test
gets the error bound of an evaluation in a given dtype (used by tests/ops and tests/losses).

Ours (``_iou_parts``, ``_giou``, ``_diou_parts``, ``_ciou``): widths clamped at 0, ``_safe_divide`` (0
where the denominator is 0), ``atan2(w, h)``. torchvision 0.29 (``torchvision/ops/boxes.py``): no clamp
of the box widths, plain division, ``eps = 1e-7`` added to the DIoU diagonal and the CIoU ``alpha``
denominator, ``atan(w / h)``.
"""

from __future__ import annotations

import math

import torch

from running_error import Bounded, exact
from running_error import safe_divide as _bounded_safe_divide
from running_error_grad import Dual, dual_safe_divide


def safe_divide(numerator, denominator):
    """The library's ``_safe_divide`` for values (:class:`Bounded`) or values with derivatives (Dual)."""
    if isinstance(numerator, Dual) or isinstance(denominator, Dual):
        return dual_safe_divide(numerator, denominator)
    return _bounded_safe_divide(numerator, denominator)


def detach(quantity):
    """``torch.no_grad()``: no derivative (a plain value is unchanged)."""
    return quantity.detach() if isinstance(quantity, Dual) else quantity


TORCHVISION_EPS = 1e-7


def corners(boxes: torch.Tensor, dtype: torch.dtype) -> Bounded:
    """Box coordinates given exactly in ``dtype`` (the inputs of both evaluations)."""
    return exact(boxes, dtype)


def _widths(b: Bounded, clamp: bool) -> tuple[Bounded, Bounded]:
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return (w.clamp(min=0), h.clamp(min=0)) if clamp else (w, h)


def iou_parts(b1: Bounded, b2: Bounded, ours: bool = True) -> tuple[Bounded, Bounded]:
    """Union and IoU of broadcast ``[..., 4]`` boxes."""
    w1, h1 = _widths(b1, clamp=ours)
    w2, h2 = _widths(b2, clamp=ours)
    area1, area2 = w1 * h1, w2 * h2
    iw = b1[..., 2].minimum(b2[..., 2]) - b1[..., 0].maximum(b2[..., 0])
    ih = b1[..., 3].minimum(b2[..., 3]) - b1[..., 1].maximum(b2[..., 1])
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    union = area1 + area2 - inter
    return union, safe_divide(inter, union) if ours else inter / union


def _enclosing(b1: Bounded, b2: Bounded) -> tuple[Bounded, Bounded]:
    cw = b1[..., 2].maximum(b2[..., 2]) - b1[..., 0].minimum(b2[..., 0])
    ch = b1[..., 3].maximum(b2[..., 3]) - b1[..., 1].minimum(b2[..., 1])
    return cw.clamp(min=0), ch.clamp(min=0)


def iou(b1: Bounded, b2: Bounded, ours: bool = True) -> Bounded:
    return iou_parts(b1, b2, ours)[1]


def giou(b1: Bounded, b2: Bounded, ours: bool = True) -> Bounded:
    union, value = iou_parts(b1, b2, ours)
    cw, ch = _enclosing(b1, b2)
    hull = cw * ch
    return value - (safe_divide(hull - union, hull) if ours else (hull - union) / hull)


def _diou_parts(b1: Bounded, b2: Bounded, ours: bool) -> tuple[Bounded, Bounded]:
    value = iou(b1, b2, ours)
    cw, ch = _enclosing(b1, b2)
    diagonal = cw.square() + ch.square()
    dx = (b1[..., 0] + b1[..., 2]) / 2 - (b2[..., 0] + b2[..., 2]) / 2
    dy = (b1[..., 1] + b1[..., 3]) / 2 - (b2[..., 1] + b2[..., 3]) / 2
    distance = dx.square() + dy.square()
    if ours:
        return value, safe_divide(distance, diagonal)
    return value, distance / (diagonal + TORCHVISION_EPS)


def diou(b1: Bounded, b2: Bounded, ours: bool = True) -> Bounded:
    value, penalty = _diou_parts(b1, b2, ours)
    return value - penalty


def ciou(b1: Bounded, b2: Bounded, ours: bool = True) -> Bounded:
    value, penalty = _diou_parts(b1, b2, ours)
    w1, h1 = _widths(b1, clamp=ours)
    w2, h2 = _widths(b2, clamp=ours)
    if ours:
        gap = w2.atan2(h2) - w1.atan2(h1)
        v = (4 / math.pi**2) * gap.square()
        alpha = detach(safe_divide(v, 1 - value + v))
        return value - penalty - alpha * v
    gap = (w1 / h1).atan() - (w2 / h2).atan()
    v = (4 / math.pi**2) * gap.square()
    alpha = detach(v / (1 - value + v + TORCHVISION_EPS))
    return (value - penalty) - alpha * v


def ioa(b1: Bounded, b2: Bounded) -> Bounded:
    """Intersection over the first box's area (ours only)."""
    iw = b1[..., 2].minimum(b2[..., 2]) - b1[..., 0].maximum(b2[..., 0])
    ih = b1[..., 3].minimum(b2[..., 3]) - b1[..., 1].maximum(b2[..., 1])
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    w1, h1 = _widths(b1, clamp=True)
    return safe_divide(inter, w1 * h1)


def _identical_pairs_are_exact(result: Bounded, boxes1: torch.Tensor, boxes2: torch.Tensor) -> Bounded:
    """A box paired with itself gets the same result in every dtype, exactly: the area ``A``, the
    intersection and the hull are one and the same rounded product, ``A + A − A = A`` and ``A / A = 1``
    are exact, the centre distance and the aspect gap are exactly 0 (one function of one input), so IoU,
    GIoU, DIoU and CIoU are exactly 1 (or exactly 0 for a zero-area box, ours) — the running analysis,
    which treats the two operands as independent, cannot see that and leaves the ``1 − IoU + v > 0``
    branch of CIoU undecided there."""
    identical = (boxes1 == boxes2).all(-1)
    result.error = torch.where(identical, 0.0, result.error)
    return result


def pairwise(formula, boxes1: torch.Tensor, boxes2: torch.Tensor, ours: bool = True):
    """``formula`` over all pairs ``[N, M]``, as a function of the dtype of the evaluation."""

    def evaluate(dtype: torch.dtype) -> Bounded:
        b1, b2 = corners(boxes1, dtype)[:, None, :], corners(boxes2, dtype)[None, :, :]
        result = formula(b1, b2) if formula is ioa else formula(b1, b2, ours)
        return result if formula is ioa else _identical_pairs_are_exact(result, boxes1[:, None], boxes2[None])

    return evaluate


def elementwise(formula, boxes1: torch.Tensor, boxes2: torch.Tensor, ours: bool = True):
    """``formula`` of matching rows ``[N]``, as a function of the dtype of the evaluation."""

    def evaluate(dtype: torch.dtype) -> Bounded:
        result = formula(corners(boxes1, dtype), corners(boxes2, dtype), ours)
        return _identical_pairs_are_exact(result, boxes1, boxes2)

    return evaluate


# ------------------------------------------------------------------ losses of matched pairs
def loss(kind: str, b1: Bounded, b2: Bounded, ours: bool = True) -> Bounded:
    """``1 − GIoU/DIoU/CIoU`` (ours, visionkit.losses.iou) or torchvision 0.29's loss formulas, which add
    ``eps = 1e-7`` to the union and the hull as well and add the penalties to ``1 − IoU``."""
    if ours:
        return 1 - {"giou": giou, "diou": diou, "ciou": ciou}[kind](b1, b2)
    w1, h1 = _widths(b1, clamp=False)
    w2, h2 = _widths(b2, clamp=False)
    iw = b1[..., 2].minimum(b2[..., 2]) - b1[..., 0].maximum(b2[..., 0])
    ih = b1[..., 3].minimum(b2[..., 3]) - b1[..., 1].maximum(b2[..., 1])
    inter = iw.clamp(min=0) * ih.clamp(min=0)  # torchvision: 0 unless both > 0, the same numbers
    union = w1 * h1 + w2 * h2 - inter
    value = inter / (union + TORCHVISION_EPS)
    cw, ch = _enclosing(b1, b2)
    if kind == "giou":
        hull = cw * ch
        return 1 - (value - (hull - union) / (hull + TORCHVISION_EPS))
    diagonal = cw.square() + ch.square() + TORCHVISION_EPS
    dx = (b1[..., 2] + b1[..., 0]) / 2 - (b2[..., 0] + b2[..., 2]) / 2
    dy = (b1[..., 3] + b1[..., 1]) / 2 - (b2[..., 1] + b2[..., 3]) / 2
    result = 1 - value + (dx.square() + dy.square()) / diagonal
    if kind == "diou":
        return result
    v = (4 / math.pi**2) * ((w2 / h2).atan() - (w1 / h1).atan()).square()
    alpha = detach(v / (1 - value + v + TORCHVISION_EPS))
    return result + alpha * v


def loop_loss(kind: str, b1: Bounded, b2: Bounded) -> Bounded:
    """The loop reference of tests/losses/test_losses_iou.py, in its order (squares as products)."""
    w1, h1 = _widths(b1, clamp=False)
    w2, h2 = _widths(b2, clamp=False)
    iw = b1[..., 2].minimum(b2[..., 2]) - b1[..., 0].maximum(b2[..., 0])
    ih = b1[..., 3].minimum(b2[..., 3]) - b1[..., 1].maximum(b2[..., 1])
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter
    value = inter / union
    cw = b1[..., 2].maximum(b2[..., 2]) - b1[..., 0].minimum(b2[..., 0])
    ch = b1[..., 3].maximum(b2[..., 3]) - b1[..., 1].minimum(b2[..., 1])
    if kind == "giou":
        hull = cw * ch
        return 1 - value + (hull - union) / hull
    dx = (b1[..., 0] + b1[..., 2] - b2[..., 0] - b2[..., 2]) / 2
    dy = (b1[..., 1] + b1[..., 3] - b2[..., 1] - b2[..., 3]) / 2
    result = 1 - value + (dx * dx + dy * dy) / (cw * cw + ch * ch)
    if kind == "diou":
        return result
    gap = (w2 / h2).atan() - (w1 / h1).atan()
    v = 4 / math.pi**2 * (gap * gap)
    return result + v / (1 - value + v) * v
