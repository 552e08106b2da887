"""Classification metrics from hard predictions (handbook §23, §30): the confusion matrix and its rates.

TP/FP/TN/FN per class come from a one-vs-rest confusion matrix; precision = TP/(TP+FP), recall = TPR =
TP/(TP+FN), specificity = TNR = TN/(TN+FP), FPR = FP/(FP+TN), F-β = (1+β²)·TP / ((1+β²)·TP + β²·FN + FP).
Every function equals scikit-learn's namesake bit for bit (tested: the same float64 operations; only a
macro average with NaN classes sums in another order). Where scikit-learn warns about a zero denominator,
the value is ``zero_division`` (default 0.0, sklearn's ``"warn"`` value) and no warning is raised;
``zero_division=float("nan")`` leaves such classes out of the average, as sklearn does.

Inputs are class indices ``[N]`` (any integers) or, for multi-label problems, 0/1 indicator matrices
``[N, C]``, as ``torch.Tensor``, ``np.ndarray`` or lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from visionkit.metrics._convert import to_numpy

__all__ = [
    "accuracy",
    "balanced_accuracy",
    "classification_report",
    "confusion_matrix",
    "f1_score",
    "false_positive_rate",
    "fbeta_score",
    "multilabel_confusion_matrix",
    "precision",
    "precision_recall_fscore_support",
    "recall",
    "specificity",
    "top_k_accuracy",
    "true_positive_rate",
]

_AVERAGES = ("binary", "micro", "macro", "weighted", "samples", None)


def _pair(targets: Any, predictions: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true = to_numpy(targets, "targets", ndim=(1, 2))
    y_pred = to_numpy(predictions, "predictions", ndim=(1, 2))
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"targets and predictions must have the same shape, got {y_true.shape} and {y_pred.shape}"
        )
    return y_true, y_pred


def _labels(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[int] | np.ndarray | None) -> np.ndarray:
    if y_true.ndim == 2:
        return np.arange(y_true.shape[1]) if labels is None else np.asarray(labels)
    return np.union1d(y_true, y_pred) if labels is None else np.asarray(labels)


def confusion_matrix(
    targets: Any,
    predictions: Any,
    labels: Sequence[int] | np.ndarray | None = None,
    normalize: str | None = None,
) -> np.ndarray:
    """Confusion matrix ``[L, L]``: row = true class, column = predicted class (scikit-learn's layout).

    Args:
        targets: true class indices ``[N]``.
        predictions: predicted class indices ``[N]``.
        labels: the classes, in order (default: sorted union of both inputs). Samples whose true or
            predicted class is not listed are left out.
        normalize: ``None`` (counts), ``"true"`` (rows sum to 1), ``"pred"`` (columns) or ``"all"``.

    Example:
        >>> confusion_matrix([0, 1, 1, 2], [0, 1, 2, 2])
        array([[1, 0, 0],
               [0, 1, 1],
               [0, 0, 1]])
    """
    y_true, y_pred = _pair(targets, predictions)
    if y_true.ndim != 1:
        raise ValueError(
            "confusion_matrix needs class indices [N]; use multilabel_confusion_matrix for [N, C]"
        )
    label_array = _labels(y_true, y_pred, labels)
    count = len(label_array)
    index_of = {int(label): i for i, label in enumerate(label_array.tolist())}
    true_index = np.array([index_of.get(int(v), -1) for v in y_true.tolist()], dtype=np.int64)
    pred_index = np.array([index_of.get(int(v), -1) for v in y_pred.tolist()], dtype=np.int64)
    keep = (true_index >= 0) & (pred_index >= 0)
    matrix = np.bincount(true_index[keep] * count + pred_index[keep], minlength=count * count)
    matrix = matrix.reshape(count, count)
    if normalize is None:
        return matrix
    with np.errstate(all="ignore"):
        if normalize == "true":
            result = matrix / matrix.sum(axis=1, keepdims=True)
        elif normalize == "pred":
            result = matrix / matrix.sum(axis=0, keepdims=True)
        elif normalize == "all":
            result = matrix / matrix.sum()
        else:
            raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', got {normalize!r}")
    return np.nan_to_num(result)


def multilabel_confusion_matrix(
    targets: Any, predictions: Any, labels: Sequence[int] | np.ndarray | None = None, samplewise: bool = False
) -> np.ndarray:
    """One-vs-rest confusion matrices ``[L, 2, 2]`` laid out ``[[TN, FP], [FN, TP]]`` per class.

    Works for class indices ``[N]`` (each class against the rest) and indicator matrices ``[N, C]``;
    ``samplewise=True`` (indicator input only) gives one matrix per sample instead.

    Example:
        >>> multilabel_confusion_matrix([0, 1, 1], [0, 1, 0])[1].tolist()
        [[1, 0], [1, 1]]
    """
    y_true, y_pred = _pair(targets, predictions)
    label_array = _labels(y_true, y_pred, labels)
    if y_true.ndim == 1:
        if samplewise:
            raise ValueError("samplewise=True needs multi-label indicator matrices [N, C]")
        true_hot = y_true[:, None] == label_array[None, :]
        pred_hot = y_pred[:, None] == label_array[None, :]
    else:
        true_hot = y_true[:, label_array].astype(bool)
        pred_hot = y_pred[:, label_array].astype(bool)
    axis = 1 if samplewise else 0
    tp = (true_hot & pred_hot).sum(axis=axis)
    fp = (~true_hot & pred_hot).sum(axis=axis)
    fn = (true_hot & ~pred_hot).sum(axis=axis)
    tn = true_hot.shape[axis] - tp - fp - fn
    return np.stack([tn, fp, fn, tp], axis=1).reshape(-1, 2, 2).astype(np.int64)


def accuracy(targets: Any, predictions: Any) -> float:
    """Fraction of correct predictions ``(TP+TN)/all``; for indicator matrices the subset accuracy.

    Example:
        >>> accuracy([0, 1, 2, 2], [0, 1, 1, 2])
        0.75
    """
    y_true, y_pred = _pair(targets, predictions)
    if y_true.size == 0:
        return 0.0
    correct = (y_true == y_pred) if y_true.ndim == 1 else (y_true == y_pred).all(axis=1)
    return float(np.mean(correct))


def balanced_accuracy(targets: Any, predictions: Any) -> float:
    """Mean per-class recall over the classes present in ``targets`` (robust to imbalance, §30).

    Classes that only occur in ``predictions`` are left out (sklearn warns about them).

    Example:
        >>> balanced_accuracy([0, 0, 0, 1], [0, 0, 0, 0])
        0.5
    """
    matrix = confusion_matrix(targets, predictions)
    with np.errstate(all="ignore"):
        per_class = np.diag(matrix) / matrix.sum(axis=1)
    per_class = per_class[~np.isnan(per_class)]
    return float(np.mean(per_class)) if per_class.size else 0.0


def _divide(numerator: np.ndarray, denominator: np.ndarray, zero_division: float) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    zero = denominator == 0
    result = numerator / np.where(zero, 1.0, denominator)
    result[zero] = zero_division
    return result


def _average(values: np.ndarray, weights: np.ndarray | None) -> float:
    keep = ~np.isnan(values)
    if not keep.any():
        return float("nan")
    if weights is None or weights[keep].sum() == 0:
        return float(np.mean(values[keep]))
    return float(np.average(values[keep], weights=weights[keep]))


def _set_labels(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    average: str | None,
    labels: Sequence[int] | np.ndarray | None,
    pos_label: int,
) -> np.ndarray | None:
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}")
    if average == "samples" and y_true.ndim != 2:
        raise ValueError("average='samples' needs multi-label indicator matrices [N, C]")
    if average != "binary" or y_true.ndim == 2:
        return None if labels is None else np.asarray(labels)
    present = np.union1d(y_true, y_pred)
    if len(present) > 2:
        raise ValueError(
            f"average='binary' needs at most 2 classes, got {len(present)} ({present.tolist()[:10]}); "
            "choose average='micro', 'macro', 'weighted' or None"
        )
    if len(present) == 2 and pos_label not in present:
        raise ValueError(f"pos_label={pos_label} is not one of the classes {present.tolist()}")
    return np.asarray([pos_label])


def precision_recall_fscore_support(
    targets: Any,
    predictions: Any,
    *,
    beta: float = 1.0,
    average: str | None = "binary",
    labels: Sequence[int] | np.ndarray | None = None,
    pos_label: int = 1,
    zero_division: float = 0.0,
) -> tuple[Any, Any, Any, np.ndarray | None]:
    """Precision, recall, F-β and support (true count) per class or averaged, as scikit-learn.

    Args:
        targets: true classes ``[N]`` or indicator matrix ``[N, C]``.
        predictions: predicted classes, same shape.
        beta: weight of recall in the F-score (β > 1 favours recall, §23).
        average: ``"binary"`` (only ``pos_label``), ``"micro"`` (pool the counts), ``"macro"`` (plain
            mean over classes), ``"weighted"`` (mean weighted by support), ``"samples"`` (multi-label
            only: per sample) or ``None`` (arrays per class).
        labels: classes to include, in order.
        pos_label: the positive class for ``average="binary"``.
        zero_division: value for a ratio whose denominator is 0 (``nan`` = leave out of averages).

    Returns:
        ``(precision, recall, fbeta, support)``: floats (support ``None``) when averaging, else arrays.

    Example:
        >>> p, r, f, _ = precision_recall_fscore_support([0, 1, 1, 1], [1, 1, 1, 0])
        >>> round(p, 4), round(r, 4), round(f, 4)
        (0.6667, 0.6667, 0.6667)
    """
    y_true, y_pred = _pair(targets, predictions)
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    chosen = _set_labels(y_true, y_pred, average, labels, pos_label)
    matrices = multilabel_confusion_matrix(y_true, y_pred, chosen, samplewise=average == "samples")
    tp = matrices[:, 1, 1]
    predicted = tp + matrices[:, 0, 1]
    actual = tp + matrices[:, 1, 0]
    if average == "micro":
        tp, predicted, actual = tp.sum(keepdims=True), predicted.sum(keepdims=True), actual.sum(keepdims=True)
    precision_value = _divide(tp, predicted, zero_division)
    recall_value = _divide(tp, actual, zero_division)
    if np.isposinf(beta):
        f_value = recall_value
    elif beta == 0:
        f_value = precision_value
    else:
        beta2 = beta**2
        f_value = _divide(
            (1 + beta2) * tp.astype(np.float64), beta2 * actual + predicted.astype(np.float64), zero_division
        )
    if average is None:
        return precision_value, recall_value, f_value, actual
    weights = actual if average == "weighted" else None
    return (
        _average(precision_value, weights),
        _average(recall_value, weights),
        _average(f_value, weights),
        None,
    )


def precision(targets: Any, predictions: Any, **options: Any) -> Any:
    """Precision TP/(TP+FP); options as :func:`precision_recall_fscore_support`.

    Example:
        >>> precision([0, 1, 1, 0], [1, 1, 1, 0])
        0.6666666666666666
    """
    return precision_recall_fscore_support(targets, predictions, **options)[0]


def recall(targets: Any, predictions: Any, **options: Any) -> Any:
    """Recall = TPR = TP/(TP+FN); options as :func:`precision_recall_fscore_support`.

    Example:
        >>> recall([0, 1, 1, 0], [1, 1, 0, 0])
        0.5
    """
    return precision_recall_fscore_support(targets, predictions, **options)[1]


true_positive_rate = recall


def fbeta_score(targets: Any, predictions: Any, beta: float, **options: Any) -> Any:
    """F-β = (1+β²)·P·R/(β²·P+R); options as :func:`precision_recall_fscore_support`.

    Example:
        >>> round(fbeta_score([0, 1, 1, 0], [1, 1, 0, 0], beta=2.0), 4)
        0.5
    """
    return precision_recall_fscore_support(targets, predictions, beta=beta, **options)[2]


def f1_score(targets: Any, predictions: Any, **options: Any) -> Any:
    """F1 = 2·P·R/(P+R) = 2TP/(2TP+FP+FN).

    Example:
        >>> round(f1_score([0, 1, 1, 0], [1, 1, 0, 0]), 4)
        0.5
    """
    return fbeta_score(targets, predictions, 1.0, **options)


def _negative_rate(
    targets: Any,
    predictions: Any,
    *,
    numerator: str,
    average: str | None,
    labels: Sequence[int] | np.ndarray | None,
    pos_label: int,
    zero_division: float,
) -> Any:
    y_true, y_pred = _pair(targets, predictions)
    chosen = _set_labels(y_true, y_pred, average, labels, pos_label)
    matrices = multilabel_confusion_matrix(y_true, y_pred, chosen, samplewise=average == "samples")
    tn, fp = matrices[:, 0, 0], matrices[:, 0, 1]
    top = tn if numerator == "tn" else fp
    if average == "micro":
        top, tn, fp = top.sum(keepdims=True), tn.sum(keepdims=True), fp.sum(keepdims=True)
    values = _divide(top, tn + fp, zero_division)
    if average is None:
        return values
    weights = matrices[:, 1, 1] + matrices[:, 1, 0] if average == "weighted" else None
    return _average(values, weights)


def specificity(
    targets: Any,
    predictions: Any,
    *,
    average: str | None = "binary",
    labels: Sequence[int] | np.ndarray | None = None,
    pos_label: int = 1,
    zero_division: float = 0.0,
) -> Any:
    """Specificity = TNR = TN/(TN+FP); averages as :func:`precision_recall_fscore_support` (weight = support).

    Example:
        >>> specificity([0, 0, 1, 1], [0, 1, 1, 1])
        0.5
    """
    return _negative_rate(
        targets,
        predictions,
        numerator="tn",
        average=average,
        labels=labels,
        pos_label=pos_label,
        zero_division=zero_division,
    )


def false_positive_rate(
    targets: Any,
    predictions: Any,
    *,
    average: str | None = "binary",
    labels: Sequence[int] | np.ndarray | None = None,
    pos_label: int = 1,
    zero_division: float = 0.0,
) -> Any:
    """FPR = FP/(FP+TN) = 1 − specificity.

    Example:
        >>> false_positive_rate([0, 0, 1, 1], [0, 1, 1, 1])
        0.5
    """
    return _negative_rate(
        targets,
        predictions,
        numerator="fp",
        average=average,
        labels=labels,
        pos_label=pos_label,
        zero_division=zero_division,
    )


def top_k_accuracy(targets: Any, scores: Any, k: int = 5) -> float:
    """Fraction of samples whose true class is among the ``k`` highest of ``scores[N, C]``.

    Ties are broken as scikit-learn does (among equal scores the higher class index ranks first).

    Example:
        >>> top_k_accuracy([2, 0], [[0.1, 0.3, 0.6], [0.2, 0.5, 0.3]], k=2)
        0.5
    """
    y_true = to_numpy(targets, "targets", ndim=(1,))
    y_score = to_numpy(scores, "scores", ndim=(2,), finite=True)
    if y_score.shape[0] != y_true.shape[0]:
        raise ValueError(
            f"scores must have one row per target: {y_true.shape[0]} targets, scores {y_score.shape}"
        )
    if np.any((y_true < 0) | (y_true >= y_score.shape[1])):
        raise ValueError(f"targets must be class indices in [0, {y_score.shape[1]}) (the columns of scores)")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranked = np.argsort(y_score, axis=1, kind="mergesort")[:, ::-1][:, :k]
    return float(np.mean((ranked == y_true[:, None]).any(axis=1))) if len(y_true) else 0.0


def classification_report(
    targets: Any, predictions: Any, class_names: Sequence[str] | None = None, digits: int = 2
) -> tuple[str, dict[str, dict[str, float]]]:
    """Per-class precision, recall, F1 and support plus accuracy and macro/weighted averages.

    Returns:
        ``(text, table)``: a printable table and the same numbers as a dict (as sklearn's
        ``output_dict=True``, keys are class names, ``"accuracy"``, ``"macro avg"``, ``"weighted avg"``).

    Example:
        >>> text, table = classification_report([0, 1, 1], [0, 1, 0])
        >>> table["macro avg"]["recall"]
        0.75
    """
    y_true, y_pred = _pair(targets, predictions)
    label_array = _labels(y_true, y_pred, None)
    names = [str(v) for v in label_array.tolist()] if class_names is None else list(class_names)
    if len(names) != len(label_array):
        raise ValueError(f"class_names must have {len(label_array)} entries, got {len(names)}")
    per_class = precision_recall_fscore_support(y_true, y_pred, average=None, labels=label_array.tolist())
    table: dict[str, Any] = {}
    for i, name in enumerate(names):
        table[name] = {
            "precision": float(per_class[0][i]),
            "recall": float(per_class[1][i]),
            "f1-score": float(per_class[2][i]),
            "support": float(np.asarray(per_class[3])[i]),
        }
    support = np.asarray(per_class[3])
    total = float(support.sum())
    if y_true.ndim == 1:
        table["accuracy"] = accuracy(y_true, y_pred)
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, average=average, labels=label_array.tolist()
        )
        table[f"{average} avg"] = {"precision": p, "recall": r, "f1-score": f, "support": total}
    width = max([len(n) for n in [*names, "weighted avg"]])
    lines = [f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
    for name, row in table.items():
        if name == "accuracy":
            lines += ["", f"{name:>{width}} {'':>9} {'':>9} {row:>9.{digits}f} {total:>9.0f}"]
            continue
        lines.append(
            f"{name:>{width}} {row['precision']:>9.{digits}f} {row['recall']:>9.{digits}f} "
            f"{row['f1-score']:>9.{digits}f} {row['support']:>9.0f}"
        )
    return "\n".join(lines), table
