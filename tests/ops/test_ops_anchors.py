"""Tests for visionkit.ops.anchors: Python-loop references, torchvision golden values, k-means."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from running_error import Bounded, assert_bounded, assert_formulas_agree, concatenate, exact, stack
from tolerances import unit_roundoff
from visionkit.ops.anchors import (
    AnchorGenerator,
    anchor_fitness,
    fpn_anchor_generator,
    generate_anchors,
    generate_base_anchors,
    grid_anchors,
    kmeans_anchors,
    kmeans_plus_plus_init,
    wh_iou,
)

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "torchvision_coder_golden.pt"


# ------------------------------------------------------------------ slow, obviously correct references
def reference_anchors(feature_sizes, image_size, sizes, aspect_ratios, offset=0.0, rounding=True):
    """Anchors written as nested loops, straight from the definition (ratio = h / w)."""
    rows = []
    for (height, width), level_sizes, level_ratios in zip(feature_sizes, sizes, aspect_ratios, strict=True):
        stride_y, stride_x = image_size[0] // height, image_size[1] // width
        for i in range(height):
            for j in range(width):
                centre_x, centre_y = (j + offset) * stride_x, (i + offset) * stride_y
                for ratio in level_ratios:
                    for size in level_sizes:
                        half_w = size / math.sqrt(ratio) / 2
                        half_h = size * math.sqrt(ratio) / 2
                        box = [-half_w, -half_h, half_w, half_h]
                        if rounding:
                            box = [float(round(v)) for v in box]
                        rows.append(
                            [box[0] + centre_x, box[1] + centre_y, box[2] + centre_x, box[3] + centre_y]
                        )
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def reference_wh_iou(wh1, wh2):
    out = torch.zeros(len(wh1), len(wh2), dtype=torch.float64)
    for a, (w1, h1) in enumerate(wh1.tolist()):
        for b, (w2, h2) in enumerate(wh2.tolist()):
            inter = min(w1, w2) * min(h1, h2)
            out[a, b] = inter / (w1 * h1 + w2 * h2 - inter)
    return out


def reference_kmeans(wh, centers, iterations):
    """Lloyd's algorithm with 1 - IoU, one point and one cluster at a time."""
    points = wh.tolist()
    centers = centers.tolist()
    assignment = None
    for _ in range(iterations):
        new = []
        for point in points:
            ious = reference_wh_iou(torch.tensor([point]), torch.tensor(centers))[0].tolist()
            new.append(max(range(len(centers)), key=lambda c, ious=ious: (ious[c], -c)))
        if new == assignment:
            break
        assignment = new
        for c in range(len(centers)):
            members = [p for p, a in zip(points, assignment, strict=True) if a == c]
            if members:
                centers[c] = [
                    sum(m[0] for m in members) / len(members),
                    sum(m[1] for m in members) / len(members),
                ]
    centers.sort(key=lambda wh: wh[0] * wh[1])
    return torch.tensor(centers, dtype=torch.float64)


# ------------------------------------------------------------------ the same in running-error arithmetic
def _constants(values, dtype) -> Bounded:
    """Python numbers given to the library, which converts them to ``dtype`` (a rounding unless exact)."""
    zero = exact(torch.zeros(len(values), dtype=torch.float64), dtype)
    return stack([zero[i] + float(v) for i, v in enumerate(values)], 0)


def half_extents(sizes, ratios, dtype, ours: bool) -> tuple[Bounded, Bounded]:
    """Half width and height ``[A]`` (ratio-major) of the zero-centred anchors before rounding: ours
    ``(1/√r)·s / 2``, ``√r·s / 2`` in ``dtype`` (generate_base_anchors); the loop reference
    ``s / √r / 2``, ``s·√r / 2`` in float64."""
    s, r = _constants(sizes, dtype)[None, :], _constants(ratios, dtype)[:, None]
    root = r.sqrt()
    width = (1 / root) * s if ours else s / root
    return (width / 2).reshape(-1), (root * s / 2).reshape(-1)


def anchor_formula(feature_sizes, image_size, sizes, ratios, dtype, ours: bool) -> Bounded:
    """Unrounded anchors ``[N, 4]``: an exact integer shift plus the half extents (offset 0)."""
    levels = []
    for (height, width), level_sizes, level_ratios in zip(feature_sizes, sizes, ratios, strict=True):
        half_w, half_h = half_extents(level_sizes, level_ratios, dtype, ours)
        base = stack([-half_w, -half_h, half_w, half_h], 1)  # [A, 4]
        ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        shift = torch.stack((xs * (image_size[1] // width), ys * (image_size[0] // height)), -1).reshape(
            -1, 2
        )
        shift = exact(shift.repeat(1, 2).double(), dtype)  # [HW, 4], integers
        levels.append((shift[:, None, :] + base[None, :, :]).reshape(-1, 4))
    return concatenate(levels)


# ------------------------------------------------------------------ anchor generator
@pytest.mark.parametrize(
    ("feature_sizes", "image_size", "sizes", "ratios"),
    [
        ([(4, 5)], (64, 80), ((128, 256, 512),), ((0.5, 1.0, 2.0),)),
        ([(7, 9)], (67, 93), ((32, 64, 128),), ((0.5, 1.0, 2.0),)),
        ([(8, 8), (4, 4), (2, 2)], (64, 64), ((32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 3),
        ([(3, 2), (1, 1)], (30, 25), ((10, 21.3), (40,)), ((0.3, 1.7), (1.0, 4.0))),
    ],
)
@pytest.mark.parametrize("rounding", [True, False])
def test_generate_anchors_matches_loop_reference(feature_sizes, image_size, sizes, ratios, rounding):
    ours = generate_anchors(
        feature_sizes, image_size, sizes, ratios, round_base_anchors=rounding, dtype=torch.float64
    )
    expected = reference_anchors(feature_sizes, image_size, sizes, ratios, rounding=rounding)
    if rounding:
        # Both round the half extents to integers (half to even) and add integer shifts: identical when
        # no half extent, in either order of operations, can lie on the other side of a .5 boundary.
        for level_sizes, level_ratios in zip(sizes, ratios, strict=True):
            for ours_order in (True, False):
                for half in half_extents(level_sizes, level_ratios, torch.float64, ours_order):
                    distance = (half.value.remainder(1.0) - 0.5).abs()  # to the nearest k + 0.5
                    decided = (distance > 2 * half.error) | (half.error == 0)
                    assert bool(decided.all()), "a half extent may round either way"
        assert torch.equal(ours, expected)
    else:
        # (1/√r)·s here, s/√r in the loop: two formulas, both in float64, bounded by running analysis.
        assert_formulas_agree(
            ours,
            lambda dtype: anchor_formula(feature_sizes, image_size, sizes, ratios, dtype, True),
            expected,
            lambda dtype: anchor_formula(feature_sizes, image_size, sizes, ratios, dtype, False),
        )


def test_offset_half_puts_anchors_at_cell_centres():
    ours = generate_anchors([(3, 4)], (48, 64), ((16,),), ((1.0,),), offset=0.5)
    expected = reference_anchors([(3, 4)], (48, 64), ((16,),), ((1.0,),), offset=0.5).float()
    assert torch.equal(ours, expected)  # √1 = 1, halves of 16 and multiples of 8: every operation exact
    centres = (ours[:, :2] + ours[:, 2:]) / 2
    assert centres[0].tolist() == [8.0, 8.0] and centres[-1].tolist() == [56.0, 40.0]


def test_default_is_k9_and_shapes_follow_ratio_definition():
    generator = AnchorGenerator()
    assert generator.num_anchors_per_location() == [9]
    base = generate_base_anchors(
        (128, 256, 512), (0.5, 1.0, 2.0), round_base_anchors=False, dtype=torch.float64
    )
    widths, heights = base[:, 2] - base[:, 0], base[:, 3] - base[:, 1]
    # w/2 − (−w/2) = w exactly; w·h = s² and h/w = r exactly for the exact w = s/√r, h = s·√r, so the
    # float64 results are within the running bound of the library's formula of those exact values.
    half_w, half_h = half_extents((128, 256, 512), (0.5, 1.0, 2.0), torch.float64, ours=True)
    width, height = 2 * half_w, 2 * half_h
    area, ratio = width * height, height / width
    assert_bounded(
        widths * heights, torch.tensor([128.0, 256, 512] * 3, dtype=torch.float64) ** 2, area.error
    )
    expected_ratio = torch.tensor([0.5] * 3 + [1.0] * 3 + [2.0] * 3, dtype=torch.float64)
    assert_bounded(heights / widths, expected_ratio, ratio.error)
    assert torch.equal((base[:, :2] + base[:, 2:]), torch.zeros(9, 2, dtype=torch.float64))


def test_order_is_location_major_then_anchor():
    generator = AnchorGenerator(((32, 64),), ((0.5, 1.0, 2.0),))
    anchors = generator(torch.zeros(1, 3, 64, 96), [torch.zeros(1, 4, 4, 6)])[0]
    assert anchors.shape == (4 * 6 * 6, 4)
    per_location = anchors.reshape(4, 6, 6, 4)
    centres = (per_location[..., :2] + per_location[..., 2:]) / 2
    # every anchor of one location shares its centre; x moves fastest across locations
    assert torch.equal(centres, centres[:, :, :1].expand_as(centres))
    assert centres[0, 1, 0].tolist() == [16.0, 0.0] and centres[1, 0, 0].tolist() == [0.0, 16.0]


def test_module_returns_one_tensor_per_image_and_float_dtypes():
    generator = AnchorGenerator(((16,), (32,)), ((1.0, 2.0), (1.0,)))
    images = torch.zeros(3, 3, 32, 32)
    maps = [torch.zeros(3, 2, 4, 4, dtype=torch.float16), torch.zeros(3, 2, 2, 2, dtype=torch.float16)]
    anchors = generator(images, maps)
    assert len(anchors) == 3 and all(a.shape == (4 * 4 * 2 + 2 * 2, 4) for a in anchors)
    assert anchors[0].dtype == torch.float32  # fp16 maps still get float32 anchors
    anchors[0][0, 0] = 1e6  # images do not share storage
    assert anchors[1][0, 0] != 1e6
    maps64 = [m.double() for m in maps]
    assert generator(images, maps64)[0].dtype == torch.float64


def test_fpn_helper():
    generator = fpn_anchor_generator()
    assert generator.num_anchors_per_location() == [3] * 5
    assert generator.sizes == ((32.0,), (64.0,), (128.0,), (256.0,), (512.0,))
    retina = fpn_anchor_generator((32, 64, 128, 256, 512), scales_per_octave=3)
    assert retina.num_anchors_per_location() == [9] * 5
    assert retina.sizes[1] == (64.0, 64.0 * 2 ** (1 / 3), 64.0 * 2 ** (2 / 3))  # the same Python expression
    with pytest.raises(ValueError, match="scales_per_octave"):
        fpn_anchor_generator(scales_per_octave=0)


def test_empty_feature_map_gives_empty_anchors():
    anchors = generate_anchors([(0, 5)], (32, 32), ((8,),), ((1.0,),))
    assert anchors.shape == (0, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizes": ((32,), (64,)), "aspect_ratios": ((1.0,),)}, "same length"),
        ({"sizes": ((0,),), "aspect_ratios": ((1.0,),)}, r"sizes\[0\]\[0\]"),
        ({"sizes": ((32,),), "aspect_ratios": ((1.0, -2.0),)}, r"aspect_ratios\[0\]\[1\]"),
        ({"sizes": ((32,),), "aspect_ratios": ((float("nan"),),)}, r"aspect_ratios\[0\]\[0\]"),
        ({"sizes": ((),), "aspect_ratios": ((1.0,),)}, "non-empty"),
    ],
)
def test_generator_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AnchorGenerator(**kwargs)


def test_generator_rejects_bad_inputs():
    generator = AnchorGenerator(((32,),), ((1.0,),))
    with pytest.raises(ValueError, match="2 levels"):
        generator(torch.zeros(1, 3, 32, 32), [torch.zeros(1, 1, 4, 4)] * 2)
    with pytest.raises(ValueError, match=r"feature_sizes\[0\].*larger than image_size"):
        generator(torch.zeros(1, 3, 32, 32), [torch.zeros(1, 1, 64, 4)])
    with pytest.raises(ValueError, match="stride"):
        grid_anchors(torch.zeros(1, 4), (2, 2), (0, 8))
    with pytest.raises(ValueError, match="base_anchors"):
        grid_anchors(torch.zeros(1, 5), (2, 2), (8, 8))
    with pytest.raises(ValueError, match="image_size"):
        generate_anchors([(2, 2)], (0, 32), ((8,),), ((1.0,),))


def _golden():
    if not GOLDEN.exists():
        pytest.skip(f"{GOLDEN} missing (made by tests/data/make_torchvision_coder_golden.py)")
    return torch.load(GOLDEN, weights_only=False)


def test_anchor_generator_equals_torchvision_golden():
    cases = _golden()["anchors"]
    assert len(cases) == 4
    for case in cases:
        generator = AnchorGenerator(case["sizes"], case["aspect_ratios"])
        assert generator.num_anchors_per_location() == case["num_anchors_per_location"]
        images = torch.zeros(2, 3, *case["image_size"])
        maps = [torch.zeros(2, 4, h, w) for h, w in case["feature_sizes"]]
        anchors = generator(images, maps)
        assert len(anchors) == 2
        # torchvision computes in float32 with the same correctly rounded sqrt, reciprocal and products,
        # rounds to integers and adds integer shifts: every step is exact or the same IEEE operation.
        assert torch.equal(anchors[0], case["anchors"])


# ------------------------------------------------------------------ k-means anchors (YOLOv2 / v3)
def test_wh_iou_matches_loop_reference():
    generator = torch.Generator().manual_seed(0)
    wh1 = torch.rand(13, 2, generator=generator, dtype=torch.float64) * 100 + 0.5
    wh2 = torch.rand(7, 2, generator=generator, dtype=torch.float64) * 100 + 0.5
    assert torch.equal(wh_iou(wh1, wh2), reference_wh_iou(wh1, wh2))  # the same operations in one order
    assert wh_iou(wh1.half(), wh2.half()).dtype == torch.float32


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.01, 1e4), st.floats(0.01, 1e4)), min_size=1, max_size=6),
    st.lists(st.tuples(st.floats(0.01, 1e4), st.floats(0.01, 1e4)), min_size=1, max_size=6),
)
def test_wh_iou_fuzz(first, second):
    wh1, wh2 = torch.tensor(first, dtype=torch.float64), torch.tensor(second, dtype=torch.float64)
    ours = wh_iou(wh1, wh2)
    assert torch.equal(ours, reference_wh_iou(wh1, wh2))  # the same operations in one order
    # the exact IoU is at most 1; the computed one exceeds it by at most its running error bound
    assert bool(((ours > 0) & (ours <= 1 + wh_iou_formula(wh1, wh2, torch.float64).error)).all())
    assert torch.equal(ours, wh_iou(wh2, wh1).T)  # swapped operands of min, + and ×: exact


def wh_iou_formula(wh1, wh2, dtype) -> Bounded:
    a, b = exact(wh1, dtype)[:, None, :], exact(wh2, dtype)[None, :, :]
    inter = a[..., 0].minimum(b[..., 0]) * a[..., 1].minimum(b[..., 1])
    return inter / (a[..., 0] * a[..., 1] + b[..., 0] * b[..., 1] - inter)


NOISE = 0.04  # relative standard deviation of the box sizes around their cluster centre


def _clustered_wh(seed: int, per_cluster: int = 150, labels: bool = False):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor(
        [[10.0, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90], [156, 198], [373, 326]]
    )
    noise = 1 + NOISE * torch.randn(len(centres), per_cluster, 2, generator=generator)
    wh = (centres[:, None, :] * noise).reshape(-1, 2)
    order = torch.randperm(len(wh), generator=generator)
    cluster = torch.arange(len(centres)).repeat_interleave(per_cluster)
    return (centres, wh[order], cluster[order]) if labels else (centres, wh[order])


def test_kmeans_recovers_yolov3_cluster_centres():
    per_cluster = 150
    centres, wh, cluster = _clustered_wh(seed=1, per_cluster=per_cluster, labels=True)
    anchors = kmeans_anchors(wh, k=9, seed=0)
    # 1. k-means found the generating partition: every cluster's boxes go to one anchor of their own.
    assignment = wh_iou(wh, anchors).argmax(1)
    owners = [assignment[cluster == c].unique().tolist() for c in range(len(centres))]
    assert all(len(o) == 1 for o in owners) and sorted(o[0] for o in owners) == list(range(len(centres)))
    owner = torch.tensor([o[0] for o in owners])
    # 2. Then each anchor is the mean of its cluster (float32 sums of 150 terms then a division: the
    #    running bound of that computation, against the float64 mean of the same numbers).
    members = [wh[cluster == c].double() for c in range(len(centres))]
    means = torch.stack([m.mean(0) for m in members])
    bound = torch.stack([(exact(m, torch.float32).sum(0) / len(m)).error for m in members])
    bound = bound + torch.stack([(exact(m, torch.float64).sum(0) / len(m)).error for m in members])
    assert_bounded(anchors[owner], means, bound)
    # 3. Statistics: a cluster's mean is centre·(1 + NOISE·z̄), z̄ ~ N(0, 1/n), up to 3 float32 roundings
    #    per generated size. Six standard errors: P(|z̄|·√n > 6) = 2e-9 per coordinate, 4e-8 for all 18.
    standard_error = centres * NOISE / math.sqrt(per_cluster)
    generation = 3 * unit_roundoff(torch.float32) * torch.stack([m.abs().mean(0) for m in members])
    assert_bounded(means, centres.double(), 6 * standard_error.double() + generation)
    assert anchor_fitness(wh, anchors) > 0.9
    areas = anchors.prod(dim=1)
    assert bool((areas[1:] >= areas[:-1]).all())


def test_kmeans_equals_loop_reference_with_same_init():
    _, wh = _clustered_wh(seed=2, per_cluster=20)
    wh = (wh * torch.linspace(0.7, 1.3, len(wh))[:, None]).double()  # blur clusters: more Lloyd rounds
    init = kmeans_plus_plus_init(wh, 6, torch.Generator().manual_seed(3))
    ours = kmeans_anchors(wh, 6, initial_centers=init, iterations=50)
    # Exact: the IoUs are the same operations (so the same assignments and tie breaks), index_add_ adds a
    # centre's members one by one in data order as Python's sum does, and both divide by the count.
    assert torch.equal(ours, reference_kmeans(wh, init, 50))
    # The seeded path uses exactly this init.
    assert torch.equal(kmeans_anchors(wh, 6, seed=3, iterations=50), ours)


def test_kmeans_is_deterministic_from_seed_and_beats_random_anchors():
    _, wh = _clustered_wh(seed=4, per_cluster=30)
    first, second = kmeans_anchors(wh, 5, seed=7), kmeans_anchors(wh, 5, seed=7)
    assert torch.equal(first, second)
    random_pick = wh[torch.randperm(len(wh), generator=torch.Generator().manual_seed(0))[:5]]
    assert anchor_fitness(wh, first) > anchor_fitness(wh, random_pick)


def test_kmeans_plus_plus_picks_distinct_points_with_duplicates():
    wh = torch.tensor([[5.0, 5.0]] * 50 + [[50.0, 20.0]] * 50 + [[20.0, 50.0]])
    for seed in range(5):
        init = kmeans_plus_plus_init(wh, 3, torch.Generator().manual_seed(seed))
        assert torch.unique(init, dim=0).shape[0] == 3
    assert kmeans_anchors(wh, 3).shape == (3, 2)


def test_kmeans_errors_are_clear():
    wh = torch.tensor([[5.0, 5.0], [5.0, 5.0], [8.0, 3.0]])
    with pytest.raises(ValueError, match="k=3 clusters need at least 3 distinct sizes, but wh has only 2"):
        kmeans_anchors(wh, k=3)
    with pytest.raises(ValueError, match=r"wh\[1\] must hold a positive finite width and height"):
        kmeans_anchors(torch.tensor([[5.0, 5.0], [0.0, 4.0]]), k=1)
    with pytest.raises(ValueError, match=r"wh\[0\]"):
        kmeans_anchors(torch.tensor([[float("nan"), 5.0]]), k=1)
    with pytest.raises(ValueError, match=r"shape \[N, 2\]"):
        kmeans_anchors(torch.ones(4, 4), k=1)
    with pytest.raises(ValueError, match="k must be"):
        kmeans_anchors(wh, k=0)
    with pytest.raises(ValueError, match="initial_centers must have shape"):
        kmeans_anchors(wh, k=2, initial_centers=torch.ones(3, 2))
    with pytest.raises(ValueError, match="at least one"):
        anchor_fitness(torch.zeros(0, 2), torch.ones(1, 2))


def test_anchor_fitness_matches_loop_reference():
    _, wh = _clustered_wh(seed=5, per_cluster=5)
    anchors = torch.tensor([[10.0, 10.0], [50.0, 80.0], [300.0, 300.0]])
    expected = sum(max(row) for row in reference_wh_iou(wh, anchors).tolist()) / len(wh)
    # The mean of the best IoUs, in float32 (the library) and float64 (the loop): both running bounds,
    # the mean modelled as a product with the rounded 1/n (one rounding more than a division: it covers
    # torch's mean and Python's sum / len).
    bound = sum(
        (wh_iou_formula(wh.double(), anchors.double(), dtype).amax(1).sum(0) * (1 / len(wh))).error
        for dtype in (torch.float32, torch.float64)
    )
    assert_bounded(torch.tensor(anchor_fitness(wh, anchors)), torch.tensor(expected), bound)


def test_wh_iou_mixed_devices_error_names_both():
    with pytest.raises(ValueError, match="wh1 is on cpu but wh2 is on meta"):
        wh_iou(torch.ones(2, 2), torch.ones(2, 2, device="meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_results_equal_cpu():
    generator = AnchorGenerator(((32, 64),), ((0.5, 1.0, 2.0),))
    cpu = generator(torch.zeros(1, 3, 64, 64), [torch.zeros(1, 1, 8, 8)])[0]
    cuda = generator(torch.zeros(1, 3, 64, 64, device="cuda"), [torch.zeros(1, 1, 8, 8, device="cuda")])[0]
    assert cuda.device.type == "cuda"
    assert torch.equal(cuda.cpu(), cpu)  # sqrt, division, products, rounding: IEEE on both devices
    # k-means on the GPU adds with atomics (any order): the same partition, then each centre the mean
    # of the same members, within the float32 sum bounds of both devices.
    _, wh = _clustered_wh(seed=1, per_cluster=20)
    on_gpu, on_cpu = kmeans_anchors(wh.cuda(), 9).cpu(), kmeans_anchors(wh, 9)
    partitions = [wh_iou(wh, centres).argmax(1) for centres in (on_gpu, on_cpu)]
    assert torch.equal(partitions[0], partitions[1])
    members = [wh[partitions[1] == c].double() for c in range(9)]
    bound = torch.stack([2 * (exact(m, torch.float32).sum(0) / len(m)).error for m in members])
    assert_bounded(on_gpu, on_cpu, bound)
