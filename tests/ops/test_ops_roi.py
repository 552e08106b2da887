"""RoI Align / RoI Pool: loop-over-bins float64 references, torchvision goldens, gradcheck, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from roi_bounds import assert_same_pool_bins, roi_align_bounds, roi_align_grad_bound

from running_error import assert_bounded
from tolerances import gamma, sum_difference_bound, unit_roundoff
from visionkit.ops import RoIAlign, RoIPool, roi_align, roi_pool
from visionkit.ops.roi import convert_rois

GOLDEN = torch.load(
    Path(__file__).resolve().parents[1] / "data" / "torchvision_roi_golden.pt", weights_only=True
)


# ----------------------------------------------------------------------------------------------------
# Slow, obviously correct references: one bin (and one sampling point) at a time, all channels at once.
# ----------------------------------------------------------------------------------------------------
def _bilinear(plane: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """torchvision's bilinear read of ``plane[C, H, W]`` at ``(y, x)`` (0 outside ``[-1, H] x [-1, W]``)."""
    height, width = plane.shape[-2:]
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(plane.shape[0], dtype=plane.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    return (
        (1 - ly) * (1 - lx) * plane[:, y_low, x_low]
        + (1 - ly) * lx * plane[:, y_low, x_high]
        + ly * (1 - lx) * plane[:, y_high, x_low]
        + ly * lx * plane[:, y_high, x_high]
    )


def reference_roi_align(features, rois, output_size, scale, ratio, aligned, mode="avg"):
    out_h, out_w = output_size
    result = torch.zeros(len(rois), features.shape[1], out_h, out_w, dtype=features.dtype)
    offset = 0.5 if aligned else 0.0
    for k, (batch, x1, y1, x2, y2) in enumerate(rois.tolist()):
        plane = features[int(batch)]
        start_x, start_y = x1 * scale - offset, y1 * scale - offset
        width, height = x2 * scale - offset - start_x, y2 * scale - offset - start_y
        if not aligned:
            width, height = max(width, 1.0), max(height, 1.0)
        grid_h = ratio if ratio > 0 else math.ceil(height / out_h)
        grid_w = ratio if ratio > 0 else math.ceil(width / out_w)
        for ph in range(out_h):
            for pw in range(out_w):
                samples = [
                    _bilinear(
                        plane,
                        start_y + ph * height / out_h + (iy + 0.5) * height / out_h / grid_h,
                        start_x + pw * width / out_w + (ix + 0.5) * width / out_w / grid_w,
                    )
                    for iy in range(max(grid_h, 0))
                    for ix in range(max(grid_w, 0))
                ]
                if not samples:
                    continue
                stacked = torch.stack(samples)
                if mode == "avg":
                    result[k, :, ph, pw] = stacked.sum(0) / max(grid_h * grid_w, 1)
                else:
                    result[k, :, ph, pw] = stacked.max(0).values
    return result


def _c_round(value: float) -> int:
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


def reference_roi_pool(features, rois, output_size, scale):
    out_h, out_w = output_size
    height, width = features.shape[-2:]
    result = torch.zeros(len(rois), features.shape[1], out_h, out_w, dtype=features.dtype)
    for k, (batch, x1, y1, x2, y2) in enumerate(rois.tolist()):
        start_x, start_y = _c_round(x1 * scale), _c_round(y1 * scale)
        roi_w = max(_c_round(x2 * scale) - start_x + 1, 1)
        roi_h = max(_c_round(y2 * scale) - start_y + 1, 1)
        for ph in range(out_h):
            h0 = min(max(math.floor(ph * (roi_h / out_h)) + start_y, 0), height)
            h1 = min(max(math.ceil((ph + 1) * (roi_h / out_h)) + start_y, 0), height)
            for pw in range(out_w):
                w0 = min(max(math.floor(pw * (roi_w / out_w)) + start_x, 0), width)
                w1 = min(max(math.ceil((pw + 1) * (roi_w / out_w)) + start_x, 0), width)
                if h1 > h0 and w1 > w0:
                    cells = features[int(batch), :, h0:h1, w0:w1].reshape(features.shape[1], -1)
                    result[k, :, ph, pw] = cells.max(dim=1).values
    return result


def _random_rois(count, batch, extent, generator, dtype=torch.float64):
    xy = torch.rand(count, 2, generator=generator, dtype=dtype) * (extent + 8) - 6
    wh = torch.rand(count, 2, generator=generator, dtype=dtype) * extent * 0.8
    index = torch.randint(0, batch, (count, 1), generator=generator).to(dtype)
    return torch.cat((index, xy, xy + wh), 1)


# ----------------------------------------------------------------------------------------------------
# Goldens from torchvision (tests/data/make_torchvision_roi_golden.py).
# ----------------------------------------------------------------------------------------------------
ALIGN_KEYS = sorted({key.rsplit("/", 1)[0] for key in GOLDEN if key.startswith("roi_align/")})


@pytest.mark.parametrize("key", ALIGN_KEYS)
def test_roi_align_matches_torchvision_golden(key):
    _, scale, aligned, ratio = key.split("/")
    features = GOLDEN["roi/features"].clone().requires_grad_()
    settings = ((3, 4), float(scale[5:]), int(ratio[5:]), aligned == "aligned1")
    output = roi_align(features, GOLDEN["roi/rois"], *settings)
    # torchvision's kernel computes the sampling positions in another order and sums in another order:
    # the bounds derived in tests/ops/roi_bounds.py, from these features and RoIs.
    bound, per_image = roi_align_bounds(
        features, GOLDEN["roi/rois"], *settings, orders=("ours", "torchvision")
    )
    assert_bounded(output, GOLDEN[f"{key}/out"], bound)
    (output * GOLDEN[f"{key}/weight"]).sum().backward()
    grad_bound = roi_align_grad_bound(features, per_image, GOLDEN[f"{key}/weight"])
    assert_bounded(features.grad, GOLDEN[f"{key}/grad"], grad_bound)


@pytest.mark.parametrize("scale", [0.5, 1.0])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_roi_pool_matches_torchvision_golden(scale, dtype):
    key = f"roi_pool/scale{scale}"
    features = GOLDEN["roi/features"].to(dtype).clone().requires_grad_()
    rois = GOLDEN["roi/rois"].to(dtype)
    if dtype == torch.float32:
        # float32 RoIs give the float64 bins here, and rounding is monotone: the same cells, the rounded
        # maxima. All float32 feature values are distinct, so the first maximum is the same cell too.
        assert_same_pool_bins(rois, GOLDEN["roi/rois"], scale, (3, 4), *features.shape[-2:])
        assert features.unique().numel() == features.numel()
    output = roi_pool(features, rois, (3, 4), scale)
    assert torch.equal(output, GOLDEN[f"{key}/out"].to(dtype))  # torchvision's bin arithmetic, a selection
    weight = GOLDEN[f"{key}/weight"]
    (output * weight.to(dtype)).sum().backward()
    # Each cell's gradient: the same routed weights summed in another order (n <= all bins), in float32
    # from weights rounded to float32 (u each): against the float64 golden.
    routed = pool_routed_abs(GOLDEN["roi/features"], GOLDEN["roi/rois"], scale, weight)
    rounded_weights = unit_roundoff(dtype) * routed if dtype == torch.float32 else 0.0
    bound = sum_difference_bound(routed, weight.numel(), dtype) + rounded_weights
    assert_bounded(features.grad, GOLDEN[f"{key}/grad"], bound)


def pool_routed_abs(features, rois, scale, weight):
    """Per input cell, the absolute sum of the output gradients routed to it (the backward of |weight|
    through the same maxima, in float64, raised by γ(n) to an upper bound)."""
    leaf = features.double().clone().requires_grad_()
    (roi_pool(leaf, rois.double(), (3, 4), scale) * weight.double().abs()).sum().backward()
    return leaf.grad * (1 + gamma(weight.numel(), torch.float64))


# ----------------------------------------------------------------------------------------------------
# Loop references on random and adversarial inputs.
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize(("ratio", "aligned"), [(2, False), (0, False), (-1, True), (3, True), (1, False)])
def test_roi_align_matches_loop_reference(mode, ratio, aligned):
    generator = torch.Generator().manual_seed(ratio + 10 * aligned)
    features = torch.randn(2, 3, 9, 11, generator=generator, dtype=torch.float64)
    rois = _random_rois(12, 2, 20, generator)
    rois[0, 1:] = torch.tensor([3.0, 3.0, 1.0, 2.0])  # inverted
    rois[1, 1:] = torch.tensor([4.0, 4.0, 4.0, 4.0])  # zero size
    expected = reference_roi_align(features, rois, (2, 3), 0.5, ratio, aligned, mode)
    bound, _ = roi_align_bounds(features, rois, (2, 3), 0.5, ratio, aligned, mode)
    assert_bounded(roi_align(features, rois, (2, 3), 0.5, ratio, aligned, mode), expected, bound)


def test_roi_pool_matches_loop_reference_with_ties_and_negative_values():
    generator = torch.Generator().manual_seed(5)
    # Few distinct values: many ties; negative values and -0.0 next to 0.0.
    features = torch.randint(-3, 2, (2, 4, 10, 12), generator=generator).double()
    features[0, 0, 0, :4] = -0.0
    rois = _random_rois(20, 2, 22, generator)
    expected = reference_roi_pool(features, rois, (3, 2), 0.5)
    assert torch.equal(roi_pool(features, rois, (3, 2), 0.5), expected)  # the reference's bin arithmetic
    # float32: the RoIs round to float32; their float32 bins must be these float64 bins (integer values)
    assert_same_pool_bins(rois.float(), rois, 0.5, (3, 2), 10, 12)
    assert torch.equal(roi_pool(features.float(), rois.float(), (3, 2), 0.5).double(), expected)


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    out_h=st.integers(1, 4),
    out_w=st.integers(1, 4),
    scale=st.sampled_from([1.0, 0.5, 0.25, 1 / 3]),
    ratio=st.integers(-1, 3),
    aligned=st.booleans(),
)
def test_fuzz_against_loop_references(seed, out_h, out_w, scale, ratio, aligned):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 2, 7, 8, generator=generator, dtype=torch.float64)
    rois = _random_rois(5, 2, 30 * scale + 10, generator) / scale
    rois[:, 0] = rois[:, 0] * scale
    for mode in ("avg", "max"):
        expected = reference_roi_align(features, rois, (out_h, out_w), scale, ratio, aligned, mode)
        bound, _ = roi_align_bounds(features, rois, (out_h, out_w), scale, ratio, aligned, mode)
        assert_bounded(
            roi_align(features, rois, (out_h, out_w), scale, ratio, aligned, mode), expected, bound
        )
    # RoI Pool: the reference's bin arithmetic (IEEE + − × / floor ceil) and a selection: identical
    assert torch.equal(
        roi_pool(features, rois, (out_h, out_w), scale),
        reference_roi_pool(features, rois, (out_h, out_w), scale),
    )


def test_roi_pool_bins_longer_than_the_largest_block():
    # A 40-cell bin needs several 8-cell blocks per side (sparse-table cover with more than 2 lookups).
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(1, 3, 45, 50, generator=generator, dtype=torch.float64)
    rois = torch.tensor([[0.0, 0.0, 0.0, 49.0, 44.0], [0.0, 3.0, 1.0, 46.0, 40.0]], dtype=torch.float64)
    for size in ((1, 1), (2, 1)):
        expected = reference_roi_pool(features, rois, size, 1.0)
        assert torch.equal(roi_pool(features, rois, size, 1.0), expected)
        # integer RoIs: the same bins in float32; rounding is monotone, so the maxima are the rounded ones
        assert torch.equal(roi_pool(features.float(), rois.float(), size, 1.0), expected.float())


def test_roi_pool_gradient_goes_to_first_maximum():
    features = torch.ones(1, 2, 6, 6, requires_grad=True)
    roi_pool(features, torch.tensor([[0.0, 0.0, 0.0, 5.0, 5.0]]), 2).sum().backward()
    expected = torch.zeros(6, 6)
    expected[0, 0] = expected[0, 3] = expected[3, 0] = expected[3, 3] = 1.0  # top-left cell of each bin
    assert torch.equal(features.grad[0, 0], expected) and torch.equal(features.grad[0, 1], expected)


def test_roi_pool_nan_is_never_the_maximum():
    features = torch.tensor([[[[float("nan"), 1.0], [2.0, 3.0]]]])
    assert roi_pool(features, torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]]), 1).item() == 3.0


# ----------------------------------------------------------------------------------------------------
# Gradients.
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ratio", "aligned", "mode"), [(2, False, "avg"), (-1, True, "avg"), (2, True, "max"), (0, False, "max")]
)
def test_roi_align_gradcheck(ratio, aligned, mode):
    generator = torch.Generator().manual_seed(7)
    features = torch.randn(2, 1, 5, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    rois = _random_rois(4, 2, 9, generator)
    assert torch.autograd.gradcheck(
        lambda f: roi_align(f, rois, (2, 3), 0.7, ratio, aligned, mode), (features,)
    )


def test_roi_pool_gradcheck():
    generator = torch.Generator().manual_seed(8)
    features = torch.randperm(2 * 2 * 6 * 7, generator=generator).double().view(2, 2, 6, 7) / 10
    features.requires_grad_()
    rois = _random_rois(6, 2, 10, generator)
    assert torch.autograd.gradcheck(lambda f: roi_pool(f, rois, (2, 3), 0.7), (features,))


# ----------------------------------------------------------------------------------------------------
# The handbook's worked example (§24): 800x800 image, stride 32, a 665x665 proposal, 7x7 output.
# ----------------------------------------------------------------------------------------------------
def test_handbook_worked_example():
    stride, proposal = 32, 665.0
    assert round(proposal / stride, 2) == 20.78  # the proposal on the 25x25 feature map
    ramp = torch.arange(25, dtype=torch.float64).expand(1, 1, 25, 25)  # f(y, x) = x
    roi = torch.tensor([[0.0, 0.0, 0.0, proposal, proposal]], dtype=torch.float64)
    # RoI Align keeps 20.78 cells: bins of 20.78 / 7 = 2.97 cells, and on a linear ramp a bin's average
    # is the ramp at the bin centre.
    aligned = roi_align(ramp, roi, 7, 1 / stride, sampling_ratio=2)[0, 0, 0]
    bin_width = proposal / stride / 7
    assert round(bin_width, 2) == 2.97
    # the exact bin averages are the bin centres; ours is within its bound against the exact evaluation
    # (roi_bounds.py, order "exact") of them, the expected centres within 3 roundings of |centre|
    centres = (torch.arange(7, dtype=torch.float64) + 0.5) * bin_width
    ours_bound = roi_align_bounds(ramp, roi, (7, 7), 1 / stride, 2, False, orders=("ours", "exact"))[0][
        0, 0, 0
    ]
    assert_bounded(aligned, centres, ours_bound + 3 * unit_roundoff(torch.float64) * centres)
    # RoI Pool quantizes twice. Caffe/torchvision round the corners (20.78 -> 21, so 22 cells with both
    # corners included; the handbook truncates to 20) and then cut bins at floor/ceil: on the ramp each
    # bin's maximum is its last cell.
    pooled = roi_pool(ramp, roi, 7, 1 / stride)[0, 0, 0]
    cells = round(proposal / stride) + 1
    assert cells == 22
    assert pooled.tolist() == [math.ceil((p + 1) * cells / 7) - 1 for p in range(7)]
    # The quantization loses the sub-cell position: moving the proposal by 5 px (0.16 cell) changes
    # nothing for RoI Pool but shifts every RoI Align bin.
    moved = torch.tensor([[0.0, 5.0, 0.0, proposal + 5, proposal]], dtype=torch.float64)
    assert torch.equal(roi_pool(ramp, moved, 7, 1 / stride), roi_pool(ramp, roi, 7, 1 / stride))
    shift = roi_align(ramp, moved, 7, 1 / stride, sampling_ratio=2)[0, 0, 0] - aligned
    moved_bound = roi_align_bounds(ramp, moved, (7, 7), 1 / stride, 2, False, orders=("ours", "exact"))[0]
    both = ours_bound + moved_bound[0, 0, 0]  # exact shift 5/32; one more rounding in the subtraction
    assert_bounded(
        shift,
        torch.full((7,), 5 / stride, dtype=torch.float64),
        both + unit_roundoff(torch.float64) * (shift.abs() + both),
    )
    # With the handbook's own quantized 20-cell RoI, bins are 20/7 = 2.86 cells: floor/ceil cuts.
    twenty = torch.tensor([[0.0, 0.0, 0.0, 19 * stride, 19 * stride]], dtype=torch.float64)
    assert roi_pool(ramp, twenty, 7, 1 / stride)[0, 0, 0].tolist() == [2, 5, 8, 11, 14, 17, 19]


# ----------------------------------------------------------------------------------------------------
# RoI formats, dtypes, empty input and the bad-input cases of CONTRIBUTING.md.
# ----------------------------------------------------------------------------------------------------
def test_list_format_equals_tensor_format():
    generator = torch.Generator().manual_seed(9)
    features = torch.randn(2, 3, 8, 8, generator=generator)
    boxes = [torch.tensor([[0.0, 0.0, 5.0, 5.0], [1.0, 2.0, 7.0, 6.0]]), torch.tensor([[2.0, 2.0, 4.0, 7.0]])]
    rois = torch.tensor([[0.0, 0.0, 0.0, 5.0, 5.0], [0.0, 1.0, 2.0, 7.0, 6.0], [1.0, 2.0, 2.0, 4.0, 7.0]])
    assert torch.equal(convert_rois(boxes, features), rois)
    assert torch.equal(roi_align(features, boxes, 2), roi_align(features, rois, 2))
    assert torch.equal(roi_pool(features, boxes, 2), roi_pool(features, rois, 2))


@pytest.mark.parametrize("op", [roi_align, roi_pool])
def test_empty_rois_give_empty_output_and_backpropagate(op):
    features = torch.randn(2, 3, 8, 8, requires_grad=True)
    for rois in (torch.zeros(0, 5), [torch.zeros(0, 4), torch.zeros(0, 4)]):
        output = op(features, rois, (2, 3))
        assert output.shape == (0, 3, 2, 3)
        output.sum().backward()
        assert features.grad.abs().sum() == 0


@pytest.mark.parametrize("op", [roi_align, roi_pool])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(op, dtype):
    generator = torch.Generator().manual_seed(10)
    features = torch.randn(1, 4, 8, 8, generator=generator)
    rois = torch.tensor([[0.0, 0.5, 1.0, 6.5, 7.0]])
    output = op(features.to(dtype), rois, 3)
    assert output.dtype == dtype
    expected = op(features.to(dtype).float(), rois, 3).to(dtype)
    assert torch.equal(output, expected)


@pytest.mark.parametrize("op", [roi_align, roi_pool])
def test_bad_rois_name_the_argument(op):
    features = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"rois must be a Tensor\[K, 5\].*\[3, 4\]"):
        op(features, torch.zeros(3, 4), 2)  # K x 4 without batch index
    with pytest.raises(ValueError, match=r"batch indices outside \[0, 2\).*rows \[1\], values \[2.0\]"):
        op(features, torch.tensor([[0.0, 0, 0, 4, 4], [2.0, 0, 0, 4, 4]]), 2)  # torchvision: silent zeros
    with pytest.raises(ValueError, match="batch indices"):
        op(features, torch.tensor([[-1.0, 0, 0, 4, 4]]), 2)
    with pytest.raises(ValueError, match="batch indices"):
        op(features, torch.tensor([[0.5, 0, 0, 4, 4]]), 2)
    with pytest.raises(ValueError, match=r"non-finite values in rows \[0\]"):
        op(features, torch.tensor([[0.0, float("nan"), 0, 4, 4]]), 2)
    with pytest.raises(ValueError, match=r"rois\[1\]"):
        op(features, [torch.zeros(1, 4), torch.zeros(2, 5)], 2)
    with pytest.raises(ValueError, match="3 per-image entries"):
        op(features, [torch.zeros(1, 4)] * 3, 2)
    with pytest.raises(ValueError, match="rois is on meta"):
        op(features, torch.zeros(1, 5, device="meta"), 2)
    with pytest.raises(ValueError, match="input must be a floating"):
        op(features[0], torch.zeros(1, 5), 2)
    with pytest.raises(ValueError, match="output_size"):
        op(features, torch.zeros(1, 5), (2, 0))
    with pytest.raises(ValueError, match="spatial_scale"):
        op(features, torch.zeros(1, 5), 2, -1.0)
    with pytest.raises(TypeError, match="rois"):
        op(features, "boxes", 2)  # type: ignore[arg-type]


def test_roi_align_mode_is_checked_and_modules_match_functions():
    features = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0.0, 1.0, 1.0, 6.0, 5.0]])
    with pytest.raises(ValueError, match="mode"):
        roi_align(features, rois, 2, mode="median")
    module = RoIAlign((2, 3), 0.5, 2, aligned=True, mode="max")
    assert torch.equal(module(features, rois), roi_align(features, rois, (2, 3), 0.5, 2, True, "max"))
    assert "mode='max'" in repr(module)
    assert torch.equal(RoIPool(2, 0.5)(features, rois), roi_pool(features, rois, 2, 0.5))
    assert "output_size=(2, 2)" in repr(RoIPool(2))
