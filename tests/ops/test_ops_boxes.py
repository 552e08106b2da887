"""Box ops against slow, obviously-correct Python references (and torchvision golden values)."""

from __future__ import annotations

import doctest
import json
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import box_formulas as bf
from running_error import assert_evaluations_agree, assert_formulas_agree, exact, stack
from running_error_grad import Dual, assert_gradients_agree
from tolerances import assert_within
from visionkit.ops import boxes as box_ops
from visionkit.ops.boxes import (
    box_area,
    box_convert,
    box_ioa,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    elementwise_box_iou,
    elementwise_complete_box_iou,
    elementwise_distance_box_iou,
    elementwise_generalized_box_iou,
    generalized_box_iou,
    remove_small_boxes,
    validate_boxes,
)

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "torchvision_boxes_golden.json"


# ---------------------------------------------------------------- references (plain Python floats)
def ref_area(b: list[float]) -> float:
    return max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0)


def ref_inter(a: list[float], b: list[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(w, 0.0) * max(h, 0.0)


def ref_iou(a: list[float], b: list[float]) -> float:
    inter = ref_inter(a, b)
    union = ref_area(a) + ref_area(b) - inter
    return inter / union if union > 0 else 0.0


def ref_enclosing(a: list[float], b: list[float]) -> tuple[float, float]:
    return max(max(a[2], b[2]) - min(a[0], b[0]), 0.0), max(max(a[3], b[3]) - min(a[1], b[1]), 0.0)


def ref_giou(a: list[float], b: list[float]) -> float:
    cw, ch = ref_enclosing(a, b)
    c = cw * ch
    union = ref_area(a) + ref_area(b) - ref_inter(a, b)
    return ref_iou(a, b) - ((c - union) / c if c > 0 else 0.0)


def ref_diou(a: list[float], b: list[float]) -> float:
    cw, ch = ref_enclosing(a, b)
    diag = cw * cw + ch * ch  # x * x, as torch's x ** 2 computes it (Python's x ** 2 calls libm pow)
    dx, dy = (a[0] + a[2]) / 2 - (b[0] + b[2]) / 2, (a[1] + a[3]) / 2 - (b[1] + b[3]) / 2
    return ref_iou(a, b) - (dx * dx + dy * dy) / diag if diag > 0 else ref_iou(a, b)


def ref_ciou(a: list[float], b: list[float]) -> float:
    iou = ref_iou(a, b)
    wa, ha = max(a[2] - a[0], 0.0), max(a[3] - a[1], 0.0)
    wb, hb = max(b[2] - b[0], 0.0), max(b[3] - b[1], 0.0)
    gap = math.atan2(wb, hb) - math.atan2(wa, ha)
    v = 4 / math.pi**2 * (gap * gap)
    alpha = v / (1 - iou + v) if (1 - iou + v) > 0 else 0.0
    return ref_diou(a, b) - alpha * v


PAIRWISE = [
    (box_iou, ref_iou),
    (generalized_box_iou, ref_giou),
    (distance_box_iou, ref_diou),
    (complete_box_iou, ref_ciou),
    (box_ioa, lambda a, b: ref_inter(a, b) / ref_area(a) if ref_area(a) > 0 else 0.0),
]
ELEMENTWISE = [
    (elementwise_box_iou, ref_iou),
    (elementwise_generalized_box_iou, ref_giou),
    (elementwise_distance_box_iou, ref_diou),
    (elementwise_complete_box_iou, ref_ciou),
]
# The same formulas in running-error arithmetic (tests/box_formulas.py), for the derived bounds.
FORMULAS = {
    box_iou: bf.iou,
    generalized_box_iou: bf.giou,
    distance_box_iou: bf.diou,
    complete_box_iou: bf.ciou,
    box_ioa: bf.ioa,
    elementwise_box_iou: bf.iou,
    elementwise_generalized_box_iou: bf.giou,
    elementwise_distance_box_iou: bf.diou,
    elementwise_complete_box_iou: bf.ciou,
}


def assert_matches_loop_reference(fast, got, want, a, b, pairwise):
    """IoU, GIoU, DIoU and IoA: the references perform the library's IEEE operations in the library's
    order on the same float64 inputs (``x * x`` for squares, the same ``> 0`` branches), and ``+ − × /``
    are correctly rounded on every CPU and kernel, so the results are identical. CIoU differs in one
    operation: ``atan2`` (torch's SLEEF/libm kernel vs Python's libm), each within 1 ulp of the exact
    value; the bound is the running error analysis of the whole CIoU formula in float64
    (:mod:`box_formulas`), for both evaluations: ``2·error₆₄`` (~1e-15 here)."""
    if fast not in (complete_box_iou, elementwise_complete_box_iou):
        assert torch.equal(got, want)
        return
    formula = (bf.pairwise if pairwise else bf.elementwise)(FORMULAS[fast], a, b)
    bound = 2 * formula(torch.float64).error
    assert_within(got, want, bound, fast.__name__)


def random_boxes(
    n: int, seed: int, dtype: torch.dtype = torch.float64, degenerate: bool = True
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * 50
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * 30
    if degenerate and n > 3:
        wh[::4, 0] = 0  # zero-width boxes
        wh[1::5] = 0  # points
    b = torch.cat((xy, xy + wh), dim=1)
    if degenerate and n > 2:
        b[2] = b[0]  # exact duplicate
    return b.to(dtype)


# ---------------------------------------------------------------- values
@pytest.mark.parametrize("fast, ref", PAIRWISE, ids=lambda f: getattr(f, "__name__", "ref"))
def test_pairwise_matches_reference(fast, ref):
    a, b = random_boxes(23, 0), random_boxes(17, 1)
    got = fast(a, b)
    want = torch.tensor([[ref(x, y) for y in b.tolist()] for x in a.tolist()], dtype=torch.float64)
    assert got.shape == (23, 17) and got.dtype == torch.float64
    assert torch.isfinite(got).all()
    assert_matches_loop_reference(fast, got, want, a, b, pairwise=True)


@pytest.mark.parametrize("fast, ref", ELEMENTWISE, ids=lambda f: getattr(f, "__name__", "ref"))
def test_elementwise_matches_reference_and_pairwise_diagonal(fast, ref):
    a, b = random_boxes(31, 2), random_boxes(31, 3)
    got = fast(a, b)
    want = torch.tensor([ref(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True)], dtype=torch.float64)
    assert_matches_loop_reference(fast, got, want, a, b, pairwise=False)


@pytest.mark.parametrize("fast", [f for f, _ in ELEMENTWISE])
def test_elementwise_gradcheck_and_finite_gradients_on_degenerate(fast):
    a = random_boxes(6, 4, degenerate=False).requires_grad_()
    b = random_boxes(6, 5, degenerate=False).requires_grad_()
    if fast is elementwise_complete_box_iou:
        check_ciou_gradient_treats_alpha_as_constant(a, b)
    else:
        assert torch.autograd.gradcheck(fast, (a, b))
    # identical boxes, points and zero-area boxes: values and gradients stay finite
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 2.0, 0.0], [0, 0, 1, 1]], dtype=torch.float64)
    p1, p2 = point.clone().requires_grad_(), point.clone().requires_grad_()
    fast(p1, p2).sum().backward()
    assert torch.isfinite(p1.grad).all() and torch.isfinite(p2.grad).all()


def check_ciou_gradient_treats_alpha_as_constant(a: torch.Tensor, b: torch.Tensor) -> None:
    """CIoU's trade-off weight alpha is not differentiated (Zheng et al. 2020), so gradcheck of the whole
    function must fail by design; check grad(CIoU) = grad(DIoU) - alpha * grad(v) with a test-written v."""

    def aspect_v(x, y):
        wx, hx = x[:, 2] - x[:, 0], x[:, 3] - x[:, 1]
        wy, hy = y[:, 2] - y[:, 0], y[:, 3] - y[:, 1]
        return 4 / math.pi**2 * (torch.atan(wy / hy) - torch.atan(wx / hx)) ** 2

    with torch.no_grad():
        v = aspect_v(a, b)
        alpha = v / (1 - elementwise_box_iou(a, b) + v)
    got = torch.autograd.grad(elementwise_complete_box_iou(a, b).sum(), (a, b))
    want = torch.autograd.grad((elementwise_distance_box_iou(a, b) - alpha * aspect_v(a, b)).sum(), (a, b))
    # both gradients of their formulas in forward mode with running error bounds (8 directions: the
    # coordinates of a and b): the computed gap of the exact derivatives plus both bounds
    first, second = pair_duals(a.detach(), b.detach())
    ours = bf.ciou(first, second)
    gap = (second[..., 2] - second[..., 0]) / (second[..., 3] - second[..., 1])
    v = (4 / math.pi**2) * (
        gap.atan() - ((first[..., 2] - first[..., 0]) / (first[..., 3] - first[..., 1])).atan()
    ).square()
    reference = bf.diou(first, second) - v * bf.detach(v / (1 - bf.iou(first, second) + v))
    assert_gradients_agree(torch.cat(got, 1), ours, torch.cat(want, 1), reference)


def pair_duals(a: torch.Tensor, b: torch.Tensor):
    """Rows of a and b as float64 forward-mode variables: 8 directions, a's 4 coordinates then b's."""
    directions = torch.eye(8, dtype=torch.float64)
    first = Dual(
        exact(a, torch.float64),
        directions[:4].expand(len(a), 4, 8),
        directions[:4].expand(len(a), 4, 8),
        torch.zeros(len(a), 4, 8, dtype=torch.float64),
        0,
    )
    second = Dual(
        exact(b, torch.float64),
        directions[4:].expand(len(b), 4, 8),
        directions[4:].expand(len(b), 4, 8),
        torch.zeros(len(b), 4, 8, dtype=torch.float64),
        0,
    )
    return first, second


def test_zero_area_boxes_have_iou_zero_never_nan():
    z = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0]])
    assert box_iou(z, z).eq(0).all()
    assert elementwise_box_iou(z, z).eq(0).all()
    for fn in (generalized_box_iou, distance_box_iou, complete_box_iou, box_ioa):
        assert torch.isfinite(fn(z, z)).all()


def test_inverted_boxes_fast_path_is_documented_zero_and_validator_names_index():
    good = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    inverted = torch.tensor([[0.0, 0.0, 4.0, 4.0], [3.0, 0.0, 1.0, 4.0], [0.0, 3.0, 4.0, 1.0]])
    assert box_area(inverted).tolist() == [16.0, 0.0, 0.0]
    assert box_iou(good, inverted).tolist() == [[1.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match=r"boxes has 2 inverted box\(es\).*index \[1, 2\]"):
        validate_boxes(inverted)
    with pytest.raises(ValueError, match=r"non-finite.*index \[0\]"):
        validate_boxes(torch.tensor([[0.0, float("nan"), 1.0, 1.0]]))
    assert validate_boxes(good) is good
    validate_boxes(torch.tensor([[2.0, 2.0, 2.0, 2.0]]))  # zero-area is valid


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int32, torch.int64])
def test_low_precision_and_integer_inputs_compute_in_float32(dtype):
    a = (random_boxes(8, 6, degenerate=False) * 4).round()
    b = (random_boxes(5, 7, degenerate=False) * 4).round()
    for fn, _ in PAIRWISE:
        got = fn(a.to(dtype), b.to(dtype))
        assert got.dtype == torch.float32
        a64, b64 = a.to(dtype).double(), b.to(dtype).double()
        # The same formula in float32 and in float64 on the same (integer) inputs: each within its running
        # error bound of the exact value (integer widths, areas and intersections are exact in both).
        assert_evaluations_agree(
            got, bf.pairwise(FORMULAS[fn], a64, b64), torch.float32, fn(a64, b64), what=fn.__name__
        )
    assert box_area(a.to(dtype)).dtype == torch.float32


def test_float64_is_preserved_and_precise():
    # float32 cannot resolve 1e8 + 0.5, float64 can
    a = torch.tensor([[1e8, 1e8, 1e8 + 1, 1e8 + 1]], dtype=torch.float64)
    b = a + torch.tensor([0.5, 0.0, 0.5, 0.0], dtype=torch.float64)
    assert box_iou(a, b).dtype == torch.float64
    # widths 1, intersection 0.5 and union 1.5 are exact in float64, so the IoU is the one rounding of 1/3
    assert box_iou(a, b).item() == 1 / 3


def test_conversions_round_trip_and_values():
    b = random_boxes(20, 8)
    for fmt in ("xywh", "cxcywh"):
        round_trip = box_convert(box_convert(b, "xyxy", fmt), fmt, "xyxy")
        assert_evaluations_agree(
            round_trip, lambda dtype, f=fmt: round_trip_formula(b, f, dtype), torch.float64
        )
    xywh = box_convert(torch.tensor([[1.0, 2.0, 4.0, 8.0]]), "xyxy", "xywh")
    assert xywh.tolist() == [[1.0, 2.0, 3.0, 6.0]]
    assert box_convert(torch.tensor([[1.0, 2.0, 4.0, 8.0]]), "xyxy", "cxcywh").tolist() == [[2.5, 5, 3, 6]]
    assert box_convert(b.half(), "xyxy", "cxcywh").dtype == torch.float16
    assert box_convert(torch.tensor([[1, 2, 3, 4]]), "xyxy", "cxcywh").dtype == torch.float32
    with pytest.raises(ValueError, match="in_fmt must be one of"):
        box_convert(b, "xyxyz", "xyxy")


def round_trip_formula(boxes: torch.Tensor, fmt: str, dtype: torch.dtype):
    """xyxy → ``fmt`` → xyxy in box_convert's order; its exact value is ``boxes`` itself."""
    x1, y1, x2, y2 = (bf.corners(boxes, dtype)[:, i] for i in range(4))
    if fmt == "xywh":
        w, h = x2 - x1, y2 - y1
        coordinates = (x1, y1, x1 + w, y1 + h)
    else:
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        coordinates = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    return stack(coordinates, dim=1)


def test_clip_and_remove_small():
    b = torch.tensor([[-5.0, -1.0, 50.0, 8.0], [3.0, 3.0, 3.5, 9.0], [1.0, 1.0, 3.0, 3.0]])
    assert clip_boxes_to_image(b, (10, 20)).tolist() == [[0, 0, 20, 8], [3, 3, 3.5, 9], [1, 1, 3, 3]]
    assert remove_small_boxes(b, 1.0).tolist() == [0, 2]
    assert remove_small_boxes(b, 2.0).dtype == torch.int64
    with pytest.raises(ValueError, match=r"size must be \(height, width\)"):
        clip_boxes_to_image(b, (10,))


def test_empty_inputs_give_shaped_empty_outputs():
    e, b = torch.zeros(0, 4), random_boxes(3, 9).float()
    for fn, _ in PAIRWISE:
        assert fn(e, b).shape == (0, 3) and fn(b, e).shape == (3, 0)
    for fn, _ in ELEMENTWISE:
        assert fn(e, e).shape == (0,)
    assert box_area(e).shape == (0,) and box_convert(e, "xyxy", "cxcywh").shape == (0, 4)
    assert remove_small_boxes(e, 1.0).shape == (0,)


def test_bad_shapes_dtypes_devices_name_the_argument():
    good = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"boxes2 must have shape \[N, 4\], got \[2, 5\]"):
        box_iou(good, torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"boxes1 must have shape \[N, 4\], got \[4\]"):
        generalized_box_iou(torch.zeros(4), good)
    with pytest.raises(TypeError, match=r"boxes1 must be a torch\.Tensor"):
        box_iou([[0, 0, 1, 1]], good)
    with pytest.raises(
        ValueError, match=r"boxes1 has dtype torch\.float32 but boxes2 has dtype torch\.float64"
    ):
        box_iou(good, good.double())
    with pytest.raises(ValueError, match=r"same shape.*\[2, 4\] and \[3, 4\]"):
        elementwise_generalized_box_iou(good, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="boxes1 is on meta but boxes2 is on cpu"):
        box_iou(good.to("meta"), good)


def test_golden_values_from_torchvision():
    if not GOLDEN.exists():
        pytest.skip("golden file not generated (tests/data/make_torchvision_boxes_golden.py)")
    golden = json.loads(GOLDEN.read_text())
    a = torch.tensor(golden["boxes1"], dtype=torch.float64)
    b = torch.tensor(golden["boxes2"], dtype=torch.float64)
    for name, fn in [
        ("box_iou", box_iou),
        ("generalized_box_iou", generalized_box_iou),
        ("distance_box_iou", distance_box_iou),
        ("complete_box_iou", complete_box_iou),
    ]:
        want = torch.tensor(golden[name], dtype=torch.float64)
        if name in ("box_iou", "generalized_box_iou"):
            # torchvision 0.29 performs our IEEE operations in our order on these (positive-area) boxes;
            # + − × / are correctly rounded on any CPU, so its float64 golden is reproduced exactly.
            assert torch.equal(fn(a, b), want), name
            continue
        # torchvision adds eps = 1e-7 to the DIoU diagonal and the CIoU alpha denominator and uses
        # atan(w / h) for our atan2(w, h); the bound is the difference of the two formulas computed from the
        # data plus the running error bounds of both evaluations (tests/box_formulas.py).
        formula = FORMULAS[fn]
        assert_formulas_agree(
            fn(a, b), bf.pairwise(formula, a, b), want, bf.pairwise(formula, a, b, ours=False), what=name
        )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(*[st.integers(-20, 20)] * 2, *[st.integers(0, 15)] * 2),
        min_size=0,
        max_size=12,
    ),
    st.lists(st.tuples(*[st.integers(-20, 20)] * 2, *[st.integers(0, 15)] * 2), min_size=1, max_size=8),
)
def test_box_iou_hypothesis(first, second):
    def to_boxes(rows):
        return torch.tensor([[x, y, x + w, y + h] for x, y, w, h in rows], dtype=torch.float64).reshape(-1, 4)

    a, b = to_boxes(first), to_boxes(second)
    got = box_iou(a, b)
    want = torch.tensor([[ref_iou(x, y) for y in b.tolist()] for x in a.tolist()], dtype=torch.float64)
    assert torch.equal(got, want.reshape(got.shape))  # the reference's operations, in the same order
    assert ((got >= 0) & (got <= 1)).all()
    # swapping the arguments only swaps the operands of max, min and the commutative + and ×: exact
    assert torch.equal(box_iou(b, a), got.T)


def test_docstring_examples_run():
    assert doctest.testmod(box_ops, extraglobs={"torch": torch}, optionflags=doctest.ELLIPSIS).failed == 0
