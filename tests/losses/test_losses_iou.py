"""GIoU / DIoU / CIoU losses: torchvision goldens, loop reference, degenerate boxes, empty, gradcheck."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import box_formulas as bf
from running_error import assert_formulas_agree, exact
from running_error_grad import Dual, assert_gradients_agree
from visionkit.losses import CIoULoss, DIoULoss, GIoULoss, ciou_loss, diou_loss, giou_loss

GOLDEN = torch.load(
    Path(__file__).resolve().parents[1] / "data" / "torchvision_roi_golden.pt", weights_only=True
)
LOSSES = {"giou": giou_loss, "diou": diou_loss, "ciou": ciou_loss}


def _reference(kind, a, b):
    """One pair at a time, straight from the papers' definitions (no eps: test pairs have area > 0)."""
    ax1, ay1, ax2, ay2 = a.tolist()
    bx1, by1, bx2, by2 = b.tolist()
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    iou = inter / union
    cx1, cy1, cx2, cy2 = min(ax1, bx1), min(ay1, by1), max(ax2, bx2), max(ay2, by2)
    if kind == "giou":
        hull = (cx2 - cx1) * (cy2 - cy1)
        return 1 - iou + (hull - union) / hull
    dx, dy = (ax1 + ax2 - bx1 - bx2) / 2, (ay1 + ay2 - by1 - by2) / 2  # squares as products below
    diou = 1 - iou + (dx * dx + dy * dy) / ((cx2 - cx1) * (cx2 - cx1) + (cy2 - cy1) * (cy2 - cy1))
    if kind == "diou":
        return diou
    gap = math.atan((bx2 - bx1) / (by2 - by1)) - math.atan((ax2 - ax1) / (ay2 - ay1))
    v = 4 / math.pi**2 * (gap * gap)
    return diou + v / (1 - iou + v) * v if v > 0 else diou


@pytest.mark.parametrize("kind", ["giou", "diou", "ciou"])
def test_matches_torchvision_golden(kind):
    # torchvision adds eps=1e-7 to each denominator (areas here are 0.25..70); we divide exactly: the gap
    # of the two formulas, computed from the data, plus both running bounds (tests/box_formulas.py).
    boxes1 = GOLDEN["iou_loss/boxes1"].clone().requires_grad_()
    loss = LOSSES[kind](boxes1, GOLDEN["iou_loss/boxes2"])
    assert_formulas_agree(
        loss,
        pair_formula(kind, boxes1.detach(), GOLDEN["iou_loss/boxes2"], ours=True),
        GOLDEN[f"iou_loss/{kind}/out"],
        pair_formula(kind, boxes1.detach(), GOLDEN["iou_loss/boxes2"], ours=False),
    )
    weight = GOLDEN[f"iou_loss/{kind}/weight"]
    (loss * weight).sum().backward()
    # the gradients: both formulas differentiated in forward mode with running error bounds
    # (tests/running_error_grad.py), the gap of their exact derivatives plus both bounds
    ours, theirs = (
        pair_gradient(kind, boxes1.detach(), GOLDEN["iou_loss/boxes2"], weight, flag)
        for flag in (True, False)
    )
    assert_gradients_agree(boxes1.grad, ours, GOLDEN[f"iou_loss/{kind}/grad"], theirs)


@pytest.mark.parametrize("kind", ["giou", "diou", "ciou"])
def test_matches_pairwise_reference(kind):
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(30, 2, generator=generator, dtype=torch.float64) * 20
    boxes1 = torch.cat((xy, xy + torch.rand(30, 2, generator=generator, dtype=torch.float64) * 10 + 0.1), 1)
    xy = torch.rand(30, 2, generator=generator, dtype=torch.float64) * 20
    boxes2 = torch.cat((xy, xy + torch.rand(30, 2, generator=generator, dtype=torch.float64) * 10 + 0.1), 1)
    expected = torch.tensor(
        [_reference(kind, a, b) for a, b in zip(boxes1, boxes2, strict=True)], dtype=torch.float64
    )
    # the loop's operation order differs (centre differences, no clamps): two formulas, both bounded
    assert_formulas_agree(
        LOSSES[kind](boxes1, boxes2),
        pair_formula(kind, boxes1, boxes2, ours=True),
        expected,
        lambda dtype: bf.loop_loss(kind, bf.corners(boxes1, dtype), bf.corners(boxes2, dtype)),
    )
    # Identical boxes: loss 0 exactly (IoU = A/A = 1, zero distance and aspect gap: see box_formulas);
    # the loss is bounded by 2 (GIoU) / 2 (DIoU) for disjoint boxes.
    assert torch.equal(LOSSES[kind](boxes1, boxes1), torch.zeros(len(boxes1), dtype=torch.float64))
    assert (LOSSES[kind](boxes1, boxes2) <= 2 + 1).all()


@pytest.mark.parametrize("kind", ["giou", "diou", "ciou"])
def test_degenerate_boxes_are_finite(kind):
    boxes1 = torch.tensor(
        [[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 1.0, 1.0]], requires_grad=True
    )
    boxes2 = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    loss = LOSSES[kind](boxes1, boxes2)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(boxes1.grad).all()


@pytest.mark.parametrize("kind", ["giou", "diou", "ciou"])
def test_empty_fp16_and_integer_inputs(kind):
    empty = torch.zeros(0, 4, requires_grad=True)
    loss = LOSSES[kind](empty, torch.zeros(0, 4), reduction="mean")
    assert loss.item() == 0.0
    loss.backward()
    assert LOSSES[kind](empty, torch.zeros(0, 4)).shape == (0,)
    half = torch.tensor([[0.0, 0.0, 2000.0, 2000.0]], dtype=torch.float16)
    assert LOSSES[kind](half, half + 100).dtype == torch.float32
    integer = torch.tensor([[0, 0, 4, 4]])
    # integer boxes are converted to float32 first: the same operations on the same numbers
    assert torch.equal(LOSSES[kind](integer, integer + 1), LOSSES[kind](integer.float(), integer.float() + 1))


def test_gradcheck_float64():
    generator = torch.Generator().manual_seed(1)
    xy = torch.rand(5, 2, generator=generator, dtype=torch.float64) * 5
    boxes1 = torch.cat((xy, xy + torch.rand(5, 2, generator=generator, dtype=torch.float64) * 4 + 1), 1)
    boxes2 = boxes1 + torch.randn(5, 4, generator=generator, dtype=torch.float64)
    boxes1.requires_grad_()
    assert torch.autograd.gradcheck(lambda b: giou_loss(b, boxes2, "mean"), (boxes1,))
    assert torch.autograd.gradcheck(lambda b: diou_loss(b, boxes2, "mean"), (boxes1,))


def pair_gradient(kind, boxes1, boxes2, weight, ours):
    """``d(Σ weight·loss)/d boxes1`` of our or torchvision's formula (float64, 4 directions per row)."""
    first = Dual.variable(boxes1, torch.float64, directions=4)
    second = Dual.constant(exact(boxes2, torch.float64), first)
    return bf.loss(kind, first, second, ours) * exact(weight, torch.float64)


def pair_formula(kind, boxes1, boxes2, ours):
    """Our loss (``1 − elementwise GIoU/DIoU/CIoU``; exactly 0 for a box paired with itself) or
    torchvision's (whose eps makes that pair inexact), per matched pair, by dtype."""
    if ours:
        return bf.elementwise(lambda b1, b2, _: bf.loss(kind, b1, b2), boxes1, boxes2)
    return lambda dtype: bf.loss(kind, bf.corners(boxes1, dtype), bf.corners(boxes2, dtype), ours=False)


def _aspect_penalty(boxes1, boxes2):
    w1, h1 = boxes1[:, 2] - boxes1[:, 0], boxes1[:, 3] - boxes1[:, 1]
    w2, h2 = boxes2[:, 2] - boxes2[:, 0], boxes2[:, 3] - boxes2[:, 1]
    return 4 / math.pi**2 * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2


def test_ciou_gradient_is_that_of_the_loss_with_alpha_frozen():
    # CIoU's alpha is a constant by design (no gradient), so the loss's gradient is that of
    # DIoU + alpha0 * v with alpha0 fixed at the evaluation point: check it against that frozen
    # function's derivative, computed independently (forward mode, test-written v with atan(w/h)).
    generator = torch.Generator().manual_seed(2)
    xy = torch.rand(4, 2, generator=generator, dtype=torch.float64) * 5
    boxes1 = torch.cat((xy, xy + torch.rand(4, 2, generator=generator, dtype=torch.float64) * 4 + 1), 1)
    boxes2 = boxes1 + torch.randn(4, 4, generator=generator, dtype=torch.float64) * 0.7
    v0 = _aspect_penalty(boxes1, boxes2)
    iou0 = torch.tensor(
        [_reference_iou(a, b) for a, b in zip(boxes1, boxes2, strict=True)], dtype=torch.float64
    )
    alpha0 = v0 / (1 - iou0 + v0)

    analytic = boxes1.clone().requires_grad_()
    ciou_loss(analytic, boxes2, "sum").backward()
    ours = pair_gradient("ciou", boxes1, boxes2, torch.ones(4, dtype=torch.float64), ours=True)
    frozen = frozen_derivative(boxes1, boxes2, alpha0)
    # alpha0 comes from the loop (atan(w/h)) and ours from atan2(w, h): alike to rounding, a gap of
    # values that only scales the frozen term; the derivatives' gap is computed from the data
    assert_gradients_agree(analytic.grad, ours, frozen.t.reshape(4, 4), frozen)


def frozen_derivative(boxes1, boxes2, alpha0):
    """Forward-mode derivative of Σ (DIoU loss + alpha0·v), v = 4/π²·(atan(w2/h2) − atan(w1/h1))²."""
    first = Dual.variable(boxes1, torch.float64, directions=4)
    second = Dual.constant(exact(boxes2, torch.float64), first)
    w1, h1 = first[..., 2] - first[..., 0], first[..., 3] - first[..., 1]
    w2, h2 = second[..., 2] - second[..., 0], second[..., 3] - second[..., 1]
    v = (4 / math.pi**2) * ((w2 / h2).atan() - (w1 / h1).atan()).square()
    return bf.loss("diou", first, second) + v * exact(alpha0, torch.float64)


def _reference_iou(a, b):
    ax1, ay1, ax2, ay2 = a.tolist()
    bx1, by1, bx2, by2 = b.tolist()
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    return inter / ((ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter)


def test_modules_and_bad_input():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 4.0]])
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
    for module, fn in ((GIoULoss(), giou_loss), (DIoULoss(), diou_loss), (CIoULoss(), ciou_loss)):
        assert torch.equal(module(a, b), fn(a, b, "mean"))
    assert "reduction='sum'" in repr(GIoULoss("sum"))
    with pytest.raises(ValueError, match="boxes1"):
        giou_loss(torch.zeros(2, 5), b)
    with pytest.raises(ValueError, match="same shape"):
        diou_loss(a, b[:1])
    with pytest.raises(ValueError, match="reduction"):
        ciou_loss(a, b, reduction="avg")
    with pytest.raises(ValueError, match=r"boxes1.*boxes2"):
        giou_loss(a, b.double())  # mixed dtypes: one error naming both tensors
    with pytest.raises(ValueError, match=r"boxes1.*boxes2"):
        giou_loss(a, b.to("meta"))
