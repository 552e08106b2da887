"""MultiScaleRoIAlign: torchvision goldens, the FPN level rule, input order, scale inference, errors."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from roi_bounds import roi_align_bounds

from running_error import assert_bounded, exact
from visionkit.ops import MultiScaleRoIAlign, roi_align
from visionkit.ops.multiscale_roi_align import infer_scale, map_levels

GOLDEN = torch.load(
    Path(__file__).resolve().parents[1] / "data" / "torchvision_roi_golden.pt", weights_only=True
)
NAMES = ["p2", "p3", "p4", "p5"]


def _golden_inputs():
    features = OrderedDict((name, GOLDEN[f"multiscale/features/{name}"]) for name in NAMES)
    boxes = [GOLDEN["multiscale/boxes0"], GOLDEN["multiscale/boxes1"]]
    return features, boxes, [tuple(size) for size in GOLDEN["multiscale/image_sizes"].tolist()]


def multiscale_bound(features, boxes, names, output_size, ratio) -> torch.Tensor:
    """Bound between our pooled RoIs and torchvision's: both give each RoI the level
    ``floor(4 + log2(sqrt(area) / 224) + 1e-6)`` — asserted to be the same level in any evaluation, since
    its argument is farther from an integer than its running error bound (log2 within 1 ulp) — and then
    RoI Align it on that level, bounded as in tests/ops/roi_bounds.py."""
    rois = torch.cat(
        [torch.cat((torch.full((len(b), 1), float(i), dtype=b.dtype), b), 1) for i, b in enumerate(boxes)]
    )
    corners = exact(rois[:, 1:], torch.float64)
    sides = (corners[:, 2:] - corners[:, :2]).clamp(min=0.0)
    argument = 4 + ((sides[:, 0] * sides[:, 1]).sqrt() / 224.0).log2() + 1e-6
    distance = (argument.value - argument.value.round()).abs()
    assert bool((distance > 2 * argument.error).all()), "a RoI is on the edge between two levels"
    low, high = int(names[0][1:]), int(names[-1][1:])
    levels = map_levels(rois[:, 1:], low, high)
    assert torch.equal(levels, (argument.value.floor().clamp(low, high) - low).long())
    bound = torch.zeros(len(rois), features[names[0]].shape[1], *output_size, dtype=torch.float64)
    for offset, name in enumerate(names):
        chosen = levels == offset
        if chosen.any():
            scale = 2.0 ** -(low + offset)
            level_bound, _ = roi_align_bounds(
                features[name], rois[chosen], output_size, scale, ratio, False, orders=("ours", "torchvision")
            )
            bound[chosen] = level_bound
    return bound


def test_matches_torchvision_golden():
    features, boxes, sizes = _golden_inputs()
    output = MultiScaleRoIAlign(NAMES, (5, 6), sampling_ratio=2)(features, boxes, sizes)
    assert_bounded(output, GOLDEN["multiscale/out"], multiscale_bound(features, boxes, NAMES, (5, 6), 2))
    output = MultiScaleRoIAlign(["p3", "p4", "p5"], 3, sampling_ratio=-1)(features, boxes, sizes)
    bound = multiscale_bound(features, boxes, ["p3", "p4", "p5"], (3, 3), -1)
    assert_bounded(output, GOLDEN["multiscale/out_p3_p5"], bound)


def test_level_rule_against_formula():
    # k = floor(4 + log2(sqrt(wh) / 224) + 1e-6), clamped to [2, 5].
    sides = [1.0, 16.0, 111.9, 112.0, 223.9, 224.0, 447.0, 448.0, 2000.0]
    boxes = torch.tensor([[0.0, 0.0, s, s] for s in sides], dtype=torch.float64)
    expected = [min(max(math.floor(4 + math.log2(s / 224) + 1e-6), 2), 5) - 2 for s in sides]
    assert map_levels(boxes, 2, 5).tolist() == expected == [0, 0, 0, 1, 1, 2, 2, 3, 3]
    degenerate = torch.tensor([[5.0, 5.0, 5.0, 9.0], [9.0, 9.0, 1.0, 1.0]])
    assert map_levels(degenerate, 2, 5).tolist() == [0, 0]  # zero-area / inverted: finest level


def test_each_roi_is_pooled_from_its_level_in_input_order():
    features, boxes, sizes = _golden_inputs()
    pooler = MultiScaleRoIAlign(NAMES, 4, sampling_ratio=2)
    output = pooler(features, boxes, sizes)
    rois = torch.cat(
        [torch.cat((torch.full((len(b), 1), float(i), dtype=b.dtype), b), 1) for i, b in enumerate(boxes)]
    )
    levels = map_levels(rois[:, 1:], 2, 5)
    assert len(set(levels.tolist())) == 4  # the data exercises every level
    for row, level in enumerate(levels.tolist()):
        name = NAMES[level]
        expected = roi_align(features[name], rois[row : row + 1], 4, 1 / 2 ** (level + 2), 2)
        # the same element-wise + − × / on this RoI and one weighted sum per bin over the same taps:
        # identical, whichever other RoIs share the call
        assert torch.equal(output[row : row + 1], expected)


def test_single_level_backward_and_empty():
    feature = torch.randn(2, 3, 16, 20, dtype=torch.float64, requires_grad=True)
    pooler = MultiScaleRoIAlign(["c4"], 2, sampling_ratio=2)
    boxes = [
        torch.tensor([[0.0, 0.0, 100.0, 90.0]], dtype=torch.float64),
        torch.zeros(0, 4, dtype=torch.float64),
    ]
    output = pooler({"c4": feature}, boxes, [(256, 320), (250, 300)])
    assert torch.equal(output, roi_align(feature, boxes, 2, 1 / 16, 2))  # one level: the same call
    output.sum().backward()
    assert feature.grad.abs().sum() > 0
    empty = pooler({"c4": feature}, [torch.zeros(0, 4, dtype=torch.float64)], [(256, 320)])
    assert empty.shape == (0, 3, 2, 2)


def test_gradcheck_across_levels():
    generator = torch.Generator().manual_seed(0)
    p2 = torch.randn(1, 1, 8, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    p3 = torch.randn(1, 1, 4, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    boxes = [torch.tensor([[4.0, 4.0, 20.0, 30.0], [2.0, 3.0, 60.0, 62.0]], dtype=torch.float64)]
    pooler = MultiScaleRoIAlign(["p2", "p3"], 2, sampling_ratio=2, canonical_size=32.0, canonical_level=3)
    assert map_levels(boxes[0], 2, 3, 32.0, 3).tolist() == [0, 1]
    assert torch.autograd.gradcheck(lambda a, b: pooler({"p2": a, "p3": b}, boxes, [(32, 32)]), (p2, p3))


def test_infer_scale_and_errors():
    assert infer_scale((50, 68), (800, 1088)) == 1 / 16
    assert infer_scale((25, 34), (800, 1080)) == 1 / 32  # rounded to a power of two
    with pytest.raises(ValueError, match="different scales"):
        infer_scale((50, 17), (800, 1088))
    pooler = MultiScaleRoIAlign(["p2", "p3"], 2)
    with pytest.raises(ValueError, match=r"no maps named \['p3'\]"):
        pooler({"p2": torch.zeros(1, 1, 8, 8)}, [torch.zeros(1, 4)], [(32, 32)])
    with pytest.raises(ValueError, match="image_sizes"):
        pooler({"p2": torch.zeros(1, 1, 8, 8), "p3": torch.zeros(1, 1, 4, 4)}, [torch.zeros(1, 4)], [])
    with pytest.raises(ValueError, match="featmap_names"):
        MultiScaleRoIAlign("p2", 2)
    assert "featmap_names=['p2', 'p3']" in repr(pooler)
