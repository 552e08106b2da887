"""Comparing segmenters: accuracy in a band around object edges, and paired-bootstrap intervals of a gain.

The FCN paper's claim for skip layers (§4.2) is about detail: FCN-8s should beat FCN-32s most where classes
meet. :func:`boundary_band` marks the pixels within ``width`` pixels (Chebyshev distance: the
``(2·width + 1)²`` square) of a pixel of another class in the ground truth — the "trimap" band used to score
boundaries; :func:`boundary_metrics` scores predictions there only. :func:`bootstrap_gain` resamples images
with replacement and recomputes a metric of two segmenters on the same draw, so the interval reflects which
images a split happens to contain.

Example:
    >>> target = np.array([[[0, 0, 0, 1, 1, 1]]])
    >>> boundary_band(target, width=1).astype(int)
    array([[[0, 0, 1, 1, 0, 0]]])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from visionkit.metrics._convert import to_numpy
from visionkit.metrics.segmentation import (
    SegmentationResult,
    segmentation_confusion_matrix,
    segmentation_metrics,
)

__all__ = ["bootstrap_gain", "boundary_band", "boundary_metrics", "per_image_confusion_matrices"]


def boundary_band(targets: Any, width: int, ignore_index: int | None = 255) -> np.ndarray:
    """Bool mask of the pixels (not ignored) that have a pixel of another class (not ignored) within
    ``width`` pixels along both axes, per image of ``targets`` ``[N, H, W]`` (or ``[H, W]``)."""
    labels = to_numpy(targets, "targets")
    if labels.ndim not in (2, 3) or width < 0:
        raise ValueError(f"targets must be [H, W] or [N, H, W] and width >= 0, got {labels.shape}, {width}")
    valid = labels != ignore_index if ignore_index is not None else np.ones(labels.shape, bool)
    band = np.zeros(labels.shape, dtype=bool)
    height, wide = labels.shape[-2:]
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            # p = (y, x) against q = (y + dy, x + dx), over the ys and xs where both are inside
            ys, qs = slice(max(-dy, 0), height - max(dy, 0)), slice(max(dy, 0), height - max(-dy, 0))
            xs, qx = slice(max(-dx, 0), wide - max(dx, 0)), slice(max(dx, 0), wide - max(-dx, 0))
            differs = labels[..., ys, xs] != labels[..., qs, qx]
            band[..., ys, xs] |= differs & valid[..., ys, xs] & valid[..., qs, qx]
    return band


def boundary_metrics(
    predictions: Any, targets: Any, num_classes: int, width: int = 3, ignore_index: int = 255
) -> SegmentationResult:
    """:func:`~visionkit.metrics.segmentation.segmentation_metrics` over the pixels of
    :func:`boundary_band` only (band mIoU, band pixel accuracy...)."""
    labels = to_numpy(targets, "targets")
    banded = np.where(boundary_band(labels, width, ignore_index), labels, ignore_index)
    return segmentation_metrics(predictions, banded, num_classes, ignore_index)


def per_image_confusion_matrices(
    predictions: Any, targets: Any, num_classes: int, ignore_index: int | None = 255
) -> np.ndarray:
    """``[N, C, C]`` int64: the pixel confusion matrix of each image of ``[N, H, W]`` class maps (their sum
    is the dataset's matrix)."""
    prediction_maps, target_maps = to_numpy(predictions, "predictions"), to_numpy(targets, "targets")
    if prediction_maps.shape != target_maps.shape or prediction_maps.ndim != 3:
        raise ValueError(
            f"need [N, H, W] class maps of one shape, got {prediction_maps.shape}, {target_maps.shape}"
        )
    return np.stack(
        [
            segmentation_confusion_matrix(p, t, num_classes, ignore_index)
            for p, t in zip(prediction_maps, target_maps, strict=True)
        ]
    )


def _mean_iou(matrix: np.ndarray) -> float:
    return SegmentationResult.from_confusion_matrix(matrix).mean_iou


def bootstrap_gain(
    baseline: np.ndarray,
    candidate: np.ndarray,
    *,
    statistic: Callable[[np.ndarray], float] = _mean_iou,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap of ``statistic(candidate) − statistic(baseline)`` over images.

    Args:
        baseline, candidate: ``[N, C, C]`` per-image confusion matrices of the two segmenters on the same
            ``N`` images (:func:`per_image_confusion_matrices`).
        statistic: of a summed ``[C, C]`` matrix (default: mean IoU).
        resamples: bootstrap draws of ``N`` images with replacement.

    Returns:
        ``{"gain": on all images, "low": 2.5th, "high": 97.5th percentile, "below_zero": fraction of
        draws with gain <= 0}``.

    Example:
        >>> good = np.array([[[5, 0], [0, 5]]] * 4)
        >>> bad = np.array([[[4, 1], [1, 4]]] * 4)
        >>> bootstrap_gain(bad, good, resamples=50)["low"] > 0
        True
    """
    if baseline.shape != candidate.shape or baseline.ndim != 3 or len(baseline) == 0:
        raise ValueError(f"need two [N, C, C] stacks of one shape, got {baseline.shape}, {candidate.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    generator = np.random.default_rng(seed)
    count = len(baseline)
    gains = np.empty(resamples)
    for draw in range(resamples):
        weights = np.bincount(generator.integers(0, count, count), minlength=count)
        summed = [np.tensordot(weights, stack, axes=1) for stack in (baseline, candidate)]
        gains[draw] = statistic(summed[1]) - statistic(summed[0])
    low, high = np.percentile(gains, [2.5, 97.5])
    return {
        "gain": statistic(candidate.sum(0)) - statistic(baseline.sum(0)),
        "low": float(low),
        "high": float(high),
        "below_zero": float((gains <= 0).mean()),
    }
