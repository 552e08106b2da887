"""Tests for visionkit.ops.box_coder: loop reference, round trips, torchvision golden, clamping, errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from running_error import Bounded, assert_bounded, exact, stack
from tolerances import LIBM_ULPS, eps
from visionkit.ops.box_coder import DEFAULT_BBOX_XFORM_CLIP, BoxCoder, decode_boxes, encode_boxes

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "torchvision_coder_golden.pt"


# ------------------------------------------------------------------ slow, obviously correct references
def reference_encode(gt, proposals, weights):
    wx, wy, ww, wh = weights
    rows = []
    for (g1, g2, g3, g4), (p1, p2, p3, p4) in zip(gt.tolist(), proposals.tolist(), strict=True):
        pw, ph, gw, gh = p3 - p1, p4 - p2, g3 - g1, g4 - g2
        px, py, gx, gy = p1 + pw / 2, p2 + ph / 2, g1 + gw / 2, g2 + gh / 2
        rows.append(
            [wx * (gx - px) / pw, wy * (gy - py) / ph, ww * math.log(gw / pw), wh * math.log(gh / ph)]
        )
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def reference_decode(deltas, boxes, weights):
    clip = math.log(1000 / 16)  # written out, not imported from the module under test
    wx, wy, ww, wh = weights
    rows = []
    for row, (b1, b2, b3, b4) in zip(deltas.tolist(), boxes.tolist(), strict=True):
        width, height = b3 - b1, b4 - b2
        cx, cy = b1 + width / 2, b2 + height / 2
        out = []
        for c in range(len(row) // 4):
            tx, ty, tw, th = row[4 * c : 4 * c + 4]
            x, y = tx / wx * width + cx, ty / wy * height + cy
            w, h = math.exp(min(tw / ww, clip)) * width, math.exp(min(th / wh, clip)) * height
            out += [x - w / 2, y - h / 2, x + w / 2, y + h / 2]
        rows.append(out)
    return torch.tensor(rows, dtype=torch.float64).reshape(len(rows), -1)


# ------------------------------------------------------------------ the formulas in running-error arithmetic
# (tests/running_error.py): the operations of encode_boxes / decode_boxes in their order, which are also
# torchvision 0.29's (BoxCoder.encode_single / decode_single: 0.5 * (exp(dw) * w) there, (0.5 * exp(dw)) * w
# here, equal since scaling by 2 is exact). They bound the error of an evaluation in a given dtype; two
# evaluations of one formula differ by at most the sum of their bounds.
def encode_formula(gt, proposals, weights, dtype):
    g, p = exact(gt, dtype), exact(proposals, dtype)
    pw, ph, gw, gh = p[:, 2] - p[:, 0], p[:, 3] - p[:, 1], g[:, 2] - g[:, 0], g[:, 3] - g[:, 1]
    px, py, gx, gy = p[:, 0] + 0.5 * pw, p[:, 1] + 0.5 * ph, g[:, 0] + 0.5 * gw, g[:, 1] + 0.5 * gh
    wx, wy, ww, wh = weights
    return stack([wx * (gx - px) / pw, wy * (gy - py) / ph, ww * (gw / pw).log(), wh * (gh / ph).log()], 1)


def decode_formula(deltas, boxes, weights, dtype, clip=None):
    """``deltas`` exact in ``dtype`` or already a :class:`Bounded` (the round trip)."""
    d = deltas if isinstance(deltas, Bounded) else exact(deltas, dtype)
    b = exact(boxes, dtype)
    width, height = (b[:, 2] - b[:, 0])[:, None], (b[:, 3] - b[:, 1])[:, None]
    cx, cy = b[:, 0][:, None] + 0.5 * width, b[:, 1][:, None] + 0.5 * height
    clip = DEFAULT_BBOX_XFORM_CLIP if clip is None else clip
    wx, wy, ww, wh = weights
    columns = []
    for c in range(d.value.shape[1] // 4):
        x, y = d[:, 4 * c : 4 * c + 1] / wx * width + cx, d[:, 4 * c + 1 : 4 * c + 2] / wy * height + cy
        half_w = 0.5 * (d[:, 4 * c + 2 : 4 * c + 3] / ww).clamp(max=clip).exp() * width
        half_h = 0.5 * (d[:, 4 * c + 3 : 4 * c + 4] / wh).clamp(max=clip).exp() * height
        columns += [x - half_w, y - half_h, x + half_w, y + half_h]
    return stack(columns, 2).flatten()


def random_boxes(count, seed, dtype=torch.float64, min_size=0.5, max_size=200.0):
    generator = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=generator, dtype=torch.float64) * 500
    wh = torch.rand(count, 2, generator=generator, dtype=torch.float64) * (max_size - min_size) + min_size
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 0.5, 3.0, 7.0)]


@pytest.mark.parametrize("weights", WEIGHTS)
def test_encode_and_decode_match_loop_reference(weights):
    gt, proposals = random_boxes(50, 0), random_boxes(50, 1)
    # The loop does the library's IEEE operations in its order; only log and exp differ (torch's kernel vs
    # Python's libm, 1 ulp each): tx, ty are identical, tw, th and the decoded boxes within twice the
    # float64 running bound of the formula.
    encoded, expected = encode_boxes(gt, proposals, weights), reference_encode(gt, proposals, weights)
    assert torch.equal(encoded[:, :2], expected[:, :2])
    assert_bounded(encoded, expected, 2 * encode_formula(gt, proposals, weights, torch.float64).error)
    deltas = torch.randn(50, 12, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 3
    expected = reference_decode(deltas, proposals, weights)
    bound = 2 * decode_formula(deltas, proposals, weights, torch.float64).error
    assert_bounded(decode_boxes(deltas, proposals, weights), expected, bound)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_round_trip_is_identity(weights):
    # sizes within a factor 40 of each other: below the exp clamp (62.5x), where decoding inverts encoding
    gt, proposals = random_boxes(200, 3, min_size=5.0), random_boxes(200, 4, min_size=5.0)
    decoded = decode_boxes(encode_boxes(gt, proposals, weights), proposals, weights)
    assert_round_trip(decoded, gt, proposals, weights, torch.float64)
    gt32, proposals32 = gt.float(), proposals.float()
    decoded32 = decode_boxes(encode_boxes(gt32, proposals32, weights), proposals32, weights)
    assert decoded32.dtype == torch.float32
    assert_round_trip(decoded32, gt32, proposals32, weights, torch.float32)


def below_clip(gt, proposals, weights, dtype) -> bool:
    """Whether every size delta, exact and as evaluated in ``dtype``, is below the clamp of decoding."""
    encoded = encode_formula(gt.double(), proposals.double(), weights, dtype)
    sizes = stack([encoded[:, 2] / weights[2], encoded[:, 3] / weights[3]], 1)
    return bool((sizes.value + 2 * sizes.error < DEFAULT_BBOX_XFORM_CLIP).all())


def assert_round_trip(decoded, gt, proposals, weights, dtype):
    """decode(encode(gt)) is gt in exact arithmetic while the size deltas stay below the clamp, so the
    evaluation in ``dtype`` is within its running bound of gt itself."""
    assert below_clip(gt, proposals, weights, dtype), "a size delta may be clamped: not invertible"
    encoded = encode_formula(gt.double(), proposals.double(), weights, dtype)
    bound = decode_formula(encoded, proposals.double(), weights, dtype).error
    assert_bounded(decoded, gt, bound)


def clip_input(clip: float, dtype: torch.dtype) -> Bounded:
    """A clip given as Python's ``math.log`` of a number: within ``LIBM_ULPS`` ulp of the exact
    logarithm, then rounded to ``dtype`` by torch's clamp."""
    error = clip * LIBM_ULPS * eps(torch.float64) + (0.0 if dtype == torch.float64 else clip * eps(dtype) / 2)
    return Bounded(torch.tensor(clip, dtype=torch.float64), error, dtype)


@settings(max_examples=80, deadline=None)
@given(
    st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.floats(0.01, 1e3), st.floats(0.01, 1e3)),
    st.tuples(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.floats(0.01, 1e3), st.floats(0.01, 1e3)),
)
def test_round_trip_fuzz(gt_xywh, proposal_xywh):
    def to_xyxy(x, y, w, h):
        return [x, y, x + w, y + h]

    gt = torch.tensor([to_xyxy(*gt_xywh)], dtype=torch.float64)
    proposals = torch.tensor([to_xyxy(*proposal_xywh)], dtype=torch.float64)
    deltas = encode_boxes(gt, proposals)
    bound = 2 * encode_formula(gt, proposals, (1, 1, 1, 1), torch.float64).error  # only log differs
    assert_bounded(deltas, reference_encode(gt, proposals, (1, 1, 1, 1)), bound)
    if below_clip(gt, proposals, (1, 1, 1, 1), torch.float64):  # beyond the clamp: not invertible
        assert_round_trip(decode_boxes(deltas, proposals), gt, proposals, (1, 1, 1, 1), torch.float64)


def test_huge_deltas_are_clamped_and_finite():
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [10.0, 20.0, 30.0, 60.0]])
    deltas = torch.tensor([[0.0, 0.0, 1e30, 1e4], [0.0, 0.0, -1e30, 88.0]])
    decoded = decode_boxes(deltas, boxes)
    assert torch.isfinite(decoded).all()
    widths = decoded[:, 2] - decoded[:, 0]
    heights = decoded[:, 3] - decoded[:, 1]
    # 16 * 62.5, exp(-huge) = 0 exactly, and 40 * 62.5: the float32 decode with the clip as an input
    # that is log(62.5) up to Python's log (LIBM_ULPS ulp): within the formula's float32 running bound.
    clip = clip_input(DEFAULT_BBOX_XFORM_CLIP, torch.float32)
    formula = decode_formula(deltas.double(), boxes.double(), (1, 1, 1, 1), torch.float32, clip=clip)
    extent = stack([formula[:, 2] - formula[:, 0], formula[:, 3] - formula[:, 1]], 1)
    expected = torch.tensor([[1000.0, 1000.0], [0.0, 40 * 62.5]])
    assert_bounded(torch.stack([widths, heights], 1), expected, extent.error)
    # fp16 deltas (mixed precision) stay finite too; large boxes would overflow fp16 arithmetic without
    # the float32 computation
    half = decode_boxes(
        torch.full((1, 4), 60000.0, dtype=torch.float16), torch.tensor([[0.0, 0.0, 500.0, 500.0]])
    )
    assert torch.isfinite(half).all()
    # a user-chosen clip is honoured
    custom = decode_boxes(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), boxes[:1], bbox_xform_clip=math.log(2.0))
    clip = clip_input(math.log(2.0), torch.float32)
    bound = decode_formula(torch.tensor([[0.0, 0.0, 5.0, 5.0]]), boxes[:1], (1, 1, 1, 1), torch.float32, clip)
    assert_bounded(custom, torch.tensor([[-8.0, -8.0, 24.0, 24.0]]), bound.error)  # a 16-pixel box doubled


def test_multiclass_deltas_decode_each_class_like_single_class():
    boxes = random_boxes(10, 5)
    deltas = torch.randn(10, 4 * 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    decoded = decode_boxes(deltas, boxes, (10, 10, 5, 5))
    assert decoded.shape == (10, 20)
    # The same operations on the same numbers, but exp runs over tensors of other shapes: an element may
    # take the vector body in one call and the scalar tail in the other (or another MKL block), 1 ulp
    # apart each; the bound is twice the float64 running bound of the formula.
    bound = 2 * decode_formula(deltas, boxes, (10, 10, 5, 5), torch.float64).error
    for c in range(5):
        single = decode_boxes(deltas[:, 4 * c : 4 * c + 4], boxes, (10, 10, 5, 5))
        assert_bounded(decoded[:, 4 * c : 4 * c + 4], single, bound[:, 4 * c : 4 * c + 4])


def test_empty_boxes():
    empty = torch.zeros(0, 4)
    assert encode_boxes(empty, empty).shape == (0, 4)
    assert decode_boxes(torch.zeros(0, 8), empty).shape == (0, 8)
    assert BoxCoder()(torch.zeros(0, 4), empty).shape == (0, 4)


def test_zero_size_and_inverted_boxes_are_rejected_when_encoding():
    good = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    degenerate = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 5.0, 9.0], [0.0, 0.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match=r"proposals\[1\] must have positive finite width and height"):
        encode_boxes(good, degenerate)
    inverted = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 1.0, 1.0], [9.0, 0.0, 1.0, 4.0]])
    with pytest.raises(ValueError, match=r"reference_boxes\[2\]"):
        encode_boxes(inverted, good)
    with pytest.raises(ValueError, match=r"proposals\[0\]"):
        encode_boxes(good[:1], torch.tensor([[0.0, 0.0, float("nan"), 1.0]]))


def test_zero_size_reference_box_decodes_to_zero_size_box():
    decoded = decode_boxes(torch.tensor([[0.5, 0.5, 1.0, 1.0]]), torch.tensor([[4.0, 6.0, 4.0, 6.0]]))
    assert decoded.tolist() == [[4.0, 6.0, 4.0, 6.0]]


def test_dtypes():
    # half precision is computed and returned in float32, like the box ops; float64 stays float64
    boxes16 = torch.tensor([[0.0, 0.0, 1000.0, 800.0]], dtype=torch.float16)
    gt16 = torch.tensor([[10.0, 20.0, 990.0, 700.0]], dtype=torch.float16)
    encoded = encode_boxes(gt16, boxes16)
    assert encoded.dtype == torch.float32
    # the library converts to float32 first: the same calls on the same numbers and shapes, identical
    assert torch.equal(encoded, encode_boxes(gt16.float(), boxes16.float()))
    decoded = decode_boxes(encoded.half(), boxes16)
    assert decoded.dtype == torch.float32
    assert torch.equal(decoded, decode_boxes(encoded.half().float(), boxes16.float()))
    int_boxes = torch.tensor([[0, 0, 10, 10]])
    assert encode_boxes(int_boxes, int_boxes).dtype == torch.float32
    assert decode_boxes(torch.zeros(1, 4, dtype=torch.float64), int_boxes).dtype == torch.float64
    # autocast-style float16 deltas on float32 anchors are accepted
    mixed = decode_boxes(torch.zeros(1, 4, dtype=torch.float16), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert mixed.dtype == torch.float32 and mixed.tolist() == [[0.0, 0.0, 10.0, 10.0]]
    with pytest.raises(ValueError, match=r"reference_boxes has dtype torch\.float64 but proposals has dtype"):
        encode_boxes(gt16.double(), boxes16.float())


def test_bad_inputs_name_the_argument():
    boxes = torch.zeros(2, 4)
    with pytest.raises(ValueError, match="deltas is on meta but boxes is on cpu"):
        decode_boxes(torch.zeros(2, 4, device="meta"), boxes)
    with pytest.raises(ValueError, match="reference_boxes is on meta but proposals is on cpu"):
        encode_boxes(torch.zeros(2, 4, device="meta"), boxes)
    with pytest.raises(ValueError, match=r"deltas must have shape \[N, 4 \* num_classes\], got \[2, 5\]"):
        decode_boxes(torch.zeros(2, 5), boxes)
    with pytest.raises(ValueError, match="pair row by row, got 3 and 2"):
        decode_boxes(torch.zeros(3, 4), boxes)
    with pytest.raises(ValueError, match="pair row by row, got 2 and 1"):
        encode_boxes(boxes, boxes[:1])
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\]"):
        decode_boxes(torch.zeros(2, 4), torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"weights\[2\]"):
        BoxCoder(weights=(1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="4 entries"):
        BoxCoder(weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="bbox_xform_clip"):
        BoxCoder(bbox_xform_clip=float("inf"))


def test_module_is_a_thin_wrapper():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    assert "weights=(10.0, 10.0, 5.0, 5.0)" in repr(coder)
    assert coder.bbox_xform_clip == math.log(62.5)  # log(1000 / 16), and 1000 / 16 = 62.5 exactly
    gt, proposals = random_boxes(8, 7, torch.float32), random_boxes(8, 8, torch.float32)
    # the module calls the function with the same arguments: identical results
    assert torch.equal(coder.encode(gt, proposals), encode_boxes(gt, proposals, (10, 10, 5, 5)))
    deltas = coder.encode(gt, proposals)
    assert torch.equal(coder(deltas, proposals), coder.decode(deltas, proposals))


def test_decode_is_differentiable_in_float64():
    boxes = random_boxes(4, 9)
    deltas = torch.randn(4, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda d: decode_boxes(d, boxes, (10, 10, 5, 5)), (deltas,))


def test_encode_and_decode_equal_torchvision_golden():
    if not GOLDEN.exists():
        pytest.skip(f"{GOLDEN} missing (made by tests/data/make_torchvision_coder_golden.py)")
    golden = torch.load(GOLDEN, weights_only=False)
    assert golden["bbox_xform_clip"] == DEFAULT_BBOX_XFORM_CLIP
    assert len(golden["coder"]) == 6
    for case in golden["coder"]:
        # torchvision 0.29 (torch 2.14.1, another CPU) performs our operations in our order in the same
        # dtype (its float32 weights tensor holds these weights exactly); only its log and exp may differ
        # from ours, by 1 ulp each: twice the running bound of the formula in the case's dtype.
        dtype, weights = case["gt"].dtype, case["weights"]
        encoded = encode_boxes(case["gt"], case["proposals"], weights)
        assert torch.equal(encoded[:, :2], case["encoded"][:, :2])
        bound = 2 * encode_formula(case["gt"].double(), case["proposals"].double(), weights, dtype).error
        assert_bounded(encoded, case["encoded"], bound)
        decoded = decode_boxes(case["deltas"], case["proposals"], weights)
        bound = 2 * decode_formula(case["deltas"].double(), case["proposals"].double(), weights, dtype).error
        assert_bounded(decoded, case["decoded"], bound)
