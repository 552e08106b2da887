"""Tests for visionkit.ops.matcher and visionkit.ops.sampler: loop references, torchvision golden, edges."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tolerances import binomial_interval
from visionkit.ops.anchors import AnchorGenerator
from visionkit.ops.boxes import box_iou
from visionkit.ops.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher, match_by_quality
from visionkit.ops.sampler import BalancedPositiveNegativeSampler, sample_balanced

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "torchvision_coder_golden.pt"


# ------------------------------------------------------------------ slow, obviously correct reference
def reference_match(quality, high, low, allow_low_quality):
    """Per-anchor loop, then per-gt loop for the low-quality pass (torchvision semantics, except that a gt
    whose best quality is 0 claims nothing)."""
    # thresholds are compared in the dtype of the quality matrix (rounded to it), as torchvision does
    high = torch.tensor(high, dtype=quality.dtype).item()
    low = torch.tensor(low, dtype=quality.dtype).item()
    rows = quality.tolist()
    num_gt, num_anchors = quality.shape
    if num_gt == 0 or num_anchors == 0:
        return torch.full((num_anchors,), -1, dtype=torch.int64)
    best_gt, matches = [], []
    for n in range(num_anchors):
        column = [rows[m][n] for m in range(num_gt)]
        best = max(column)
        best_index = column.index(best)  # first (lowest) gt index on ties
        best_gt.append(best_index)
        matches.append(best_index if best >= high else (-2 if best >= low else -1))
    if allow_low_quality:
        for m in range(num_gt):
            best = max(rows[m])
            if best <= 0:
                continue
            for n in range(num_anchors):
                if rows[m][n] == best:
                    matches[n] = best_gt[n]
    return torch.tensor(matches, dtype=torch.int64)


def quantised_iou(num_gt, num_anchors, seed, levels=10, dtype=torch.float32):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels + 1, (num_gt, num_anchors), generator=generator).to(dtype) / levels


@pytest.mark.parametrize("allow", [False, True])
@pytest.mark.parametrize(("num_gt", "num_anchors", "seed"), [(1, 30, 0), (4, 100, 1), (9, 257, 2)])
def test_matches_loop_reference_with_many_ties(num_gt, num_anchors, seed, allow):
    iou = quantised_iou(num_gt, num_anchors, seed)
    for high, low in ((0.7, 0.3), (0.5, 0.5), (0.6, 0.0)):
        expected = reference_match(iou, high, low, allow)
        assert torch.equal(match_by_quality(iou, high, low, allow), expected)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(0, 5),
    st.integers(0, 12),
    st.integers(0, 2**31 - 1),
    st.sampled_from([(0.7, 0.3), (0.5, 0.4), (0.5, 0.5), (1.0, 0.0)]),
    st.booleans(),
)
def test_matcher_fuzz(num_gt, num_anchors, seed, thresholds, allow):
    iou = quantised_iou(num_gt, num_anchors, seed, levels=4)
    ours = match_by_quality(iou, *thresholds, allow_low_quality_matches=allow)
    assert ours.dtype == torch.int64 and ours.shape == (num_anchors,)
    assert torch.equal(ours, reference_match(iou, *thresholds, allow))


def test_thresholds_are_inclusive_below():
    # high is inclusive (>= is positive), low is inclusive on the ignored side ([low, high) is -2)
    iou = torch.tensor([[0.7, 0.6999, 0.3, 0.2999, 0.0]], dtype=torch.float64)
    matches = match_by_quality(iou, 0.7, 0.3, allow_low_quality_matches=False)
    assert matches.tolist() == [
        0,
        BETWEEN_THRESHOLDS,
        BETWEEN_THRESHOLDS,
        BELOW_LOW_THRESHOLD,
        BELOW_LOW_THRESHOLD,
    ]
    # float32 0.7 is 0.69999999 as a double, yet it is "at" the threshold: compared in the matrix dtype
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        at_threshold = torch.tensor([[0.7, 0.3]], dtype=dtype)
        assert match_by_quality(at_threshold, 0.7, 0.3, False).tolist() == [0, BETWEEN_THRESHOLDS]


def test_low_quality_matches_claim_all_ties_and_keep_best_gt_of_each_anchor():
    iou = torch.tensor(
        [
            [0.4, 0.1, 0.4, 0.0, 0.2],  # gt 0: best 0.4 at anchors 0 and 2 (tie)
            [0.1, 0.5, 0.5, 0.0, 0.2],  # gt 1: best 0.5 at anchors 1 and 2; anchor 2 prefers gt 1
            [0.0, 0.0, 0.0, 0.0, 0.3],  # gt 2: best 0.3 at anchor 4 whose own best gt is 2
        ]
    )
    assert match_by_quality(iou, 0.7, 0.3, False).tolist() == [-2, -2, -2, -1, -2]
    assert match_by_quality(iou, 0.7, 0.3, True).tolist() == [0, 1, 1, -1, 2]
    # an anchor tied between two gts keeps the lower gt index, even when the other gt claims it as its
    # best: gt 1 then has no positive anchor (torchvision / detectron2 behaviour)
    tied = torch.tensor([[0.8, 0.1], [0.8, 0.2]])
    assert match_by_quality(tied, 0.7, 0.3, True).tolist() == [0, -1]


def test_gt_without_any_overlap_claims_nothing():
    # torchvision would match every zero-IoU anchor here (documented deviation): the image stays background
    iou = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.9, 0.1]])
    assert match_by_quality(iou, 0.7, 0.3, True).tolist() == [-1, 1, -1]
    zero_area_gt = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    assert Matcher()(box_iou(zero_area_gt, anchors)).tolist() == [-1, -1]


def test_empty_inputs():
    matches = match_by_quality(torch.zeros(0, 5))
    assert matches.tolist() == [-1] * 5 and matches.dtype == torch.int64
    assert match_by_quality(torch.zeros(3, 0)).shape == (0,)
    assert match_by_quality(torch.zeros(0, 0)).shape == (0,)


def test_dtypes_give_same_matches():
    # values written as k / 10 in each dtype meet thresholds written as 0.7 / 0.3 the same way in every dtype
    expected = match_by_quality(quantised_iou(4, 64, seed=3))
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        iou = quantised_iou(4, 64, seed=3, dtype=dtype)
        assert torch.equal(match_by_quality(iou), expected)
        assert torch.equal(match_by_quality(iou), reference_match(iou, 0.7, 0.3, True))


def test_integer_quality_matrix_is_accepted():
    iou = quantised_iou(3, 40, seed=8)
    assert torch.equal(match_by_quality((iou * 10).long(), 7, 3), match_by_quality(iou * 10, 7, 3))


def test_bad_inputs():
    with pytest.raises(ValueError, match="low_threshold must be <= high_threshold"):
        Matcher(0.3, 0.7)
    with pytest.raises(ValueError, match="high_threshold must be a finite number"):
        Matcher(float("nan"), 0.3)
    with pytest.raises(ValueError, match=r"Tensor\[M gt, N predictions\], got \[5\]"):
        match_by_quality(torch.zeros(5))
    nan = torch.tensor([[0.1, 0.2], [0.3, float("nan")]])
    with pytest.raises(ValueError, match=r"NaN, first at \[gt 1, prediction 1\]"):
        match_by_quality(nan)


def test_matcher_module_and_repr():
    matcher = Matcher(0.5, 0.4, allow_low_quality_matches=False)
    assert repr(matcher) == "Matcher(high_threshold=0.5, low_threshold=0.4, allow_low_quality_matches=False)"
    iou = quantised_iou(3, 20, seed=4)
    assert torch.equal(matcher(iou), reference_match(iou, 0.5, 0.4, False))
    assert Matcher.BELOW_LOW_THRESHOLD == -1 and Matcher.BETWEEN_THRESHOLDS == -2


def test_matcher_equals_torchvision_golden():
    if not GOLDEN.exists():
        pytest.skip(f"{GOLDEN} missing (made by tests/data/make_torchvision_coder_golden.py)")
    cases = torch.load(GOLDEN, weights_only=False)["matcher"]
    assert len(cases) == 8
    for case in cases:
        assert bool((case["iou"].max(dim=1).values > 0).all())  # where our deviation cannot apply
        ours = match_by_quality(case["iou"], case["high"], case["low"], case["allow"])
        assert torch.equal(ours, case["matches"])


# ------------------------------------------------------------------ sampler
def test_sampler_counts_and_never_samples_ignored():
    matches = torch.tensor([0] * 10 + [-1] * 300 + [-2] * 50 + [3] * 200)
    positive, negative = sample_balanced(matches, 256, 0.5, torch.Generator().manual_seed(0))
    assert positive.dtype == torch.bool and negative.dtype == torch.bool
    assert int(positive.sum()) == 128 and int(negative.sum()) == 128
    assert bool((matches[positive] >= 0).all()) and bool((matches[negative] == -1).all())
    assert not bool((positive & negative).any())


def test_sampler_takes_all_when_fewer():
    matches = torch.tensor([2, 5, -1, -1, -2, -2, -1])
    positive, negative = sample_balanced(matches, 256, 0.5)
    assert positive.tolist() == [True, True] + [False] * 5
    assert negative.tolist() == [False, False, True, True, False, False, True]
    # few positives: the batch is filled with negatives
    matches = torch.tensor([1] * 3 + [-1] * 100)
    positive, negative = sample_balanced(matches, 20, 0.5, torch.Generator().manual_seed(1))
    assert int(positive.sum()) == 3 and int(negative.sum()) == 17


def test_sampler_is_deterministic_with_generator_and_roughly_uniform():
    matches = torch.tensor([0] * 40 + [-1] * 40)
    first = sample_balanced(matches, 20, 0.5, torch.Generator().manual_seed(5))
    second = sample_balanced(matches, 20, 0.5, torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    other = sample_balanced(matches, 20, 0.5, torch.Generator().manual_seed(6))
    assert not torch.equal(first[0], other[0])
    generator = torch.Generator().manual_seed(7)
    counts = torch.zeros(80)
    for _ in range(400):
        positive, negative = sample_balanced(matches, 20, 0.5, generator)
        counts += (positive | negative).float()
    # each entry is picked with probability 10/40 in each of 400 independent draws: Binomial(400, 1/4)
    # counts (mean 100, sd 8.7); the interval leaves a false failure of at most 1e-6 for all 80 entries.
    low, high = binomial_interval(400, 10 / 40, 1e-6 / 80)
    assert float(counts.min()) >= low and float(counts.max()) <= high
    assert float(counts.sum()) == 400 * 20


def test_sampler_edge_cases():
    positive, negative = sample_balanced(torch.zeros(0, dtype=torch.int64), 256, 0.5)
    assert positive.shape == (0,) and negative.shape == (0,)
    positive, negative = sample_balanced(torch.tensor([-2, -2, 0]), 0, 0.5)
    assert not positive.any() and not negative.any()
    positive, negative = sample_balanced(torch.tensor([0, 1, -1]), 2, 0.0)
    assert positive.tolist() == [False] * 3 and negative.tolist() == [False, False, True]


def test_sampler_bad_inputs():
    with pytest.raises(ValueError, match="integer tensor"):
        sample_balanced(torch.tensor([0.0, -1.0]))
    with pytest.raises(ValueError, match="-2 \\(ignored\\), got -3"):
        sample_balanced(torch.tensor([0, -3]))
    with pytest.raises(ValueError, match="1-D"):
        sample_balanced(torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedPositiveNegativeSampler(256, 1.5)
    with pytest.raises(ValueError, match="batch_size_per_image"):
        BalancedPositiveNegativeSampler(-1, 0.5)
    with pytest.raises(TypeError, match="one Tensor"):
        BalancedPositiveNegativeSampler()(torch.tensor([0, -1]))


def test_rpn_pipeline_anchors_match_sample():
    """Anchors → IoU with gt → matcher → sampler, as the RPN uses them (handbook §10)."""
    anchors = AnchorGenerator(((32, 64, 128),), ((0.5, 1.0, 2.0),))(
        torch.zeros(2, 3, 128, 128), [torch.zeros(2, 4, 8, 8)]
    )
    gt = [torch.tensor([[10.0, 12.0, 70.0, 60.0], [80.0, 80.0, 120.0, 126.0]]), torch.zeros(0, 4)]
    matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
    matches = [matcher(box_iou(g, a)) for g, a in zip(gt, anchors, strict=True)]
    assert set(matches[0][matches[0] >= 0].tolist()) == {0, 1}  # every object has a positive anchor
    assert bool((matches[1] == -1).all())  # image without objects: all negatives
    sampler = BalancedPositiveNegativeSampler(256, 0.5)
    positive, negative = sampler(matches, generator=torch.Generator().manual_seed(0))
    assert int(positive[1].sum()) == 0 and int(negative[1].sum()) == 256
    assert int(positive[0].sum()) == int((matches[0] >= 0).sum())
    assert int(positive[0].sum()) + int(negative[0].sum()) == 256


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matcher_and_sampler():
    iou = quantised_iou(5, 300, seed=9)
    cuda_matches = match_by_quality(iou.cuda())
    assert torch.equal(cuda_matches.cpu(), match_by_quality(iou))
    positive, negative = sample_balanced(
        cuda_matches, 64, 0.25, torch.Generator(device="cuda").manual_seed(0)
    )
    assert positive.device.type == "cuda" and int(positive.sum()) == 16 and int(negative.sum()) == 48
    positive, _ = sample_balanced(cuda_matches, 64, 0.25, torch.Generator().manual_seed(0))  # CPU generator
    assert positive.device.type == "cuda"
