"""COCO detection metrics (handbook §33): AP@[.5:.95], AP50, AP75, AP/AR by object size, AR@1/10/100.

Equal to pycocotools' ``COCOeval`` (iouType ``"bbox"``) bit for bit — tested live against it — and about
an order of magnitude faster: matching runs for all (image, category) groups at once
(:mod:`visionkit.metrics.detection.matching`) and accumulation is vectorized per category.

Replicated conventions: IoU thresholds 0.50:0.05:0.95 and 101 recall points built in float64 exactly as
pycocotools builds them; area ranges all/small/medium/large = [0, 1e10], [0, 32²], [32², 96²],
[96², 1e10] tested against the ground truth's ``area`` field (for COCO files the *segmentation* area);
``maxDets`` (1, 10, 100); precision envelope and ``searchsorted(..., side="left")`` sampling; −1 for
settings without ground truth (left out of means). One deliberate difference: the first summary number
(AP) uses ``max_detections[2]`` like the others, where pycocotools hard-codes 100 (−1 for other lists).
pycocotools' quirk of treating a ground truth with annotation id 0 as unmatched is not replicated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from visionkit.metrics.detection.io import DetectionSet, GroundTruthSet, from_predictions
from visionkit.metrics.detection.matching import CocoMatches, match_coco

__all__ = [
    "COCO_AREA_RANGES",
    "STAT_NAMES",
    "CocoResult",
    "coco_iou_thresholds",
    "coco_recall_thresholds",
    "evaluate_coco",
    "evaluate_coco_sets",
]

COCO_AREA_RANGES: dict[str, tuple[float, float]] = {
    "all": (0.0, 1e10),
    "small": (0.0, 32.0**2),
    "medium": (32.0**2, 96.0**2),
    "large": (96.0**2, 1e10),
}
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def coco_iou_thresholds() -> np.ndarray:
    """The 10 IoU thresholds 0.50, 0.55, …, 0.95 as pycocotools builds them (float64 ``linspace``)."""
    return np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)


def coco_recall_thresholds() -> np.ndarray:
    """The 101 recall points 0.00, 0.01, …, 1.00 as pycocotools builds them."""
    return np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass(frozen=True)
class CocoResult:
    """Everything a COCO evaluation produced.

    Attributes:
        stats: ``[12]`` the summary numbers in pycocotools' order (see :data:`STAT_NAMES`).
        precision: ``[T, R, K, A, M]`` interpolated precision at each recall point (−1: no ground truth).
        recall: ``[T, K, A, M]`` final recall (−1: no ground truth).
        iou_thresholds: ``[T]``; recall_thresholds: ``[R]``.
        area_names / area_ranges: the A area ranges; max_detections: the M limits.
        category_ids / category_names: the K categories.
        num_ground_truth: ``[K]`` non-crowd ground truths per category (area "all").
        num_classes_without_ground_truth: categories with −1 (left out of every mean).
    """

    stats: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    iou_thresholds: np.ndarray
    recall_thresholds: np.ndarray
    area_names: tuple[str, ...]
    area_ranges: np.ndarray
    max_detections: tuple[int, ...]
    category_ids: np.ndarray
    category_names: tuple[str, ...]
    num_ground_truth: np.ndarray
    num_classes_without_ground_truth: int = field(default=0)

    def as_dict(self) -> dict[str, float]:
        """The 12 summary numbers by name, e.g. ``{"AP": 0.41, "AP50": ...}``."""
        return {name: float(value) for name, value in zip(STAT_NAMES, self.stats, strict=True)}

    def per_class(self) -> list[dict[str, Any]]:
        """One row per category: id, name, ground-truth count, AP, AP50, AP75 and AR at max detections."""
        rows = []
        for k, (category_id, name) in enumerate(
            zip(self.category_ids.tolist(), self.category_names, strict=True)
        ):
            row: dict[str, Any] = {
                "category_id": category_id,
                "name": name,
                "num_gt": int(self.num_ground_truth[k]),
            }
            row["AP"] = _mean_valid(self.precision[:, :, k, 0, -1])
            row["AP50"] = _mean_valid(self.precision[self.iou_thresholds == 0.5, :, k, 0, -1])
            row["AP75"] = _mean_valid(self.precision[self.iou_thresholds == 0.75, :, k, 0, -1])
            row["AR"] = _mean_valid(self.recall[:, k, 0, -1])
            rows.append(row)
        return rows

    def pr_curve(
        self, category: int | None = None, iou_threshold: float = 0.5
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(recall_thresholds [R], precision [R])`` at one IoU threshold, area "all", the largest maxDets.

        ``category`` is a position in :attr:`category_ids`; ``None`` averages categories with ground truth.
        """
        rows = np.flatnonzero(np.isclose(self.iou_thresholds, iou_threshold))
        if rows.size == 0:
            raise ValueError(f"iou_threshold {iou_threshold} is not one of {self.iou_thresholds.tolist()}")
        curves = self.precision[rows[0], :, :, 0, -1]  # [R, K]
        if category is not None:
            return self.recall_thresholds, curves[:, category]
        valid = (curves > -1).all(axis=0)
        mean = curves[:, valid].mean(axis=1) if valid.any() else np.zeros(len(self.recall_thresholds))
        return self.recall_thresholds, mean

    def summary(self) -> str:
        """The 12 lines pycocotools prints."""
        lines = []
        for i, name in enumerate(STAT_NAMES):
            kind = "Average Precision" if name.startswith("AP") else "Average Recall   "
            short = "(AP)" if name.startswith("AP") else "(AR)"
            lines.append(f" {kind}  {short} {_label(self, i)} = {self.stats[i]:0.3f}")
        return "\n".join(lines)


def _label(result: CocoResult, index: int) -> str:
    iou = {1: "0.50     ", 2: "0.75     "}.get(index, "0.50:0.95")
    area = {3: "small", 4: "medium", 5: "large", 9: "small", 10: "medium", 11: "large"}.get(index, "all")
    limits = result.max_detections
    max_det = limits[min({6: 0, 7: 1}.get(index, 2), len(limits) - 1)]
    return f"@[ IoU={iou} | area={area:>6s} | maxDets={max_det:>3d} ]"


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(np.mean(valid)) if valid.size else -1.0


def evaluate_coco(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    *,
    num_classes: int | None = None,
    iou_thresholds: Sequence[float] | None = None,
    max_detections: Sequence[int] = (1, 10, 100),
    area_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> CocoResult:
    """COCO box AP/AR of detector outputs against ground truth.

    Args:
        predictions: per image ``dict(boxes=Tensor[N, 4] xyxy abs pixels, scores=[N], labels=[N] int64)``.
        targets: per image ``dict(boxes=[M, 4] xyxy, labels=[M], iscrowd?=[M], area?=[M], image_id?)``;
            without ``area`` the box area is used (with a warning).
        num_classes: evaluate categories ``0…num_classes-1`` (default: the labels present).
        iou_thresholds: default :func:`coco_iou_thresholds`.
        max_detections: detections kept per image and category, ascending (default ``(1, 10, 100)``).
        area_ranges: name → inclusive (low, high) area; default :data:`COCO_AREA_RANGES`.

    Returns:
        A :class:`CocoResult`.

    Example:
        >>> import torch
        >>> target = {"boxes": torch.tensor([[10.0, 10, 50, 50]]), "labels": torch.tensor([0]),
        ...           "area": torch.tensor([1600.0])}
        >>> prediction = {"boxes": torch.tensor([[12.0, 10, 50, 52]]), "scores": torch.tensor([0.9]),
        ...               "labels": torch.tensor([0])}
        >>> round(evaluate_coco([prediction], [target]).as_dict()["AP50"], 6)  # 1 / (1 + eps), as pycocotools
        1.0
    """
    ground_truth, detections = from_predictions(predictions, targets, num_classes)
    return evaluate_coco_sets(
        ground_truth,
        detections,
        iou_thresholds=iou_thresholds,
        max_detections=max_detections,
        area_ranges=area_ranges,
    )


def evaluate_coco_sets(
    ground_truth: GroundTruthSet,
    detections: DetectionSet,
    *,
    iou_thresholds: Sequence[float] | None = None,
    max_detections: Sequence[int] = (1, 10, 100),
    area_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> CocoResult:
    """:func:`evaluate_coco` on flat sets, e.g. from :func:`~.io.load_coco_results`."""
    thresholds = coco_iou_thresholds() if iou_thresholds is None else np.asarray(iou_thresholds, np.float64)
    limits = tuple(int(m) for m in max_detections)
    if not limits or any(m < 1 for m in limits) or list(limits) != sorted(limits):
        raise ValueError(f"max_detections must be ascending positive integers, got {limits}")
    ranges = dict(COCO_AREA_RANGES if area_ranges is None else area_ranges)
    if not ranges:
        raise ValueError("area_ranges must name at least one range")
    area_array = np.asarray(list(ranges.values()), dtype=np.float64).reshape(-1, 2)
    num_categories = len(ground_truth.category_ids)
    matches = match_coco(
        detections.image * num_categories + detections.category,
        detections.boxes,
        detections.scores,
        detections.area,
        ground_truth.image * num_categories + ground_truth.category,
        ground_truth.boxes,
        ground_truth.area,
        ground_truth.iscrowd,
        thresholds,
        area_array,
        limits[-1],
    )
    recall_points = coco_recall_thresholds()
    precision, recall = _accumulate(ground_truth, detections, matches, len(thresholds), recall_points, limits)
    num_gt = np.bincount(ground_truth.category[~ground_truth.iscrowd], minlength=num_categories)
    all_index = list(ranges).index("all") if "all" in ranges else 0
    without = int((precision[0, 0, :, all_index, -1] == -1).sum()) if thresholds.size else num_categories
    result = CocoResult(
        stats=np.zeros(12),
        precision=precision,
        recall=recall,
        iou_thresholds=thresholds,
        recall_thresholds=recall_points,
        area_names=tuple(ranges),
        area_ranges=area_array,
        max_detections=limits,
        category_ids=ground_truth.category_ids,
        category_names=ground_truth.category_names,
        num_ground_truth=num_gt,
        num_classes_without_ground_truth=without,
    )
    result.stats[:] = _summary_stats(result)
    return result


def _accumulate(
    ground_truth: GroundTruthSet,
    detections: DetectionSet,
    matches: CocoMatches,
    num_thresholds: int,
    recall_points: np.ndarray,
    limits: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """Precision ``[T, R, K, A, M]`` and recall ``[T, K, A, M]`` as ``COCOeval.accumulate``."""
    num_area, num_categories = matches.gt_ignored.shape[0], len(ground_truth.category_ids)
    shape = (num_thresholds, len(recall_points), num_categories, num_area, len(limits))
    precision, recall = -np.ones(shape), -np.ones((num_thresholds, num_categories, num_area, len(limits)))
    kept = matches.kept
    category = detections.category[kept]
    # pycocotools concatenates images in order, each sorted by score, then stable-sorts by score
    order = np.lexsort((matches.rank, detections.image[kept], -detections.scores[kept], category))
    category = category[order]
    bounds = np.searchsorted(category, np.arange(num_categories + 1))
    within = matches.rank[order][None, :] < np.asarray(limits)[:, None]  # [M, D]
    num_positive = np.stack(
        [
            np.bincount(ground_truth.category[~ignore], minlength=num_categories)
            for ignore in matches.gt_ignored
        ]
    )  # [A, K]
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))  # place of each kept detection in the accumulation order
    for a in range(num_area):
        valid = np.flatnonzero(num_positive[a] > 0)
        if valid.size == 0:
            continue
        in_area = matches.match_area == a
        thr, pos = matches.match_threshold[in_area], position[matches.match_det[in_area]]
        to_ignored = matches.gt_ignored[a, matches.match_gt[in_area]]
        out = matches.det_out_of_range[a][order]
        counted, in_range_ignored = ~to_ignored, to_ignored & ~out[pos]
        events = _Events(
            thr[counted],
            pos[counted],
            out[pos[counted]],
            thr[in_range_ignored],
            pos[in_range_ignored],
            out,
            num_thresholds,
        )
        q, true_count = _interpolated_precision(
            events, within, category, bounds, num_positive[a], recall_points
        )
        precision[:, :, valid, a, :] = q[:, :, valid].transpose(1, 3, 2, 0)
        recall[:, valid, a, :] = (true_count[:, :, valid] / num_positive[a, valid]).transpose(1, 2, 0)
    return precision, recall


@dataclass(frozen=True)
class _Events:
    """Matches of one area range, by threshold index and accumulation position.

    ``tp_*``: true positives (matched to a counted ground truth), ``tp_out``: their area is out of range;
    ``ig_*``: in-range detections matched to an ignored ground truth; ``out``: ``[D]`` out of range.
    A detection is ignored if matched to an ignored ground truth, or unmatched and out of range.
    """

    tp_thr: np.ndarray
    tp_pos: np.ndarray
    tp_out: np.ndarray
    ig_thr: np.ndarray
    ig_pos: np.ndarray
    out: np.ndarray
    num_thr: int


def _count_in(keys: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """How many sorted ``keys`` lie in ``[low, high]``."""
    return np.searchsorted(keys, high, side="right") - np.searchsorted(keys, low, side="left")


def _not_ignored_so_far(
    events: _Events, window: np.ndarray, category: np.ndarray, bounds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives kept by one maxDets ``window``: ``(threshold, position, kept − ignored up to it)``.

    Counts run from the first detection of the category to the true positive itself, inclusive.
    """
    num_dets = len(window)
    keep = window[events.tp_pos]
    thr, pos, tp_out = events.tp_thr[keep], events.tp_pos[keep], events.tp_out[keep]
    by_key = np.lexsort((pos, thr))
    thr, pos, tp_out = thr[by_key], pos[by_key], tp_out[by_key]
    first = bounds[category[pos]]
    key, start_key = thr * num_dets + pos, thr * num_dets + first
    kept_sum, out_sum = np.cumsum(window), np.cumsum(window & events.out)
    kept = kept_sum[pos] - np.where(first > 0, kept_sum[np.maximum(first - 1, 0)], 0)
    out = out_sum[pos] - np.where(first > 0, out_sum[np.maximum(first - 1, 0)], 0)
    keep_ignored = window[events.ig_pos]
    ignored_keys = np.sort(events.ig_thr[keep_ignored] * num_dets + events.ig_pos[keep_ignored])
    # ignored = out of range and not a true positive, plus in range and matched to an ignored ground truth
    ignored = out - _count_in(key[tp_out], start_key, key) + _count_in(ignored_keys, start_key, key)
    return thr, pos, kept - ignored


def _interpolated_precision(
    events: _Events,
    within: np.ndarray,
    category: np.ndarray,
    bounds: np.ndarray,
    num_positive: np.ndarray,
    recall_points: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Sampled precision envelope ``[M, T, K, R]`` and true-positive totals ``[M, T, K]`` for one area range.

    Only true positives matter: between two of them precision only falls, so the envelope at a recall
    level is the best precision among the true positives from there on. The false positives before a
    true positive are counted, not scanned: (kept detections so far) − (true positives) − (ignored ones).
    Each (maxDets, threshold, category) run of true positives is one segment of a flat array.
    """
    num_limits, num_thr, num_categories = within.shape[0], events.num_thr, len(bounds) - 1
    shape = (num_limits, num_thr, num_categories)
    rows, dets, false_before = [], [], []
    for m in range(num_limits):
        thr, pos, not_ignored = _not_ignored_so_far(events, within[m], category, bounds)
        rows.append(m * num_thr + thr)
        dets.append(pos)
        false_before.append(not_ignored)  # still includes the true positives, removed below
    row, det = np.concatenate(rows), np.concatenate(dets)
    segment = row * num_categories + category[det]
    count = np.bincount(segment, minlength=num_limits * num_thr * num_categories)
    segment_start = np.cumsum(count) - count
    tp = np.arange(len(segment)) - segment_start[segment] + 1
    fp = (np.concatenate(false_before) - tp).astype(np.float64)
    tp = tp.astype(np.float64)
    keyed = np.empty(len(segment), dtype=np.complex128)  # complex max is lexicographic: (segment, precision)
    keyed.real = -segment
    keyed.imag = tp / (fp + tp + np.spacing(1))  # pycocotools' expression, same rounding
    envelope = np.maximum.accumulate(keyed[::-1])[::-1].imag  # best precision from here to the segment's end
    # recall = tp/npig >= r  <=>  tp >= the smallest j with j/npig >= r (exact: pycocotools' own division)
    needed = np.stack(
        [np.searchsorted(np.arange(n + 1) / max(n, 1), recall_points, side="left") for n in num_positive]
    )
    needed = np.maximum(needed, 1)[None]  # [1, K, R]; recall 0 is reached at the first true positive
    count = count.reshape(-1, num_categories, 1)
    reached = needed <= count
    if len(envelope):
        index = np.minimum(segment_start.reshape(-1, num_categories, 1) + needed - 1, len(envelope) - 1)
        q = np.where(reached, envelope[index], 0.0)
    else:
        q = np.zeros(reached.shape)
    return q.reshape(*shape, len(recall_points)), count.reshape(shape).astype(np.float64)


def _summary_stats(result: CocoResult) -> np.ndarray:
    names, limits = result.area_names, result.max_detections

    def pick(ap: bool, iou: float | None = None, area: str = "all", limit_index: int = 2) -> float:
        if area not in names:
            return -1.0
        a, m = names.index(area), min(limit_index, len(limits) - 1)
        values = result.precision[..., a, m] if ap else result.recall[..., a, m]
        if iou is not None:
            values = values[np.flatnonzero(iou == result.iou_thresholds)]
        return _mean_valid(values)

    return np.array(
        [
            pick(True),
            pick(True, 0.5),
            pick(True, 0.75),
            pick(True, area="small"),
            pick(True, area="medium"),
            pick(True, area="large"),
            pick(False, limit_index=0),
            pick(False, limit_index=1),
            pick(False),
            pick(False, area="small"),
            pick(False, area="medium"),
            pick(False, area="large"),
        ]
    )
