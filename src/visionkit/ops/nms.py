"""Greedy non-maximum suppression (handbook §8): hard NMS and class-aware batched NMS.

Semantics shared by every NMS variant of visionkit (hard, batched, soft):

* Boxes are ``Tensor[N, 4]`` xyxy absolute pixels; scores ``Tensor[N]`` of the same dtype (integer
  boxes may come with any floating scores). Half-precision and integer boxes are compared in float32.
* Boxes are visited by decreasing score; equal scores keep their input order (stable sort: the lower
  index first). The result lists kept indices (``int64``) in that order.
* A kept box suppresses a later box iff ``IoU > iou_threshold`` (strictly greater: a pair exactly at the
  threshold survives). ``iou_threshold`` must lie in ``[0, 1]``.
* Zero-area and inverted boxes have IoU 0 with everything: they are never suppressed and never suppress.
* Inputs that require grad are fine: the engines run without autograd (the result is indices).
* Boxes whose score or coordinates are NaN/Inf are dropped with one ``RuntimeWarning`` that counts them
  (inference); with ``strict=True`` (training) a ``ValueError`` names their indices instead.
* On CPU the ranking and the greedy loop run in one C call (:mod:`visionkit.ops._native_nms`, built at
  install time; ``VISIONKIT_NATIVE=0`` turns it off): boxes indexed by label, width octave and x1, every
  kept box visits only the still-alive boxes that can reach the threshold with it (a geometric bound).
  Elsewhere, or when the C kernels are not built, the PyTorch engines below run; both give identical
  results (same IoU arithmetic in the same dtype).
* No N×N matrix is built (memory stays bounded for any N). Single-class NMS runs "kept-first": alive
  boxes are taken by rank a block at a time, each block is resolved densely and its kept boxes suppress
  later boxes found through a spatial hash (:mod:`visionkit.ops._nms_core`). Class-aware NMS over many
  classes resolves the greedy order on the sparse graph of same-class overlapping pairs
  (:mod:`visionkit.ops._overlap_pairs`). Inputs up to 1536 boxes, and coordinates too spread for the
  hash's float64 keys, use a block-sequential dense engine. All engines share one IoU expression and
  are tested to give identical results.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import Tensor, nn

from visionkit.ops import _native_nms
from visionkit.ops._nms_core import dense_greedy, spatial_greedy
from visionkit.ops._overlap_pairs import sparse_greedy
from visionkit.ops._validate import (
    check_boxes,
    check_labels,
    check_real_number,
    check_same_device,
    check_same_dtype,
    check_scores,
)

__all__ = ["NMS", "batched_nms", "nms"]

#: Up to this many boxes the block-sequential dense engine (256-box blocks, O(N²) IoUs in small tiles) is
#: cheaper than building the spatial hash (measured: 1k clustered boxes ~1.4 ms dense vs ~7 ms spatial,
#: about even at 2k).
_DENSE_MAX = 1536
#: batched_nms loops over classes when they hold at least this many boxes on average.
_PER_CLASS_MIN_AVERAGE = 4096


def check_nms_inputs(
    boxes: Tensor, scores: Tensor, iou_threshold: float, labels: Tensor | None = None
) -> float:
    """Validate NMS arguments (names the argument, expected and actual value); returns the threshold."""
    check_boxes(boxes)
    check_scores(scores, boxes.shape[0])
    check_same_device(("boxes", boxes), ("scores", scores))
    if boxes.is_floating_point():
        check_same_dtype(("boxes", boxes), ("scores", scores))
    elif not scores.is_floating_point():
        raise ValueError(f"scores must be a floating tensor, got {scores.dtype}")
    if labels is not None:
        check_labels(labels, boxes.shape[0])
        check_same_device(("boxes", boxes), ("labels", labels))
    threshold = check_real_number(iou_threshold, "iou_threshold")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {threshold}")
    return threshold


def finite_indices(boxes: Tensor, scores: Tensor, strict: bool, caller: str) -> Tensor | None:
    """Indices of rows with finite score and coordinates, or ``None`` when all are finite.

    Non-finite rows raise ``ValueError`` naming them when ``strict``; otherwise one counted warning.
    """
    finite = torch.isfinite(scores)
    if boxes.is_floating_point():
        finite &= torch.isfinite(boxes).all(dim=1)
    if bool(finite.all()):
        return None
    bad = (~finite).nonzero().flatten()
    message = (
        f"{caller}: {bad.numel()} box(es) with NaN/Inf score or coordinates at index {bad[:10].tolist()}"
        + (" ..." if bad.numel() > 10 else "")
    )
    if strict:
        raise ValueError(message + " (strict=True: rejected)")
    warnings.warn(message + " were dropped", RuntimeWarning, stacklevel=3)
    return finite.nonzero().flatten()


def working_boxes(boxes: Tensor) -> Tensor:
    """float32/float64 stay; float16, bfloat16 and integers are compared in float32."""
    return boxes if boxes.dtype in (torch.float32, torch.float64) else boxes.float()


@torch.no_grad()  # indices only: no autograd graph, no grad-tracking warnings
def _greedy(boxes: Tensor, threshold: float, labels: Tensor | None) -> Tensor:
    """Keep mask over ranked boxes: the C loop on CPU when built; else dense when small, kept-first for
    one class, the overlap graph for many classes (few suppressing pairs), dense when the grid cannot hold
    the coordinates."""
    if _native_nms.usable(boxes):
        return _native_nms.greedy_keep(boxes, threshold, labels)
    keep = None
    if boxes.shape[0] > _DENSE_MAX:
        engine = spatial_greedy if labels is None else sparse_greedy
        keep = engine(boxes, threshold, labels)
    return dense_greedy(boxes, threshold, labels) if keep is None else keep


def _score_keys(scores: Tensor) -> Tensor:
    """Scores as the C ranking reads them: float32/float64 as they are, half precision widened (exact)."""
    return scores if scores.dtype in (torch.float32, torch.float64) else scores.float()


def _rank(scores: Tensor) -> Tensor:
    return torch.sort(scores, descending=True, stable=True)[1]


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, *, strict: bool = False) -> Tensor:
    """Greedy hard NMS (handbook §8): keep the best box, drop later boxes with IoU > ``iou_threshold``.

    Args:
        boxes: ``Tensor[N, 4]`` xyxy boxes.
        scores: ``Tensor[N]`` scores, same dtype as floating ``boxes``.
        iou_threshold: in ``[0, 1]``; a box is suppressed iff its IoU with a kept box is strictly greater.
        strict: raise on NaN/Inf scores or coordinates instead of dropping them with a warning.

    Returns:
        ``Tensor[K]`` int64 indices of kept boxes by decreasing score (ties: lower index first).

    Example:
        >>> boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]])
        >>> nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
        tensor([0, 2])
    """
    threshold = check_nms_inputs(boxes, scores, iou_threshold)
    subset = finite_indices(boxes, scores, strict, "nms")
    if subset is not None:
        return subset[nms(boxes[subset], scores[subset], threshold)]
    work, keys = working_boxes(boxes), _score_keys(scores)
    if _native_nms.usable(work, keys):
        return _native_nms.nms_indices(work, keys, threshold)
    order = _rank(scores)
    if order.numel() == 0:
        return order
    return order[_greedy(work[order], threshold, None)]


def batched_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    iou_threshold: float,
    *,
    strict: bool = False,
    strategy: Literal["auto", "offset", "per_class"] = "auto",
) -> Tensor:
    """Class-aware NMS: boxes suppress each other only within the same label.

    Two strategies give identical results (same IoU arithmetic on the original coordinates):
    ``"offset"`` runs one pass in which every class is moved to its own region of the spatial hash (the
    coordinate-offset trick, applied to exact integer grid rows so huge coordinates lose no precision);
    ``"per_class"`` runs :func:`nms` on each class. ``"auto"`` loops over classes only when they are
    large on average (few big classes), else takes one pass.

    Args:
        boxes: ``Tensor[N, 4]`` xyxy boxes.
        scores: ``Tensor[N]`` scores.
        labels: ``Tensor[N]`` integer class of each box.
        iou_threshold: in ``[0, 1]``, suppression iff IoU is strictly greater.
        strict: raise on NaN/Inf instead of dropping with a warning.
        strategy: ``"auto"``, ``"offset"`` or ``"per_class"``.

    Returns:
        ``Tensor[K]`` int64 kept indices by decreasing score (ties: lower index first).

    Example:
        >>> boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [1, 1, 11, 11]])
        >>> batched_nms(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1]), 0.5)
        tensor([0, 2])
    """
    threshold = check_nms_inputs(boxes, scores, iou_threshold, labels)
    if strategy not in ("auto", "offset", "per_class"):
        raise ValueError(f"strategy must be 'auto', 'offset' or 'per_class', got {strategy!r}")
    subset = finite_indices(boxes, scores, strict, "batched_nms")
    if subset is not None:
        kept = batched_nms(boxes[subset], scores[subset], labels[subset], threshold, strategy=strategy)
        return subset[kept]
    work, keys = working_boxes(boxes), _score_keys(scores)
    if strategy != "per_class" and _native_nms.usable(work, keys, labels):
        return _native_nms.nms_indices(work, keys, threshold, labels)
    order = _rank(scores)
    if order.numel() == 0:
        return order
    ranked_boxes, ranked_labels = work[order], labels[order]
    if strategy == "auto":
        num_classes = int(torch.unique(labels).numel())
        strategy = "per_class" if order.numel() >= _PER_CLASS_MIN_AVERAGE * num_classes else "offset"
    if strategy == "offset":
        return order[_greedy(ranked_boxes, threshold, ranked_labels)]
    keep = torch.zeros(order.numel(), dtype=torch.bool, device=order.device)
    by_class = torch.sort(ranked_labels, stable=True)  # ranks stay increasing inside each class
    _, counts = torch.unique_consecutive(by_class.values, return_counts=True)
    for ranks in torch.split(by_class.indices, counts.tolist()):
        keep[ranks[_greedy(ranked_boxes[ranks], threshold, None)]] = True
    return order[keep]


class NMS(nn.Module):
    """Module holding NMS settings; ``forward(boxes, scores, labels=None)`` → kept indices.

    Example:
        >>> NMS(iou_threshold=0.5)(torch.tensor([[0.0, 0, 4, 4], [0, 0, 4, 4]]), torch.tensor([0.2, 0.9]))
        tensor([1])
    """

    def __init__(self, iou_threshold: float = 0.5, *, strict: bool = False) -> None:
        super().__init__()
        self.iou_threshold = check_real_number(iou_threshold, "iou_threshold")
        self.strict = strict

    def forward(self, boxes: Tensor, scores: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None:
            return nms(boxes, scores, self.iou_threshold, strict=self.strict)
        return batched_nms(boxes, scores, labels, self.iou_threshold, strict=self.strict)

    def extra_repr(self) -> str:
        return f"iou_threshold={self.iou_threshold}, strict={self.strict}"
