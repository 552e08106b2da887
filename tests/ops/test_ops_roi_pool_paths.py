"""roi_pool's internal paths: bins grouped by block count, empty bins, the unpacked float32 fallback."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from roi_bounds import assert_same_pool_bins

from visionkit.ops import roi_pool

# (the package exports the function under the module's name)
roi_pool_module = importlib.import_module("visionkit.ops.roi_pool")


def _c_round(value: float) -> int:
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


def reference_roi_pool_with_grad(features, rois, output_size, scale, weight):
    """Loop reference: output and the gradient of ``(output * weight).sum()`` (first maximum per bin)."""
    out_h, out_w = output_size
    channels, height, width = features.shape[1:]
    output = torch.zeros(len(rois), channels, out_h, out_w, dtype=features.dtype)
    grad = torch.zeros_like(features)
    for k, (index, x1, y1, x2, y2) in enumerate(rois.tolist()):
        start_x, start_y = _c_round(x1 * scale), _c_round(y1 * scale)
        roi_w = max(_c_round(x2 * scale) - start_x + 1, 1)
        roi_h = max(_c_round(y2 * scale) - start_y + 1, 1)
        for ph in range(out_h):
            h0 = min(max(math.floor(ph * (roi_h / out_h)) + start_y, 0), height)
            h1 = min(max(math.ceil((ph + 1) * (roi_h / out_h)) + start_y, 0), height)
            for pw in range(out_w):
                w0 = min(max(math.floor(pw * (roi_w / out_w)) + start_x, 0), width)
                w1 = min(max(math.ceil((pw + 1) * (roi_w / out_w)) + start_x, 0), width)
                if h1 <= h0 or w1 <= w0:
                    continue
                for c in range(channels):
                    cells = features[int(index), c, h0:h1, w0:w1].reshape(-1)
                    first = int(cells.argmax())  # first maximum in row-major order
                    output[k, c, ph, pw] = cells[first]
                    y, x = h0 + first // (w1 - w0), w0 + first % (w1 - w0)
                    grad[int(index), c, y, x] += weight[k, c, ph, pw]
    return output, grad


def _inputs(dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    # Few distinct values: ties everywhere, so the first-maximum rule decides the gradient.
    features = torch.randint(-2, 3, (2, 3, 30, 34), generator=generator).to(dtype)
    xy = torch.rand(40, 2, generator=generator, dtype=torch.float64) * 36 - 4
    wh = torch.rand(40, 2, generator=generator, dtype=torch.float64) * 30
    index = torch.randint(0, 2, (40, 1), generator=generator).double()
    rois = torch.cat((index, xy, xy + wh), 1)
    rois[0, 1:] = torch.tensor([-20.0, -20.0, -10.0, -10.0])  # off the map: every bin empty
    rois[1, 1:] = torch.tensor([0.0, 0.0, 29.0, 33.0])  # bins of 4-5 cells: 1 or 2 blocks a side
    rois[2, 1:] = torch.tensor([31.0, 1.0, 40.0, 20.0])  # half clipped on the right
    return features, rois.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("output_size", "scale"), [((3, 2), 1.0), ((5, 7), 1.0), ((2, 3), 0.5)])
def test_mixed_block_counts_and_empty_bins_match_loop_reference(dtype, output_size, scale):
    features, rois = _inputs(dtype, seed=output_size[0] * 10 + output_size[1])
    leaf = features.clone().requires_grad_()
    output = roi_pool(leaf, rois, output_size, scale)
    weight = torch.randint(1, 4, output.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    (output * weight).sum().backward()
    expected, expected_grad = reference_roi_pool_with_grad(features, rois, output_size, scale, weight)
    # the loop computes the bins of these RoIs in float64: the float32 bins must be the same
    assert_same_pool_bins(rois, rois.double(), scale, output_size, *features.shape[-2:])
    assert torch.equal(output, expected)
    assert torch.equal(leaf.grad, expected_grad)  # integer weights: sums are exact in any order


def test_float32_without_packed_keys_matches_packed(monkeypatch):
    features, rois = _inputs(torch.float32, seed=3)
    features[0, 0, :3, :3] = -0.0  # -0 ties with 0
    packed = features.clone().requires_grad_()
    output = roi_pool(packed, rois, (3, 4), 1.0)
    weight = torch.randint(1, 4, output.shape, generator=torch.Generator().manual_seed(2)).float()
    (output * weight).sum().backward()
    monkeypatch.setattr(roi_pool_module, "_PACK_LIMIT", 0)  # force the value + index tables
    unpacked = features.clone().requires_grad_()
    output_unpacked = roi_pool(unpacked, rois, (3, 4), 1.0)
    (output_unpacked * weight).sum().backward()
    assert torch.equal(output_unpacked, output)
    assert torch.equal(unpacked.grad, packed.grad)
    expected, expected_grad = reference_roi_pool_with_grad(
        features.double(), rois.double(), (3, 4), 1.0, weight
    )
    assert_same_pool_bins(rois, rois.double(), 1.0, (3, 4), *features.shape[-2:])
    assert torch.equal(output.double(), expected)
    assert torch.equal(packed.grad.double(), expected_grad)


def test_all_bins_empty_gives_zeros_and_no_gradient():
    features = torch.randn(1, 2, 8, 8, requires_grad=True)
    rois = torch.tensor([[0.0, 200.0, 200.0, 300.0, 300.0], [0.0, -90.0, -90.0, -50.0, -50.0]])
    output = roi_pool(features, rois, 2)
    assert torch.equal(output, torch.zeros(2, 2, 2, 2))
    output.sum().backward()
    assert torch.equal(features.grad, torch.zeros_like(features))
