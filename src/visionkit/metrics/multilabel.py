"""Multi-label classification mAP as the handbook describes it (§33), with PASCAL VOC's interpolated AP.

Per class: rank the samples by confidence (highest first, ties kept in input order), take the top-1,
top-2, …, top-N as the predicted positives and compute precision = TP/k and recall = TP/M (M = number
of positives). AP summarizes that curve:

* ``"11point"`` (VOC2007): mean over r ∈ {0, 0.1, …, 1} of the highest precision at recall ≥ r (the
  levels exactly j/10; the devkit's ``np.arange(0, 1.1, 0.1)`` is :data:`DEVKIT_ELEVEN_LEVELS`);
* ``"all"`` (VOC2010+): area under the monotone precision envelope, which equals the handbook's mean
  over the M recall values 1/M, …, M/M of the highest precision at recall ≥ that value;
* ``"step"``: scikit-learn's Σ (Rₙ − Rₙ₋₁)·Pₙ (tied scores merged), see :mod:`visionkit.metrics.curves`.

mAP is the mean AP over classes that have at least one positive.

Handbook erratum: in §33's 20-sample example the top-5 recall is 2/6 = 33.3 %, not 30 % as printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from visionkit.metrics._convert import to_numpy
from visionkit.metrics.curves import average_precision as step_average_precision

__all__ = [
    "DEVKIT_ELEVEN_LEVELS",
    "ELEVEN_LEVELS",
    "MultilabelAP",
    "interpolated_average_precision",
    "multilabel_mean_average_precision",
    "precision_recall_at_k",
    "ranked_precision_recall",
]

_METHODS = ("11point", "all", "step")


#: The 11 recall levels of ``"11point"`` AP: ``j/10`` correctly rounded, so a recall ``tp/M`` (one rounded
#: division) reaches a level exactly when ``tp/M >= j/10`` in exact arithmetic.
ELEVEN_LEVELS = np.arange(11) / 10.0
#: The levels as the VOC devkit's Python ``voc_eval`` builds them, ``np.arange(0.0, 1.1, 0.1)``: 0.3, 0.6 and
#: 0.7 come out one ulp above ``j/10`` (0.30000000000000004...), so a recall of exactly 3/10 (6/10, 7/10)
#: does not reach that level there. :mod:`visionkit.metrics.detection.voc` uses these to give the devkit's
#: numbers; the handbook's definition (§33) is :data:`ELEVEN_LEVELS`.
DEVKIT_ELEVEN_LEVELS = np.arange(0.0, 1.1, 0.1)


def interpolated_average_precision(
    precision: Any, recall: Any, method: str = "all", levels: Any = None
) -> float:
    """PASCAL VOC AP from a ranked list's precision and recall (both ``[K]``, recall non-decreasing).

    Args:
        precision: precision after each of the K ranked predictions.
        recall: recall after each prediction.
        method: ``"11point"`` (VOC2007) or ``"all"`` (VOC2010+ area under the envelope).
        levels: the recall levels of ``"11point"`` (default :data:`ELEVEN_LEVELS`, exact tenths;
            :data:`DEVKIT_ELEVEN_LEVELS` reproduces the devkit's Python port).

    Example:
        >>> interpolated_average_precision([1.0, 0.5, 2 / 3], [0.5, 0.5, 1.0], "all")
        0.8333333333333333
    """
    precision_array = np.asarray(to_numpy(precision, "precision", ndim=(1,)), dtype=np.float64)
    recall_array = np.asarray(to_numpy(recall, "recall", ndim=(1,)), dtype=np.float64)
    if precision_array.shape != recall_array.shape:
        raise ValueError(
            f"precision and recall must match, got {precision_array.shape} and {recall_array.shape}"
        )
    if method == "11point":
        total = 0.0
        for threshold in ELEVEN_LEVELS if levels is None else np.asarray(levels, dtype=np.float64):
            reached = recall_array >= threshold
            total += (precision_array[reached].max() if reached.any() else 0.0) / 11.0
        return float(total)
    if method != "all":
        raise ValueError(f"method must be '11point' or 'all', got {method!r}")
    padded_recall = np.concatenate(([0.0], recall_array, [1.0]))
    envelope = np.concatenate(([0.0], precision_array, [0.0]))
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.flatnonzero(padded_recall[1:] != padded_recall[:-1])
    return float(np.sum((padded_recall[steps + 1] - padded_recall[steps]) * envelope[steps + 1]))


def _matrices(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    score_array = to_numpy(scores, "scores", ndim=(1, 2), finite=True).astype(np.float64)
    target_array = to_numpy(targets, "targets", ndim=(1, 2))
    if score_array.shape != target_array.shape:
        raise ValueError(
            f"scores and targets must have the same shape, got {score_array.shape} and {target_array.shape}"
        )
    if not np.isin(target_array, (0, 1)).all():
        raise ValueError("targets must be a 0/1 indicator array")
    if score_array.ndim == 1:
        return score_array[:, None], target_array[:, None].astype(bool)
    return score_array, target_array.astype(bool)


def ranked_precision_recall(scores: Any, targets: Any) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall of the top-k for k = 1…N, per class.

    Args:
        scores: confidences ``[N]`` or ``[N, C]``.
        targets: 0/1 ground truth of the same shape.

    Returns:
        ``(precision, recall)`` each ``[N, C]`` (row k-1 = top-k); recall is NaN for a class without
        positives.

    Example:
        >>> p, r = ranked_precision_recall([0.9, 0.8, 0.1], [1, 0, 1])
        >>> p[:, 0].tolist(), r[:, 0].tolist()
        ([1.0, 0.5, 0.6666666666666666], [0.5, 0.5, 1.0])
    """
    score_array, target_array = _matrices(scores, targets)
    order = np.argsort(-score_array, axis=0, kind="mergesort")
    hits = np.take_along_axis(target_array, order, axis=0)
    true_positives = np.cumsum(hits, axis=0, dtype=np.float64)
    ranks = np.arange(1, score_array.shape[0] + 1, dtype=np.float64)[:, None]
    positives = target_array.sum(axis=0).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall_value = np.where(positives > 0, true_positives / positives, np.nan)
    return true_positives / ranks, recall_value


def precision_recall_at_k(scores: Any, targets: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall when the top-``k`` samples per class are taken as positives (§33 example).

    Example:
        >>> precision_recall_at_k([0.9, 0.8, 0.1], [1, 0, 1], k=2)
        (array([0.5]), array([0.5]))
    """
    precision_value, recall_value = ranked_precision_recall(scores, targets)
    if not 1 <= k <= precision_value.shape[0]:
        raise ValueError(f"k must be in [1, {precision_value.shape[0]}] (number of samples), got {k}")
    return precision_value[k - 1], recall_value[k - 1]


@dataclass(frozen=True)
class MultilabelAP:
    """Result of :func:`multilabel_mean_average_precision`.

    Attributes:
        mean_average_precision: mean AP over classes with at least one positive (NaN if none).
        per_class: AP per class ``[C]``; NaN for classes without positives.
        num_classes_without_positives: how many classes were left out of the mean.
    """

    mean_average_precision: float
    per_class: np.ndarray
    num_classes_without_positives: int


def multilabel_mean_average_precision(scores: Any, targets: Any, method: str = "all") -> MultilabelAP:
    """Multi-label mAP (§33): rank by confidence per class, AP per class, mean over classes.

    Args:
        scores: confidences ``[N, C]`` (or ``[N]`` for one class).
        targets: 0/1 labels of the same shape.
        method: ``"11point"``, ``"all"`` or ``"step"`` (see the module docstring).

    Example:
        >>> result = multilabel_mean_average_precision([[0.9, 0.2], [0.8, 0.7], [0.1, 0.6]],
        ...                                            [[1, 0], [0, 1], [1, 1]], method="all")
        >>> round(result.mean_average_precision, 4)
        0.9167
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    score_array, target_array = _matrices(scores, targets)
    precision_value, recall_value = ranked_precision_recall(score_array, target_array)
    per_class = np.full(score_array.shape[1], np.nan)
    for column in range(score_array.shape[1]):
        if not target_array[:, column].any():
            continue
        if method == "step":
            per_class[column] = step_average_precision(target_array[:, column], score_array[:, column])
        else:
            per_class[column] = interpolated_average_precision(
                precision_value[:, column], recall_value[:, column], method
            )
    valid = ~np.isnan(per_class)
    mean = float(per_class[valid].mean()) if valid.any() else float("nan")
    return MultilabelAP(mean, per_class, int((~valid).sum()))
