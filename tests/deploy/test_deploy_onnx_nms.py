"""The NMS graph (visionkit.deploy.onnx_nms) against visionkit.ops.batched_nms.

Exactness argument: both keep a box unless a kept box of its class has ``IoU > threshold``, visit boxes in
the same order (the graph ranks them with TopK, ties → lower index first, as our stable sort) and compute
IoU in float32 from the same coordinates with at most 8 rounded operations each (two differences and a
product for the intersection, the same for each area, a sum, a difference, a division), so each IoU is
within ``γ₃₂(8)`` relative of the exact one. The two can only differ on a pair whose exact IoU lies within
``2·γ₃₂(8)`` of the threshold; the random cases assert that no pair does, except the exact ties built on
purpose (small integers: every operation exact in float32, IoU exactly the threshold).
"""

from __future__ import annotations

import pytest
import torch

from tolerances import gamma
from visionkit.deploy.onnx_nms import OnnxNms, write_nms_graph
from visionkit.ops import batched_nms


@pytest.fixture(scope="module")
def graph_nms(tmp_path_factory: pytest.TempPathFactory) -> OnnxNms:
    return OnnxNms(write_nms_graph(num_classes=4, path=tmp_path_factory.mktemp("nms") / "nms.onnx"))


def _exact_iou(boxes: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU in float64 (exact enough: float64 rounding is 2⁻²⁹ of float32's), 0 for degenerate."""
    b = boxes.double()
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    low = torch.maximum(b[:, None, :2], b[None, :, :2])
    high = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (high - low).clamp(min=0).prod(-1)
    union = area[:, None] + area[None, :] - inter
    valid = (area[:, None] > 0) & (area[None, :] > 0) & (inter > 0)
    return torch.where(valid, inter / union.clamp(min=1e-300), torch.zeros_like(inter))


def _no_near_threshold_pairs(boxes, labels, threshold: float) -> None:
    iou = _exact_iou(boxes)
    same = labels[:, None] == labels[None, :]
    margin = 2 * gamma(8, torch.float32) * max(threshold, 1e-30)
    near = same & ((iou - threshold).abs() <= margin) & (iou != threshold)
    assert not bool(near.any()), "a pair within rounding of the threshold: the precondition fails"


def test_random_boxes_with_score_ties_and_degenerate_boxes(graph_nms: OnnxNms) -> None:
    generator = torch.Generator().manual_seed(0)
    for trial in range(300):
        n = int(torch.randint(0, 80, (1,), generator=generator))
        corner = torch.rand(n, 2, generator=generator) * 60
        size = torch.rand(n, 2, generator=generator) * 30 - 3  # some inverted and zero-area boxes
        size[torch.rand(n, 2, generator=generator) < 0.05] = 0.0
        boxes = torch.cat([corner, corner + size], 1)
        scores = torch.randint(0, 6, (n,), generator=generator).float() / 6  # many equal scores
        labels = torch.randint(0, 4, (n,), generator=generator)
        threshold = float(torch.rand(1, generator=generator) * 0.9 + 0.05)
        _no_near_threshold_pairs(boxes, labels, threshold)
        expected = batched_nms(boxes, scores, labels, threshold)
        assert torch.equal(graph_nms(boxes, scores, labels, threshold), expected), trial


def test_iou_exactly_at_the_threshold_survives_and_above_is_suppressed(graph_nms: OnnxNms) -> None:
    """IoU 100/200 = 0.5 exactly (integers): kept by both; 100/190 > 0.5: suppressed by both."""
    for second, kept in (([0.0, 0.0, 20.0, 10.0], [0, 1]), ([0.0, 0.0, 19.0, 10.0], [0])):
        boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], second])
        scores, labels = torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.int64)
        assert batched_nms(boxes, scores, labels, 0.5).tolist() == kept
        assert graph_nms(boxes, scores, labels, 0.5).tolist() == kept


def test_equal_scores_keep_the_lower_index_first(graph_nms: OnnxNms) -> None:
    """Identical boxes with equal scores: the lower index is kept (ONNX's operator alone leaves the order
    of equal scores to a heap); other classes are not suppressed by them."""
    boxes = torch.tensor([[5.0, 5.0, 25.0, 25.0]] * 6)
    scores = torch.full((6,), 0.5)
    labels = torch.tensor([2, 0, 2, 0, 1, 2])
    expected = batched_nms(boxes, scores, labels, 0.3)
    assert expected.tolist() == [0, 1, 4]
    assert torch.equal(graph_nms(boxes, scores, labels, 0.3), expected)


def test_empty_and_all_suppressed(graph_nms: OnnxNms) -> None:
    empty = graph_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)
    assert empty.dtype == torch.int64 and empty.shape == (0,)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 3)
    got = graph_nms(boxes, torch.tensor([0.1, 0.3, 0.2]), torch.zeros(3, dtype=torch.int64), 0.0)
    assert got.tolist() == [1]


def test_the_graph_holds_onnx_nonmaxsuppression(tmp_path) -> None:
    import onnx

    path = write_nms_graph(3, tmp_path / "nms.onnx")
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert "NonMaxSuppression" in ops and ops.count("TopK") == 2
    with pytest.raises(ValueError, match="num_classes"):
        write_nms_graph(0, tmp_path / "bad.onnx")


def test_hard_nms_engine_swaps_the_suppression_inside_its_block_only() -> None:
    from visionkit.models.detectors.postprocess import PostProcess, hard_nms_engine, suppress

    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11]])
    scores, labels, settings = torch.tensor([0.9, 0.8]), torch.zeros(2, dtype=torch.int64), PostProcess()
    calls = []

    def engine(b, s, lab, threshold):
        calls.append(threshold)
        return torch.tensor([1, 0])

    with hard_nms_engine(engine):
        assert suppress(boxes, scores, labels, settings)[0].tolist() == [1, 0]
    assert calls == [0.5]
    assert suppress(boxes, scores, labels, settings)[0].tolist() == [0]  # batched_nms again
    soft = settings.replace(nms_method="soft_linear")
    with hard_nms_engine(engine):
        suppress(boxes, scores, labels, soft)  # Soft-NMS is not the hard engine's
    assert calls == [0.5]
