"""PASCAL VOC detection AP (handbook §33): VOC2007 11-point and VOC2010+ all-point interpolation.

Follows the VOC devkit's ``voc_eval``: per class, detections ranked by score; each takes the ground
truth of its image and class with the highest IoU (first one on ties, difficult ones included); with
IoU > threshold (strictly) it is a true positive if that ground truth is not difficult and not yet
taken, a false positive if already taken, and neither if difficult; otherwise a false positive.
Recall = TP / (non-difficult ground truths), precision = TP / max(TP + FP, eps).

Differences from the devkit, on purpose: ties in score keep input order (the devkit's quicksort order
is platform dependent), and a class without non-difficult ground truth gets AP −1 and is left out of
mAP (the devkit divides by zero). ``pixel_offset=1`` reproduces the devkit's ``+1`` in widths, heights
and areas (integer pixel boxes); the default 0 treats coordinates as continuous.

Kept from the devkit's Python port, for comparable numbers: the 11 recall levels of ``"11point"`` are
``np.arange(0, 1.1, 0.1)``, where 0.3, 0.6 and 0.7 are one ulp above the tenths, so a recall of exactly
3/10 does not reach the 0.3 level (:data:`visionkit.metrics.multilabel.DEVKIT_ELEVEN_LEVELS`; the
handbook's multi-label mAP uses exact tenths).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from visionkit.metrics.detection.io import DetectionSet, GroundTruthSet, from_predictions
from visionkit.metrics.multilabel import DEVKIT_ELEVEN_LEVELS, interpolated_average_precision

__all__ = ["VocResult", "evaluate_voc", "evaluate_voc_sets", "voc_iou_pairs"]


def voc_iou_pairs(det_boxes: np.ndarray, gt_boxes: np.ndarray, pixel_offset: float = 0.0) -> np.ndarray:
    """IoU of paired xyxy float64 boxes ``[P, 4]`` as the VOC devkit computes it (``+pixel_offset`` sizes).

    Example:
        >>> voc_iou_pairs(np.array([[0.0, 0, 9, 9]]), np.array([[0.0, 0, 9, 4]]), pixel_offset=1.0)
        array([0.5])
    """
    width = np.maximum(
        np.minimum(det_boxes[:, 2], gt_boxes[:, 2])
        - np.maximum(det_boxes[:, 0], gt_boxes[:, 0])
        + pixel_offset,
        0.0,
    )
    height = np.maximum(
        np.minimum(det_boxes[:, 3], gt_boxes[:, 3])
        - np.maximum(det_boxes[:, 1], gt_boxes[:, 1])
        + pixel_offset,
        0.0,
    )
    overlap = width * height
    union = (
        (det_boxes[:, 2] - det_boxes[:, 0] + pixel_offset)
        * (det_boxes[:, 3] - det_boxes[:, 1] + pixel_offset)
        + (gt_boxes[:, 2] - gt_boxes[:, 0] + pixel_offset) * (gt_boxes[:, 3] - gt_boxes[:, 1] + pixel_offset)
        - overlap
    )
    return np.where(union > 0, overlap / np.where(union > 0, union, 1.0), 0.0)


@dataclass(frozen=True)
class VocResult:
    """PASCAL VOC evaluation outcome.

    Attributes:
        mean_average_precision: mean AP over classes with ground truth (NaN when none has any).
        average_precision: ``[K]`` AP per class, −1 for classes without (non-difficult) ground truth.
        precision / recall: per class, the arrays after each ranked detection (``[n_k]``).
        num_ground_truth: ``[K]`` non-difficult ground truths per class.
        num_classes_without_ground_truth: classes left out of the mean.
        category_ids / category_names: the K classes.
        iou_threshold, interpolation, pixel_offset: the settings used.
    """

    mean_average_precision: float
    average_precision: np.ndarray
    precision: tuple[np.ndarray, ...]
    recall: tuple[np.ndarray, ...]
    num_ground_truth: np.ndarray
    num_classes_without_ground_truth: int
    category_ids: np.ndarray
    category_names: tuple[str, ...]
    iou_threshold: float
    interpolation: str
    pixel_offset: float

    def per_class(self) -> list[dict[str, Any]]:
        """One row per class: id, name, ground-truth count, detections, AP."""
        return [
            {"category_id": int(c), "name": n, "num_gt": int(g), "num_det": len(p), "AP": float(ap)}
            for c, n, g, p, ap in zip(
                self.category_ids,
                self.category_names,
                self.num_ground_truth,
                self.precision,
                self.average_precision,
                strict=True,
            )
        ]


def evaluate_voc(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    *,
    iou_threshold: float = 0.5,
    interpolation: str = "all",
    pixel_offset: float = 0.0,
    num_classes: int | None = None,
) -> VocResult:
    """PASCAL VOC AP per class and mAP of detector outputs.

    Args:
        predictions: per image ``dict(boxes=Tensor[N, 4] xyxy abs pixels, scores=[N], labels=[N] int64)``.
        targets: per image ``dict(boxes=[M, 4] xyxy, labels=[M], difficult?=[M] bool)``.
        iou_threshold: a detection needs IoU strictly above it (VOC: 0.5).
        interpolation: ``"11point"`` (VOC2007) or ``"all"`` (VOC2010+).
        pixel_offset: 1 for the devkit's inclusive-pixel ``+1`` convention, else 0.
        num_classes: classes ``0…num_classes-1`` (default: the labels present).

    Example:
        >>> import torch
        >>> target = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20.0, 20, 30, 30]]),
        ...           "labels": torch.tensor([0, 0])}
        >>> prediction = {"boxes": torch.tensor([[0.0, 0, 10, 11], [50.0, 50, 60, 60]]),
        ...               "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([0, 0])}
        >>> evaluate_voc([prediction], [target]).mean_average_precision
        0.5
    """
    ground_truth, detections = from_predictions(predictions, targets, num_classes, warn_missing_area=False)
    return evaluate_voc_sets(
        ground_truth,
        detections,
        iou_threshold=iou_threshold,
        interpolation=interpolation,
        pixel_offset=pixel_offset,
    )


def evaluate_voc_sets(
    ground_truth: GroundTruthSet,
    detections: DetectionSet,
    *,
    iou_threshold: float = 0.5,
    interpolation: str = "all",
    pixel_offset: float = 0.0,
) -> VocResult:
    """:func:`evaluate_voc` on flat sets (e.g. loaded from COCO JSON files)."""
    if interpolation not in ("11point", "all"):
        raise ValueError(f"interpolation must be '11point' or 'all', got {interpolation!r}")
    if pixel_offset not in (0, 1):
        raise ValueError(f"pixel_offset must be 0 or 1, got {pixel_offset}")
    num_categories = len(ground_truth.category_ids)
    true_pos, false_pos, order = _match_voc(ground_truth, detections, iou_threshold, float(pixel_offset))
    category = detections.category[order]
    bounds = np.searchsorted(category, np.arange(num_categories + 1))
    counted = ~ground_truth.difficult
    num_gt = np.bincount(ground_truth.category[counted], minlength=num_categories)
    average_precision = np.full(num_categories, -1.0)
    precisions, recalls = [], []
    for k in range(num_categories):
        tp = np.cumsum(true_pos[bounds[k] : bounds[k + 1]], dtype=np.float64)
        fp = np.cumsum(false_pos[bounds[k] : bounds[k + 1]], dtype=np.float64)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        recall = tp / num_gt[k] if num_gt[k] else np.full(len(tp), np.nan)
        precisions.append(precision)
        recalls.append(recall)
        if num_gt[k]:
            average_precision[k] = interpolated_average_precision(
                precision, recall, interpolation, levels=DEVKIT_ELEVEN_LEVELS
            )
    valid = average_precision > -1
    return VocResult(
        mean_average_precision=float(average_precision[valid].mean()) if valid.any() else float("nan"),
        average_precision=average_precision,
        precision=tuple(precisions),
        recall=tuple(recalls),
        num_ground_truth=num_gt,
        num_classes_without_ground_truth=int((~valid).sum()),
        category_ids=ground_truth.category_ids,
        category_names=ground_truth.category_names,
        iou_threshold=iou_threshold,
        interpolation=interpolation,
        pixel_offset=float(pixel_offset),
    )


def _xyxy(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def _match_voc(
    ground_truth: GroundTruthSet, detections: DetectionSet, iou_threshold: float, pixel_offset: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP and FP flags of the detections ranked by (class, −score, input order), and that ranking."""
    num_categories = len(ground_truth.category_ids)
    order = np.lexsort((np.arange(len(detections.scores)), -detections.scores, detections.category))
    det_group = (detections.image * num_categories + detections.category)[order]
    gt_group = ground_truth.image * num_categories + ground_truth.category
    gt_order = np.argsort(gt_group, kind="stable")
    start = np.searchsorted(gt_group[gt_order], det_group, side="left")
    count = np.searchsorted(gt_group[gt_order], det_group, side="right") - start
    pair_det = np.repeat(np.arange(len(order)), count)
    pair_gt = gt_order[
        np.repeat(start, count) + np.arange(len(pair_det)) - np.repeat(np.cumsum(count) - count, count)
    ]
    iou = voc_iou_pairs(
        _xyxy(detections.boxes[order][pair_det]), _xyxy(ground_truth.boxes[pair_gt]), pixel_offset
    )
    # best ground truth per detection: highest IoU, first in ground-truth order on ties (np.argmax)
    best_first = np.lexsort((pair_gt, -iou, pair_det))
    first_of_det = (
        best_first[np.r_[True, np.diff(pair_det[best_first]) != 0]] if len(best_first) else best_first
    )
    best_gt = np.full(len(order), -1)
    best_iou = np.zeros(len(order))
    best_gt[pair_det[first_of_det]] = pair_gt[first_of_det]
    best_iou[pair_det[first_of_det]] = iou[first_of_det]
    hit = best_iou > iou_threshold
    difficult = hit & ground_truth.difficult[np.maximum(best_gt, 0)] if len(ground_truth.difficult) else hit
    claims = np.flatnonzero(hit & ~difficult)  # in rank order
    _, first_claim = np.unique(best_gt[claims], return_index=True)
    true_pos = np.zeros(len(order), dtype=bool)
    true_pos[claims[first_claim]] = True
    false_pos = ~hit | (hit & ~difficult & ~true_pos)
    return true_pos, false_pos, order
