"""Soft-NMS against the plain sequential loop of Bodla et al. (2017), written out in Python."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nms_references import assert_integer_boxes, assert_soft_scores, ref_soft_nms

import visionkit.ops._nms_core as core
from running_error import Bounded, assert_bounded, exact
from tolerances import unit_roundoff
from visionkit.ops.soft_nms import SoftNMS, batched_soft_nms, soft_nms

soft_module = importlib.import_module("visionkit.ops.soft_nms")  # `ops.soft_nms` is the function
pytestmark = pytest.mark.usefixtures("nms_backend")  # every test: C loops and PyTorch engines


def clustered(num_boxes: int, seed: int, num_labels: int = 1):
    g = torch.Generator().manual_seed(seed)
    num_objects = max(1, num_boxes // 15)
    centres = torch.rand(num_objects, 2, generator=g, dtype=torch.float64) * 200
    sizes = 8 + torch.rand(num_objects, 2, generator=g, dtype=torch.float64) * 40
    owner = torch.randint(num_objects, (num_boxes,), generator=g)
    wh = sizes[owner] * torch.exp(torch.randn(num_boxes, 2, generator=g, dtype=torch.float64) * 0.15)
    c = centres[owner] + torch.randn(num_boxes, 2, generator=g, dtype=torch.float64) * 0.2 * sizes[owner]
    boxes = torch.cat((c - wh / 2, c + wh / 2), dim=1)
    return (
        boxes,
        torch.rand(num_boxes, generator=g, dtype=torch.float64),
        torch.randint(num_labels, (num_boxes,)),
    )


def assert_matches(got, want, method, sigma=0.5):
    """Same selections as the loop; scores within the bound derived in :func:`assert_soft_scores`."""
    keep, decayed = got
    assert keep.dtype == torch.int64
    assert keep.tolist() == want[0]
    assert_soft_scores(decayed, want[1], want[2], method, sigma)


@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("num_boxes", [0, 1, 40, 400])
def test_soft_nms_equals_reference_loop(method, num_boxes):
    boxes, scores, _ = clustered(num_boxes, seed=num_boxes)
    assert_matches(soft_nms(boxes, scores, method), ref_soft_nms(boxes, scores, method), method)


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_settings_are_honoured(method):
    boxes, scores, _ = clustered(300, seed=2)
    for sigma, nt, threshold in [(0.1, 0.5, 0.05), (2.0, 0.0, 0.3), (0.5, 0.9, 0.0)]:
        got = soft_nms(boxes, scores, method, sigma=sigma, iou_threshold=nt, score_threshold=threshold)
        assert_matches(got, ref_soft_nms(boxes, scores, method, sigma, nt, threshold), method, sigma)
        assert bool((got[1] >= threshold).all())


def test_score_threshold_drops_decayed_boxes_and_returns_decayed_scores():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [0, 0, 10, 8], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.0005])
    keep, decayed = soft_nms(boxes, scores, "linear", iou_threshold=0.3, score_threshold=0.001)
    # box1: 0.8 * (1 - 0.9) = 0.08 and box2: 0.7 * (1 - 0.8) = 0.14 after box0; box2 is selected next and
    # decays box1 by IoU 80/90 to 0.08 / 9; box3 starts under the threshold and is never selected
    assert keep.tolist() == [0, 2, 1]
    assert_bounded(decayed, torch.tensor([0.9, 0.14, 0.08 / 9], dtype=torch.float64), linear_decay_bound())
    assert soft_nms(boxes, scores, "linear", score_threshold=0.01)[0].tolist() == [0, 2]  # 0.0089 < 0.01
    assert soft_nms(boxes, scores, "linear", score_threshold=0.15)[0].tolist() == [0]  # 0.14 < 0.15
    assert soft_nms(boxes, scores, "linear", score_threshold=0.0)[0].tolist() == [0, 2, 1, 3]


def linear_decay_bound() -> torch.Tensor:
    """The float32 evaluation of 0.9, 0.7·(1 − 80/100) and 0.8·(1 − 90/100)·(1 − 80/90) from the float32
    scores (each within u₃₂ of the decimal) and the exact integer areas: its running error bound
    (tests/running_error.py) against the decimal values."""
    scores = Bounded(torch.tensor([0.9, 0.8, 0.7], dtype=torch.float64), 0.0, torch.float32)
    scores.error = unit_roundoff(torch.float32) * scores.value  # torch.tensor rounds the decimals
    pairs = ((90, 100), (80, 100), (80, 90))  # intersection and union of boxes 0-1, 0-2, 2-1
    iou = [exact(torch.tensor(float(inter)), torch.float32) / float(union) for inter, union in pairs]
    box2 = scores[2] * (1 - iou[1])
    box1 = scores[1] * (1 - iou[0]) * (1 - iou[2])
    return torch.stack([scores[0].error, box2.error, box1.error])


def test_exact_threshold_uses_strictly_greater_like_hard_nms():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]], dtype=torch.float64)  # IoU exactly 0.5
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    assert soft_nms(boxes, scores, "linear", iou_threshold=0.5)[1].tolist() == [0.9, 0.8]
    assert soft_nms(boxes, scores, "linear", iou_threshold=0.49)[1].tolist() == [0.9, 0.4]


def test_ties_and_duplicates_select_lower_index_first():
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 3 + [[100.0, 0, 110, 10]], dtype=torch.float64)
    scores = torch.full((4,), 0.5, dtype=torch.float64)
    for method in ("linear", "gaussian"):
        assert_matches(soft_nms(boxes, scores, method), ref_soft_nms(boxes, scores, method), method)
        assert soft_nms(boxes, scores, method)[0].tolist()[:2] == [0, 3]


def test_batched_equals_reference_and_per_class_merge():
    boxes, scores, labels = clustered(400, seed=4, num_labels=4)
    for method in ("linear", "gaussian"):
        got = batched_soft_nms(boxes, scores, labels, method)
        assert_matches(got, ref_soft_nms(boxes, scores, method, labels=labels), method)
        merged = []
        for label in labels.unique().tolist():
            index = (labels == label).nonzero().squeeze(1)
            keep, decayed = soft_nms(boxes[index], scores[index], method)
            merged += list(zip(decayed.tolist(), index[keep].tolist(), strict=True))
        merged.sort(key=lambda pair: (-pair[0], pair[1]))
        assert got[0].tolist() == [i for _, i in merged]


def test_sequential_fallback_equals_rounds(monkeypatch):
    boxes, scores, labels = clustered(300, seed=6, num_labels=2)
    want = ref_soft_nms(boxes, scores, "gaussian", labels=labels)
    monkeypatch.setattr(core, "EDGE_BUDGET", 10)
    monkeypatch.setattr("visionkit.ops._overlap_pairs.EDGE_BUDGET", 10)
    assert_matches(batched_soft_nms(boxes, scores, labels, "gaussian"), want, "gaussian")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_dtypes(dtype):
    boxes, scores, _ = clustered(200, seed=8)
    boxes, scores = boxes.round().to(dtype), scores.to(dtype)
    keep, decayed = soft_nms(boxes, scores, "gaussian")
    assert decayed.dtype == (torch.float32 if dtype != torch.float32 else dtype)
    assert_integer_boxes(boxes.float())
    want = ref_soft_nms(boxes.float(), scores.float(), "gaussian")  # the loop computes in float64
    assert keep.tolist() == want[0]
    assert_soft_scores(decayed, want[1], want[2], "gaussian", want_in_float64=True)


def test_inputs_requiring_grad_give_detached_results_without_warnings():
    import warnings

    boxes, scores, _ = clustered(200, seed=10)
    want = soft_nms(boxes, scores, "gaussian")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keep, decayed = soft_nms(boxes.requires_grad_(), scores.requires_grad_(), "gaussian")
    assert keep.tolist() == want[0].tolist() and not decayed.requires_grad
    assert torch.equal(decayed, want[1])


def test_bad_input_and_non_finite():
    boxes, scores = torch.rand(3, 4), torch.rand(3)
    with pytest.raises(ValueError, match="method must be 'linear' or 'gaussian'"):
        soft_nms(boxes, scores, "hard")
    with pytest.raises(ValueError, match="sigma must be > 0"):
        soft_nms(boxes, scores, "gaussian", sigma=0)
    with pytest.raises(ValueError, match=r"scores must have shape \[N\]"):
        soft_nms(boxes, scores[None], "gaussian")
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\], got \[3, 5\]"):
        soft_nms(torch.rand(3, 5), scores)
    bad = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    with pytest.warns(RuntimeWarning, match=r"soft_nms: 1 box\(es\) with NaN/Inf"):
        keep, decayed = soft_nms(bad, torch.tensor([float("nan"), 0.5]))
    assert keep.tolist() == [1] and decayed.tolist() == [0.5]
    with pytest.raises(ValueError, match="strict=True"):
        soft_nms(bad, torch.tensor([float("inf"), 0.5]), strict=True)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(*[st.integers(0, 20)] * 2, *[st.integers(-1, 10)] * 2, st.integers(0, 5)), max_size=30
    ),
    st.sampled_from(["linear", "gaussian"]),
    st.sampled_from([0.0, 0.3, 0.5]),
)
def test_soft_nms_hypothesis(rows, method, nt):
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h, _ in rows], dtype=torch.float64).reshape(-1, 4)
    scores = torch.tensor([s / 5 for *_, s in rows], dtype=torch.float64)
    labels = torch.tensor([s % 2 for *_, s in rows], dtype=torch.int64)
    want = ref_soft_nms(boxes, scores, method, nt=nt)
    assert_matches(soft_nms(boxes, scores, method, iou_threshold=nt), want, method)
    want = ref_soft_nms(boxes, scores, method, nt=nt, labels=labels)
    assert_matches(batched_soft_nms(boxes, scores, labels, method, iou_threshold=nt), want, method)


def test_module_and_docstring_examples():
    module = SoftNMS(method="gaussian", sigma=0.3)
    assert "method='gaussian'" in repr(module)
    boxes, scores, labels = clustered(50, seed=9, num_labels=2)
    assert module(boxes, scores)[0].tolist() == ref_soft_nms(boxes, scores, "gaussian", 0.3)[0]
    assert (
        module(boxes, scores, labels)[0].tolist()
        == ref_soft_nms(boxes, scores, "gaussian", 0.3, labels=labels)[0]
    )
    assert doctest.testmod(soft_module, extraglobs={"torch": torch}).failed == 0
