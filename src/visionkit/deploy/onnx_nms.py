"""Class-aware hard NMS as an ONNX graph around ``NonMaxSuppression`` (``visionkit export nms=graph``).

The graph ``nms.onnx`` takes ``boxes`` ``float[N, 4]`` (xyxy), ``scores`` ``float[N]``, ``labels``
``int64[N]`` (``0..K-1``) and ``iou_threshold`` ``float[1]``, and returns ``keep`` ``int64[M]``: the kept
indices by decreasing score — the result of :func:`visionkit.ops.batched_nms` on the same inputs.

How ONNX's operator is made to agree with ours:

* **Threshold.** Both suppress a box when ``IoU > iou_threshold`` (strictly): a pair exactly at the
  threshold survives in both (ONNX Runtime's ``SuppressByIOU`` returns ``iou > threshold``; ours
  :mod:`visionkit.ops.nms`). Both compute IoU in float32 as ``inter / (area₁ + area₂ − inter)`` on the
  original coordinates, so they can only disagree on a pair whose IoU lies within a few float32 roundings
  of the threshold.
* **Ties.** ``NonMaxSuppression`` visits boxes from a ``std::priority_queue`` keyed on the score alone, so
  equal scores come out in an unspecified order; ours keeps the input order (the lower index first). The
  graph therefore ranks the boxes first with ``TopK`` (whose ties are specified: the lower index first)
  and hands the operator the ranks ``N − position`` (distinct, exact in float32 up to 2²⁴ boxes) instead of
  the scores. Hard NMS uses scores only to order the boxes, so nothing else changes.
* **Classes.** Not by coordinate offsets (adding ``label·(max + 1)`` to coordinates rounds them, and with
  them the IoUs): the scores go in ONNX's ``[batch, class, box]`` layout, each box's rank in its own class
  row and 0 elsewhere, with ``score_threshold = 0`` (``score > 0`` is kept), so each class is suppressed on
  its own boxes. The operator returns ``(batch, class, box)`` triples grouped by class; a final ``TopK`` on
  their ranks restores the global score order.
* **Degenerate boxes.** Ours gives zero-area and inverted boxes IoU 0 with everything; ONNX's
  ``center_point_box = 0`` reads any two diagonal corners (an inverted box becomes a proper one). The
  graph collapses an inverted box to the point ``(x₁, y₁)`` first (area 0: never suppresses, never
  suppressed, as ours).
* Not covered: non-finite inputs (ours drops them with a warning; the post-processing never produces
  them) and Soft-NMS (no ONNX operator: it stays in PyTorch).

Example:
    >>> import torch
    >>> path = write_nms_graph(num_classes=2, path="nms.onnx")
    >>> nms = OnnxNms(path)
    >>> boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]])
    >>> nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1]), 0.5).tolist()
    [0, 2]
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

__all__ = ["OPSET", "OnnxNms", "write_nms_graph"]

#: opset of the NMS graph (NonMaxSuppression 11, TopK 11, OneHot 11)
OPSET = 17


def write_nms_graph(num_classes: int, path: str | Path) -> Path:
    """Write the class-aware NMS graph for labels ``0..num_classes-1`` to ``path`` (module docstring)."""
    import onnx
    from onnx import TensorProto, helper

    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    const = lambda name, kind, dims, values: helper.make_tensor(name, kind, dims, values)  # noqa: E731
    initializers = [
        const("axis0", TensorProto.INT64, [1], [0]),
        const("max_out", TensorProto.INT64, [1], [(1 << 62)]),
        const("depth", TensorProto.INT64, [1], [num_classes]),
        const("onehot_values", TensorProto.FLOAT, [2], [0.0, 1.0]),
        const("x1y1_index", TensorProto.INT64, [4], [0, 1, 0, 1]),
    ]
    initializers += [
        const("zero_f_scalar", TensorProto.FLOAT, [], [0.0]),
        const("one_f_scalar", TensorProto.FLOAT, [], [1.0]),
        const("zero_f_1", TensorProto.FLOAT, [1], [0.0]),
        const("two_i", TensorProto.INT64, [], [2]),
        const("x2y2_index", TensorProto.INT64, [2], [2, 3]),
        const("x1y1_pair", TensorProto.INT64, [2], [0, 1]),
    ]
    node = helper.make_node
    nodes = [
        # inverted boxes → the point (x1, y1): area 0, as IoU 0 in ours
        node("Gather", ["boxes", "x1y1_pair"], ["low"], axis=1),
        node("Gather", ["boxes", "x2y2_index"], ["high"], axis=1),
        node("Less", ["high", "low"], ["inverted2"]),
        node("Cast", ["inverted2"], ["inverted2_f"], to=TensorProto.FLOAT),
        node("ReduceMax", ["inverted2_f"], ["inverted_f"], axes=[1], keepdims=1),
        node("Cast", ["inverted_f"], ["inverted"], to=TensorProto.BOOL),
        node("Gather", ["boxes", "x1y1_index"], ["points"], axis=1),
        node("Where", ["inverted", "points", "boxes"], ["clean"]),
        # ranks: stable descending order (TopK: ties → the lower index first), rank value N − position
        node("Shape", ["scores"], ["n"]),
        node("TopK", ["scores", "n"], ["sorted_scores", "order"], axis=0, largest=1, sorted=1),
        node("Cast", ["n"], ["n_f"], to=TensorProto.FLOAT),
        node("Squeeze", ["n_f"], ["n_f_scalar"]),
        node("Range", ["zero_f_scalar", "n_f_scalar", "one_f_scalar"], ["positions"]),
        node("Sub", ["n_f", "positions"], ["descending"]),
        node("ConstantOfShape", ["n"], ["zeros_n"]),
        node("ScatterElements", ["zeros_n", "order", "descending"], ["rank"], axis=0),
        # [1, K, N]: each box's rank in its class row, 0 elsewhere (score_threshold 0 drops the zeros)
        node("OneHot", ["labels", "depth", "onehot_values"], ["onehot"], axis=0),
        node("Mul", ["onehot", "rank"], ["per_class"]),
        node("Unsqueeze", ["per_class", "axis0"], ["scores3"]),
        node("Unsqueeze", ["clean", "axis0"], ["boxes3"]),
        node(
            "NonMaxSuppression",
            ["boxes3", "scores3", "max_out", "iou_threshold", "zero_f_1"],
            ["selected"],
            center_point_box=0,
        ),
        # (batch, class, box) grouped by class → box indices by decreasing rank (= our visiting order)
        node("Gather", ["selected", "two_i"], ["kept_grouped"], axis=1),
        node("Gather", ["rank", "kept_grouped"], ["kept_rank"], axis=0),
        node("Shape", ["kept_rank"], ["m"]),
        node("TopK", ["kept_rank", "m"], ["unused", "global_order"], axis=0, largest=1, sorted=1),
        node("Gather", ["kept_grouped", "global_order"], ["keep"], axis=0),
    ]
    graph = helper.make_graph(
        nodes,
        "visionkit_batched_nms",
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, ["N"]),
            helper.make_tensor_value_info("iou_threshold", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("keep", TensorProto.INT64, ["M"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


class OnnxNms:
    """The NMS graph in an ONNX Runtime session, called like :func:`visionkit.ops.batched_nms`:
    ``(boxes [N, 4], scores [N], labels [N], iou_threshold) → kept indices int64 [M]`` by decreasing score.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        from visionkit.deploy.onnx import ort_session

        self.session = ort_session(path, threads)

    def __call__(self, boxes: Tensor, scores: Tensor, labels: Tensor, iou_threshold: float) -> Tensor:
        if boxes.shape[0] == 0:
            return torch.zeros(0, dtype=torch.int64, device=boxes.device)
        feed = {
            "boxes": boxes.detach().float().contiguous().cpu().numpy(),
            "scores": scores.detach().float().contiguous().cpu().numpy(),
            "labels": labels.detach().to(torch.int64).contiguous().cpu().numpy(),
            "iou_threshold": torch.tensor([iou_threshold], dtype=torch.float32).numpy(),
        }
        (keep,) = self.session.run(None, feed)
        return torch.from_numpy(keep).to(boxes.device)
