"""COCO greedy matching of detections to ground truth, vectorized over all (image, category) groups.

pycocotools matches one (image, category) group at a time in Python. The result of its greedy loop
only depends on the order of detections *inside* a group, so here every group advances together: step
``c`` handles the ``c``-th detection (by score) of every group at once, for every area range and IoU
threshold at once. Detections without any candidate ground truth (IoU below every threshold) are
settled before the loop and never enter it, so the loop runs as many steps as the largest number of
candidate detections in one group.

Semantics replicated (pycocotools ``COCOeval.evaluateImg``):

* detections sorted by score, descending, stable (input order breaks ties); only the first
  ``max_detections`` of each group are kept;
* a ground truth is *ignored* for an area range when it is a crowd or its ``area`` is outside the range;
* each detection takes, among the ground truths still free (crowds are always free), the one with the
  highest IoU ≥ threshold, preferring non-ignored ones; IoU ties go to the later ground truth;
* the IoU threshold ``t`` is applied as ``min(t, 1 − 1e-10)``; crowd IoU = overlap / detection area;
* a detection matched to an ignored ground truth, or unmatched with its area outside the range, is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CocoMatches", "coco_iou_pairs", "match_coco"]


def coco_iou_pairs(det_boxes: np.ndarray, gt_boxes: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of paired ``(x, y, w, h)`` float64 boxes ``[P, 4]``, as pycocotools' ``bbIou`` computes it.

    For a crowd ground truth the union is the detection area (IoU = overlap / detection area).

    Example:
        >>> coco_iou_pairs(np.array([[0.0, 0, 2, 2]]), np.array([[1.0, 0, 2, 2]]), np.array([False]))
        array([0.33333333])
    """
    width = np.minimum(det_boxes[:, 0] + det_boxes[:, 2], gt_boxes[:, 0] + gt_boxes[:, 2]) - np.maximum(
        det_boxes[:, 0], gt_boxes[:, 0]
    )
    height = np.minimum(det_boxes[:, 1] + det_boxes[:, 3], gt_boxes[:, 1] + gt_boxes[:, 3]) - np.maximum(
        det_boxes[:, 1], gt_boxes[:, 1]
    )
    overlap = width * height
    det_area = det_boxes[:, 2] * det_boxes[:, 3]
    union = np.where(crowd, det_area, gt_boxes[:, 2] * gt_boxes[:, 3] + det_area - overlap)
    valid = (width > 0) & (height > 0)
    return np.where(valid, overlap / np.where(valid, union, 1.0), 0.0)


@dataclass(frozen=True)
class CocoMatches:
    """Outcome of :func:`match_coco` for the kept detections, as a sparse list of matches.

    Attributes:
        kept: ``[D']`` indices (into the input detections) of the detections within ``max_detections``.
        rank: ``[D']`` rank of each kept detection inside its (image, category) group (0 = best score).
        match_area, match_threshold, match_det, match_gt: ``[P]`` one row per match made: area-range
            index, IoU-threshold index, kept-detection index (into ``kept``) and ground-truth index.
        det_out_of_range: ``[A, D']`` bool, detection area outside each range (ignored when unmatched).
        gt_ignored: ``[A, G]`` bool, ground truth ignored for each area range (crowd or area outside).

    A detection is ignored when matched to an ignored ground truth, or unmatched and out of range.
    """

    kept: np.ndarray
    rank: np.ndarray
    match_area: np.ndarray
    match_threshold: np.ndarray
    match_det: np.ndarray
    match_gt: np.ndarray
    det_out_of_range: np.ndarray
    gt_ignored: np.ndarray

    def dense(self, num_thresholds: int) -> tuple[np.ndarray, np.ndarray]:
        """``(matched_gt [A, T, D'] (−1: none), det_ignored [A, T, D'])`` as pycocotools' per-image arrays."""
        num_area, num_kept = self.det_out_of_range.shape
        matched_gt = np.full((num_area, num_thresholds, num_kept), -1, dtype=np.int64)
        matched_gt[self.match_area, self.match_threshold, self.match_det] = self.match_gt
        det_ignored = np.repeat(self.det_out_of_range[:, None, :], num_thresholds, axis=1)
        det_ignored[self.match_area, self.match_threshold, self.match_det] = self.gt_ignored[
            self.match_area, self.match_gt
        ]
        return matched_gt, det_ignored


def _group_ranks(group: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order detections by (group, −score, input index) and return ``(order, rank within group)``."""
    order = np.lexsort((np.arange(len(group)), -scores, group))
    sorted_group = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_group)) + 1] if len(order) else np.zeros(0, np.int64)
    lengths = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, lengths)
    return order, rank


def _candidate_pairs(det_group: np.ndarray, gt_group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (detection, ground truth) index pairs that share a group; ground truths in input order."""
    gt_order = np.argsort(gt_group, kind="stable")
    sorted_gt_group = gt_group[gt_order]
    start = np.searchsorted(sorted_gt_group, det_group, side="left")
    count = np.searchsorted(sorted_gt_group, det_group, side="right") - start
    det_index = np.repeat(np.arange(len(det_group)), count)
    offset = np.arange(len(det_index)) - np.repeat(np.cumsum(count) - count, count)
    return det_index, gt_order[np.repeat(start, count) + offset]


def match_coco(
    det_group: np.ndarray,
    det_boxes: np.ndarray,
    det_scores: np.ndarray,
    det_area: np.ndarray,
    gt_group: np.ndarray,
    gt_boxes: np.ndarray,
    gt_area: np.ndarray,
    gt_crowd: np.ndarray,
    iou_thresholds: np.ndarray,
    area_ranges: np.ndarray,
    max_detections: int,
) -> CocoMatches:
    """Greedy COCO matching for every group, area range ``[A, 2]`` and IoU threshold ``[T]`` at once.

    Args:
        det_group: ``[D]`` int group key of each detection (e.g. ``image * K + category``).
        det_boxes: ``[D, 4]`` float64 ``(x, y, w, h)``.
        det_scores: ``[D]`` confidences.
        det_area: ``[D]`` detection areas for the area ranges.
        gt_group: ``[G]`` group keys of the ground truths.
        gt_boxes: ``[G, 4]`` float64 ``(x, y, w, h)``.
        gt_area: ``[G]`` areas for the area ranges.
        gt_crowd: ``[G]`` bool crowd flags.
        iou_thresholds: ``[T]`` float64.
        area_ranges: ``[A, 2]`` inclusive ``(low, high)`` areas.
        max_detections: detections kept per group (the largest COCO ``maxDets``).
    """
    order, rank = _group_ranks(det_group, det_scores)
    keep = rank < max_detections
    kept, rank = order[keep], rank[keep]
    num_thr = len(iou_thresholds)
    gt_ignored = (
        gt_crowd[None, :] | (gt_area[None, :] < area_ranges[:, :1]) | (gt_area[None, :] > area_ranges[:, 1:])
    )
    pair_det, pair_gt = _candidate_pairs(det_group[kept], gt_group)
    iou = coco_iou_pairs(det_boxes[kept][pair_det], gt_boxes[pair_gt], gt_crowd[pair_gt])
    effective = np.minimum(iou_thresholds.astype(np.float64), 1 - 1e-10)
    useful = iou >= effective.min() if num_thr else np.zeros(len(iou), bool)
    pair_det, pair_gt, iou = pair_det[useful], pair_gt[useful], iou[useful]
    empty = np.zeros(0, dtype=np.int64)
    matches = (empty, empty, empty, empty)
    if len(pair_det):
        matches = _greedy(pair_det, pair_gt, iou, det_group[kept], rank, effective, gt_ignored, gt_crowd)
    det_out = (det_area[kept][None, :] < area_ranges[:, :1]) | (det_area[kept][None, :] > area_ranges[:, 1:])
    return CocoMatches(kept, rank, *matches, det_out, gt_ignored)


def _greedy(
    pair_det: np.ndarray,
    pair_gt: np.ndarray,
    iou: np.ndarray,
    det_group: np.ndarray,
    rank: np.ndarray,
    thresholds: np.ndarray,
    gt_ignored: np.ndarray,
    gt_crowd: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Run the greedy loop over candidate pairs; returns the matches (area, threshold, detection, gt)."""
    # Within a detection, order its pairs by (IoU, ground-truth index): the winner of a priority class is
    # then the last eligible pair, i.e. the highest IoU with ties going to the later ground truth.
    order = np.lexsort((pair_gt, iou, pair_det))
    pair_det, pair_gt, iou = pair_det[order], pair_gt[order], iou[order]
    det_starts = np.r_[0, np.flatnonzero(np.diff(pair_det)) + 1]
    pair_count = np.diff(np.r_[det_starts, len(pair_det)])
    dets = pair_det[det_starts]
    step = _rank_within(det_group[dets], rank[dets])  # position among the candidate detections of a group
    local = np.arange(len(pair_det)) - np.repeat(det_starts, pair_count)  # position inside its detection
    base = int(pair_count.max()) + 1
    gt_matched = np.zeros((gt_ignored.shape[0], len(thresholds), gt_ignored.shape[1]), dtype=bool)
    found: list[tuple[np.ndarray, ...]] = []
    iou_passes = iou[None, :] >= thresholds[:, None]  # [T, P]
    by_step = np.argsort(step, kind="stable")
    bounds = np.searchsorted(step[by_step], np.arange(int(step.max()) + 2))
    for s in range(len(bounds) - 1):
        chosen = by_step[bounds[s] : bounds[s + 1]]  # candidate detections handled at this step
        pairs = _expand(det_starts[chosen], pair_count[chosen])
        gts = pair_gt[pairs]
        free = ~gt_matched[:, :, gts] | gt_crowd[gts]
        eligible = free & iou_passes[None, :, pairs]
        priority = eligible * (1 + ~gt_ignored[:, None, gts])  # 2: regular gt, 1: ignored gt, 0: not eligible
        segment_starts = np.r_[0, np.cumsum(pair_count[chosen])[:-1]]
        best = np.maximum.reduceat(priority * base + local[pairs], segment_starts, axis=2)  # [A, T, chosen]
        area_hit, thr_hit, det_hit = np.nonzero(best >= base)
        winner = pair_gt[det_starts[chosen][det_hit] + best[area_hit, thr_hit, det_hit] % base]
        found.append((area_hit, thr_hit, dets[chosen][det_hit], winner))
        gt_matched[area_hit, thr_hit, winner] = True
    return tuple(np.concatenate(column).astype(np.int64) for column in zip(*found, strict=True))  # type: ignore[return-value]


def _expand(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(start, start + count)`` for every (start, count)."""
    offsets = np.repeat(starts - np.r_[0, np.cumsum(counts)[:-1]], counts)
    return offsets + np.arange(int(counts.sum()))


def _rank_within(group: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Position of each item among the items of its group, ordered by ``rank``."""
    order = np.lexsort((rank, group))
    sorted_group = group[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_group)) + 1]
    position = np.empty(len(group), dtype=np.int64)
    position[order] = np.arange(len(group)) - np.repeat(starts, np.diff(np.r_[starts, len(group)]))
    return position
