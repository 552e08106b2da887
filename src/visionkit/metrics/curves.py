"""Threshold-free classification metrics (handbook §23): PR and ROC curves, AUC, ROC-AUC, average precision.

All equal scikit-learn's namesakes bit for bit (tested, including tied scores). Scores are ranked with a
stable sort, and tied scores form one threshold, as in sklearn's ``_binary_clf_curve``.
Where sklearn warns (no positive or no negative sample) the same value is returned without a warning:
``precision_recall_curve`` sets recall to 1, ``roc_curve`` gives NaN rates, ``roc_auc_score`` raises.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from visionkit.metrics._convert import to_numpy

__all__ = ["auc", "average_precision", "precision_recall_curve", "roc_auc_score", "roc_curve"]


def _binary_inputs(targets: Any, scores: Any, pos_label: int) -> tuple[np.ndarray, np.ndarray]:
    y_true = to_numpy(targets, "targets", ndim=(1,))
    y_score = to_numpy(scores, "scores", ndim=(1,), finite=True).astype(np.float64)
    if y_true.shape != y_score.shape:
        raise ValueError(
            f"targets and scores must have the same shape, got {y_true.shape} and {y_score.shape}"
        )
    if y_true.size == 0:
        raise ValueError("targets is empty: a curve needs at least one sample")
    return (y_true == pos_label).astype(np.float64), y_score


def _counts_per_threshold(
    y_true: np.ndarray, y_score: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative false and true positives at each distinct score, highest score first."""
    order = np.argsort(y_score, kind="mergesort")[::-1]
    y_score, y_true = y_score[order], y_true[order]
    last_of_value = np.r_[np.flatnonzero(np.diff(y_score)), y_true.size - 1]
    tps = np.cumsum(y_true)[last_of_value]
    fps = 1 + last_of_value - tps
    return fps, tps, y_score[last_of_value]


def precision_recall_curve(
    targets: Any, scores: Any, pos_label: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score threshold.

    Args:
        targets: true labels ``[N]``.
        scores: scores ``[N]`` (higher = more positive).
        pos_label: the positive class.

    Returns:
        ``(precision [T+1], recall [T+1], thresholds [T])``, recall decreasing; the last point is
        ``(precision 1, recall 0)``.

    Example:
        >>> p, r, t = precision_recall_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        >>> p.round(3).tolist(), r.tolist()
        ([0.5, 0.667, 0.5, 1.0, 1.0], [1.0, 1.0, 0.5, 0.5, 0.0])
    """
    y_true, y_score = _binary_inputs(targets, scores, pos_label)
    fps, tps, thresholds = _counts_per_threshold(y_true, y_score)
    predicted = tps + fps
    precision_value = np.where(predicted != 0, tps / np.where(predicted == 0, 1, predicted), 0.0)
    recall_value = np.ones_like(tps) if tps[-1] == 0 else tps / tps[-1]
    return np.r_[precision_value[::-1], 1.0], np.r_[recall_value[::-1], 0.0], thresholds[::-1]


def roc_curve(
    targets: Any, scores: Any, pos_label: int = 1, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic: FPR (x) and TPR (y) per threshold, starting at ``(0, 0)``.

    Returns:
        ``(fpr, tpr, thresholds)``; ``thresholds[0]`` is ``inf``. Collinear points are dropped when
        ``drop_intermediate``. Without negatives (positives) ``fpr`` (``tpr``) is all NaN.

    Example:
        >>> fpr, tpr, _ = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        >>> fpr.tolist(), tpr.tolist()
        ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    y_true, y_score = _binary_inputs(targets, scores, pos_label)
    fps, tps, thresholds = _counts_per_threshold(y_true, y_score)
    if drop_intermediate and fps.shape[0] > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    thresholds = np.r_[np.inf, thresholds]
    fpr = np.full(fps.shape, np.nan) if fps[-1] <= 0 else fps / fps[-1]
    tpr = np.full(tps.shape, np.nan) if tps[-1] <= 0 else tps / tps[-1]
    return fpr, tpr, thresholds


def auc(x: Any, y: Any) -> float:
    """Area under a curve by the trapezoid rule; ``x`` must be monotone (either direction).

    Example:
        >>> auc([0.0, 0.5, 1.0], [0.0, 1.0, 1.0])
        0.75
    """
    x_array = to_numpy(x, "x", ndim=(1,)).astype(np.float64)
    y_array = to_numpy(y, "y", ndim=(1,)).astype(np.float64)
    if x_array.shape != y_array.shape or x_array.size < 2:
        raise ValueError(f"x and y need the same length >= 2, got {x_array.shape} and {y_array.shape}")
    step = np.diff(x_array)
    direction = 1.0
    if np.any(step < 0):
        if not np.all(step <= 0):
            raise ValueError(f"x is neither increasing nor decreasing: {x_array[:10].tolist()}...")
        direction = -1.0
    return float(direction * np.trapezoid(y_array, x_array))


def _per_class(function: Any, targets: Any, scores: Any, average: str | None) -> float | np.ndarray:
    """Apply a binary score to each column of indicator ``targets[N, C]`` and average like sklearn."""
    y_true = to_numpy(targets, "targets", ndim=(1, 2))
    y_score = to_numpy(scores, "scores", ndim=(1, 2), finite=True)
    if y_true.ndim == 1:
        return function(y_true, y_score)
    if y_true.shape != y_score.shape:
        raise ValueError(
            f"targets and scores must have the same shape, got {y_true.shape} and {y_score.shape}"
        )
    if average == "micro":
        return function(y_true.ravel(), y_score.ravel())
    if average == "samples":
        return float(np.mean([function(y_true[i], y_score[i]) for i in range(y_true.shape[0])]))
    if average not in ("macro", "weighted", None):
        raise ValueError(f"average must be 'micro', 'macro', 'weighted', 'samples' or None, got {average!r}")
    values = np.array([function(y_true[:, c], y_score[:, c]) for c in range(y_true.shape[1])])
    if average is None:
        return values
    if average == "weighted":
        weights = y_true.sum(axis=0).astype(np.float64)
        return 0.0 if weights.sum() == 0 else float(np.average(values, weights=weights))
    return float(np.mean(values))


def _binary_average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    precision_value, recall_value, _ = precision_recall_curve(y_true, y_score)
    return float(max(0.0, -np.sum(np.diff(recall_value) * precision_value[:-1])))


def average_precision(targets: Any, scores: Any, average: str | None = "macro") -> float | np.ndarray:
    """Average precision as scikit-learn: AP = Σₙ (Rₙ − Rₙ₋₁)·Pₙ (step sum, no interpolation).

    For the interpolated 11-point / all-point AP of PASCAL VOC (§33) see
    :func:`visionkit.metrics.multilabel.interpolated_average_precision`.

    Args:
        targets: 0/1 labels ``[N]`` or indicator matrix ``[N, C]``.
        scores: scores of the same shape.
        average: for ``[N, C]``: ``"macro"``, ``"micro"``, ``"weighted"``, ``"samples"`` or ``None``.

    Example:
        >>> round(average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
        0.8333
    """
    return _per_class(_binary_average_precision, targets, scores, average)


def _binary_roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    if len(np.unique(y_true)) != 2:
        raise ValueError(
            f"roc_auc_score needs both classes in targets, got only {np.unique(y_true).tolist()}: "
            "ROC AUC is not defined then"
        )
    fpr, tpr, _ = roc_curve(y_true, y_score)
    return auc(fpr, tpr)


def roc_auc_score(targets: Any, scores: Any, average: str | None = "macro") -> float | np.ndarray:
    """Area under the ROC curve (binary ``[N]`` or one-vs-rest per column of ``[N, C]`` indicators).

    Raises:
        ValueError: when a (column of) ``targets`` holds only one class.

    Example:
        >>> roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.75
    """
    return _per_class(_binary_roc_auc, targets, scores, average)
