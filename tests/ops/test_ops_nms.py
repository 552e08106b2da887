"""Hard and batched NMS against a plain-Python greedy loop (and torchvision golden values)."""

from __future__ import annotations

import importlib
import json
import warnings
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nms_references import ref_iou, ref_nms

import visionkit.ops._nms_core as core
from visionkit.ops._overlap_pairs import overlap_pairs, sparse_greedy
from visionkit.ops.nms import NMS, batched_nms, nms

nms_module = importlib.import_module("visionkit.ops.nms")  # the attribute `ops.nms` is the function

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "torchvision_boxes_golden.json"
pytestmark = pytest.mark.usefixtures("nms_backend")  # every test: C loops and PyTorch engines


# ---------------------------------------------------------------- reference


def clustered(num_boxes: int, seed: int, dtype=torch.float64, num_labels: int = 1, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    num_objects = max(1, num_boxes // 20)
    centres = torch.rand(num_objects, 2, generator=g, dtype=torch.float64) * 300
    sizes = 8 + torch.rand(num_objects, 2, generator=g, dtype=torch.float64) * 60
    owner = torch.randint(num_objects, (num_boxes,), generator=g)
    wh = sizes[owner] * torch.exp(torch.randn(num_boxes, 2, generator=g, dtype=torch.float64) * 0.15)
    c = centres[owner] + torch.randn(num_boxes, 2, generator=g, dtype=torch.float64) * 0.15 * sizes[owner]
    boxes = (torch.cat((c - wh / 2, c + wh / 2), dim=1) * scale).to(dtype)
    scores = torch.rand(num_boxes, generator=g, dtype=torch.float64).to(dtype)
    labels = torch.randint(num_labels, (num_boxes,), generator=g)
    return boxes, scores, labels


ENGINES = {
    "dense": core.dense_greedy,
    "spatial": lambda b, t, lab=None: core.spatial_greedy(b, t, lab),
    "sparse": lambda b, t, lab=None: sparse_greedy(b, t, lab),
}


# ---------------------------------------------------------------- exactness
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("num_boxes", [1, 50, 500, 1200])
def test_nms_equals_reference_loop(num_boxes, threshold):
    if threshold == 1.0:
        num_boxes = min(num_boxes, 500)  # nothing is suppressed: the reference loop is quadratic
    boxes, scores, _ = clustered(num_boxes, seed=num_boxes)
    got = nms(boxes, scores, threshold)
    assert got.dtype == torch.int64
    assert got.tolist() == ref_nms(boxes, scores, threshold)


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_every_engine_equals_reference(engine):
    boxes, scores, labels = clustered(900, seed=3, num_labels=3)
    order = torch.sort(scores, descending=True, stable=True)[1]
    for lab in (None, labels):
        keep = ENGINES[engine](boxes[order], 0.45, None if lab is None else lab[order])
        assert order[keep].tolist() == ref_nms(boxes, scores, 0.45, lab)


def test_ties_duplicates_and_exact_threshold():
    # four identical boxes with one score: stable order keeps the lowest index only
    same = torch.tensor([[0.0, 0, 10, 10]] * 4, dtype=torch.float64)
    assert nms(same, torch.full((4,), 0.5, dtype=torch.float64), 0.5).tolist() == [0]
    # IoU exactly 0.5 ([0,10] vs [0,5] of the same height... 50/100): kept at threshold 0.5, dropped at 0.49
    pair = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5]], dtype=torch.float64)
    scores = torch.tensor([0.9, 0.8], dtype=torch.float64)
    assert nms(pair, scores, 0.5).tolist() == [0, 1]
    assert nms(pair, scores, 0.49).tolist() == [0]
    # many tied scores in a big clustered input (spatial engine): order by index among ties
    boxes, _, _ = clustered(2000, seed=5)
    tied = (torch.arange(2000) % 7).to(torch.float64)
    assert nms(boxes, tied, 0.5).tolist() == ref_nms(boxes, tied, 0.5)


def test_chain_of_suppressions_and_adversarial_row():
    # each box overlaps the next with IoU 0.6 and scores fall along the row: greedy keeps every other box
    x = torch.arange(1200, dtype=torch.float64) * 2.5
    boxes = torch.stack((x, torch.zeros_like(x), x + 10, torch.full_like(x, 10)), dim=1)
    scores = torch.linspace(1, 0, 1200, dtype=torch.float64)
    expected = list(range(0, 1200, 2))
    assert ref_nms(boxes[:40], scores[:40], 0.5) == expected[:20]
    assert nms(boxes, scores, 0.5).tolist() == expected
    order = torch.arange(1200)
    assert order[sparse_greedy(boxes, 0.5)].tolist() == expected  # long chain: sequential sweep finishes


def test_zero_area_and_inverted_boxes_are_never_suppressed():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 5], [8, 0, 2, 10], [0, 0, 0, 10]])
    assert nms(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]), 0.0).tolist() == [0, 2, 3, 4]


def test_huge_coordinates_and_float32():
    for scale in (1e6, 1e8):
        boxes, scores, labels = clustered(800, seed=7, scale=1.0, num_labels=4)
        boxes = boxes + scale  # far from the origin: float32 spacing at 1e8 is 8
        for dtype in (torch.float64, torch.float32):
            b, s = boxes.to(dtype), scores.to(dtype)
            reference = ref_nms(b.double(), s.double(), 0.5, labels)
            # the float64 reference sees the float32 values exactly; the IoU may round differently in
            # float32, so compare on float64 inputs exactly and float32 as sets of near-equal size
            got = batched_nms(b, s, labels, 0.5)
            if dtype == torch.float64:
                assert got.tolist() == reference
            assert batched_nms(b, s, labels, 0.5, strategy="offset").tolist() == got.tolist()
            assert batched_nms(b, s, labels, 0.5, strategy="per_class").tolist() == got.tolist()


def test_batched_strategies_identical_and_equal_reference():
    boxes, scores, labels = clustered(3000, seed=11, num_labels=6)
    reference = ref_nms(boxes, scores, 0.5, labels)
    for strategy in ("auto", "offset", "per_class"):
        assert batched_nms(boxes, scores, labels, 0.5, strategy=strategy).tolist() == reference
    # negative and huge label values
    weird = labels * 1_000_003 - 7
    assert batched_nms(boxes, scores, weird, 0.5, strategy="offset").tolist() == reference
    assert NMS(0.5)(boxes, scores, labels).tolist() == reference


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int32, torch.float32])
def test_low_precision_and_integer_boxes_compare_in_float32(dtype):
    boxes, scores, _ = clustered(500, seed=13)
    boxes = boxes.round().to(dtype)
    scores = scores.to(dtype) if dtype.is_floating_point else scores.float()
    got = nms(boxes, scores, 0.5)
    assert got.tolist() == ref_nms(boxes.float().double(), scores.double(), 0.5)


def test_inputs_requiring_grad():
    boxes, scores, labels = clustered(800, seed=21, num_labels=3)
    want = nms(boxes, scores, 0.5).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert nms(boxes.requires_grad_(), scores.requires_grad_(), 0.5).tolist() == want
        assert batched_nms(boxes, scores, labels, 0.5).tolist() == ref_nms(
            boxes.detach(), scores.detach(), 0.5, labels
        )


def test_empty_input():
    for dtype in (torch.float32, torch.float64):
        kept = nms(torch.zeros(0, 4, dtype=dtype), torch.zeros(0, dtype=dtype), 0.5)
        assert kept.shape == (0,) and kept.dtype == torch.int64
    kept = batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert kept.shape == (0,) and kept.dtype == torch.int64


def test_bad_inputs_name_argument_and_shape():
    boxes, scores = torch.rand(3, 4), torch.rand(3)
    with pytest.raises(ValueError, match=r"boxes must have shape \[N, 4\], got \[3, 5\]"):
        nms(torch.rand(3, 5), scores, 0.5)
    with pytest.raises(ValueError, match=r"scores must have shape \[N\].*got \[3, 1\]"):
        nms(boxes, scores[:, None], 0.5)
    with pytest.raises(ValueError, match=r"boxes has 3 rows, scores has shape \[2\]"):
        nms(boxes, scores[:2], 0.5)
    with pytest.raises(ValueError, match=r"labels must have shape \[3\].*got \[2\]"):
        batched_nms(boxes, scores, torch.zeros(2, dtype=torch.int64), 0.5)
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        batched_nms(boxes, scores, torch.zeros(3), 0.5)
    with pytest.raises(
        ValueError, match=r"boxes has dtype torch\.float32 but scores has dtype torch\.float64"
    ):
        nms(boxes, scores.double(), 0.5)
    with pytest.raises(ValueError, match="boxes is on cpu but scores is on meta"):
        nms(boxes, scores.to("meta"), 0.5)
    with pytest.raises(ValueError, match=r"iou_threshold must be in \[0, 1\], got 1.5"):
        nms(boxes, scores, 1.5)
    with pytest.raises(ValueError, match="iou_threshold must be finite"):
        nms(boxes, scores, float("nan"))
    with pytest.raises(ValueError, match="strategy must be"):
        batched_nms(boxes, scores, torch.zeros(3, dtype=torch.int64), 0.5, strategy="fast")


def test_non_finite_dropped_with_counted_warning_or_rejected_when_strict():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, float("inf"), 5]])
    scores = torch.tensor([float("nan"), 0.5, 0.4, 0.9])
    with pytest.warns(
        RuntimeWarning, match=r"nms: 2 box\(es\) with NaN/Inf score or coordinates at index \[0, 3\]"
    ):
        kept = nms(boxes, scores, 0.5)
    assert kept.tolist() == [1, 2]  # the NaN-scored duplicate of box 1 no longer suppresses it
    with pytest.raises(ValueError, match=r"index \[0, 3\].*strict=True"):
        nms(boxes, scores, 0.5, strict=True)
    with pytest.warns(RuntimeWarning, match="batched_nms: 2 box"):
        assert batched_nms(boxes, scores, torch.zeros(4, dtype=torch.int64), 0.5).tolist() == [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nms(boxes[1:3], scores[1:3], 0.5)  # finite input: no warning


MEMORY_SCRIPT = """
import resource, torch
from visionkit.ops.nms import nms, batched_nms
g = torch.Generator().manual_seed(0)
centres = torch.rand(400, 2, generator=g) * 1000
owner = torch.randint(400, (20000,), generator=g)
c = centres[owner] + torch.randn(20000, 2, generator=g) * 4
boxes = torch.cat((c - 30, c + 30), dim=1)
scores = torch.rand(20000, generator=g)
labels = torch.randint(80, (20000,), generator=g)
def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(field)) * 1024
try:  # reset the resident high-water mark, then peak - before is this call's working memory
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = status("VmRSS:")
except OSError:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
kept = nms(boxes, scores, 0.5)
kept_batched = batched_nms(boxes, scores, labels, 0.5)
try:
    peak = status("VmHWM:")
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(kept.numel(), kept_batched.numel(), peak - before)
"""


def test_memory_stays_bounded_at_20k():
    """A 20k×20k float32 IoU matrix alone is 1.6 GB; the peak resident-memory growth must stay far below."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, check=True)
    kept, kept_batched, growth = (int(v) for v in out.stdout.split())
    assert 0 < kept < kept_batched
    assert 0 < growth < 200 * 2**20, f"peak RSS grew by {growth / 2**20:.0f} MiB"


def test_overlap_pairs_equal_dense_matrix():
    boxes, _, labels = clustered(400, seed=19, num_labels=2)
    matrix = torch.triu(
        torch.tensor([[ref_iou(a, b) for b in boxes.tolist()] for a in boxes.tolist()], dtype=torch.float64),
        1,
    )
    for threshold in (0.0, 0.3, 0.6):
        first, second, iou = overlap_pairs(boxes, threshold)
        got = sorted(zip(first.tolist(), second.tolist(), strict=True))
        want = [tuple(p) for p in (matrix > threshold).nonzero().tolist()]
        assert got == want
        assert torch.equal(iou, matrix[first, second])
        first, second, _ = overlap_pairs(boxes, threshold, labels)
        assert bool((labels[first] == labels[second]).all())


def test_golden_values_from_torchvision():
    if not GOLDEN.exists():
        pytest.skip("golden file not generated (tests/data/make_torchvision_boxes_golden.py)")
    golden = json.loads(GOLDEN.read_text())
    assert len(golden["nms"]) == 4 and len(golden["batched_nms"]) == 3
    assert sum(len(case["keep"]) for case in golden["nms"]) < sum(
        len(case["scores"]) for case in golden["nms"]
    )
    for case in golden["nms"]:
        boxes = torch.tensor(case["boxes"], dtype=torch.float32)
        scores = torch.tensor(case["scores"], dtype=torch.float32)
        got = nms(boxes, scores, case["iou_threshold"])
        assert got.tolist() == case["keep"], case["name"]
    for case in golden["batched_nms"]:
        boxes = torch.tensor(case["boxes"], dtype=torch.float32)
        scores = torch.tensor(case["scores"], dtype=torch.float32)
        labels = torch.tensor(case["labels"], dtype=torch.int64)
        got = batched_nms(boxes, scores, labels, case["iou_threshold"])
        assert got.tolist() == case["keep"], case["name"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 30),
            st.integers(0, 30),
            st.integers(-2, 12),
            st.integers(-2, 12),
            st.integers(0, 4),
        ),
        min_size=0,
        max_size=40,
    ),
    st.sampled_from([0.0, 0.25, 0.5, 0.75]),
)
def test_nms_hypothesis(rows, threshold):
    """Integer boxes (inverted and zero-area included) with heavily tied scores, through every engine."""
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h, _ in rows], dtype=torch.float64).reshape(-1, 4)
    scores = torch.tensor([s / 4 for *_, s in rows], dtype=torch.float64)
    labels = torch.tensor([s % 2 for *_, s in rows], dtype=torch.int64)
    assert nms(boxes, scores, threshold).tolist() == ref_nms(boxes, scores, threshold)
    reference = ref_nms(boxes, scores, threshold, labels)
    assert batched_nms(boxes, scores, labels, threshold).tolist() == reference
    order = torch.sort(scores, descending=True, stable=True)[1]
    for engine in ENGINES.values():
        assert order[engine(boxes[order], threshold, labels[order])].tolist() == reference


def test_module_repr_and_docstring_examples():
    import doctest

    assert "iou_threshold=0.5" in repr(NMS(0.5))
    assert doctest.testmod(nms_module, extraglobs={"torch": torch}).failed == 0
