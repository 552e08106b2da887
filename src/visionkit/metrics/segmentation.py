"""Semantic-segmentation metrics (handbook §22, FCN): pixel accuracy, mean accuracy, IoU, mIoU, FW-IoU.

With ``n_ij`` = pixels of true class ``i`` predicted as ``j`` and ``t_i = Σ_j n_ij`` (Long et al., *Fully
Convolutional Networks for Semantic Segmentation*, CVPR 2015, §5):

* pixel accuracy = Σ_i n_ii / Σ_i t_i
* mean accuracy = mean over classes present in the targets of n_ii / t_i
* IoU_i = n_ii / (t_i + Σ_j n_ji − n_ii); mean IoU over classes that occur in targets or predictions
* frequency-weighted IoU = Σ_i t_i · IoU_i / Σ_i t_i

Pixels whose target equals ``ignore_index`` are left out everywhere. Classes that never occur get IoU
and accuracy NaN (left out of the means). Predictions may be class maps ``[N, H, W]`` or scores
``[N, C, H, W]`` (arg-max over C).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from visionkit.metrics._convert import to_numpy

__all__ = ["SegmentationMeter", "SegmentationResult", "segmentation_confusion_matrix", "segmentation_metrics"]


def _labels(
    predictions: Any, targets: Any, num_classes: int, ignore_index: int | None
) -> tuple[np.ndarray, ...]:
    target_array = to_numpy(targets, "targets")
    prediction_array = to_numpy(predictions, "predictions", finite=True)
    if prediction_array.ndim == target_array.ndim + 1:  # scores [N, C, H, W]
        if prediction_array.shape[1] != num_classes:
            raise ValueError(
                f"predictions has {prediction_array.shape[1]} score channels, expected num_classes="
                f"{num_classes}"
            )
        prediction_array = prediction_array.argmax(axis=1)
    if prediction_array.shape != target_array.shape:
        raise ValueError(
            f"predictions {prediction_array.shape} and targets {target_array.shape} must have the "
            "same shape (or predictions one extra class dimension)"
        )
    if prediction_array.dtype.kind not in "iu" or target_array.dtype.kind not in "iu":
        raise TypeError(
            f"class maps must be integers, got predictions {prediction_array.dtype}, targets "
            f"{target_array.dtype}"
        )
    target_flat = target_array.reshape(-1).astype(np.int64)
    prediction_flat = prediction_array.reshape(-1).astype(np.int64)
    keep = target_flat != ignore_index if ignore_index is not None else np.ones(len(target_flat), bool)
    target_flat, prediction_flat = target_flat[keep], prediction_flat[keep]
    for name, values in (("targets", target_flat), ("predictions", prediction_flat)):
        bad = np.unique(values[(values < 0) | (values >= num_classes)])
        if bad.size:
            raise ValueError(
                f"{name} contain class ids {bad[:10].tolist()} outside [0, {num_classes}) "
                f"(ignore_index={ignore_index})"
            )
    return prediction_flat, target_flat


def segmentation_confusion_matrix(
    predictions: Any, targets: Any, num_classes: int, ignore_index: int | None = 255
) -> np.ndarray:
    """Pixel confusion matrix ``[C, C]`` (row = true class, column = predicted), int64.

    Example:
        >>> segmentation_confusion_matrix([[0, 1], [1, 1]], [[0, 1], [0, 255]], num_classes=2)
        array([[1, 1],
               [0, 1]])
    """
    prediction_flat, target_flat = _labels(predictions, targets, num_classes, ignore_index)
    counts = np.bincount(target_flat * num_classes + prediction_flat, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


@dataclass(frozen=True)
class SegmentationResult:
    """Metrics computed from a pixel confusion matrix (see the module docstring for the definitions).

    Attributes:
        pixel_accuracy, mean_accuracy, mean_iou, frequency_weighted_iou: floats.
        per_class_accuracy, per_class_iou: ``[C]`` (NaN where undefined).
        confusion_matrix: ``[C, C]`` int64.
    """

    pixel_accuracy: float
    mean_accuracy: float
    mean_iou: float
    frequency_weighted_iou: float
    per_class_accuracy: np.ndarray
    per_class_iou: np.ndarray
    confusion_matrix: np.ndarray

    @classmethod
    def from_confusion_matrix(cls, matrix: np.ndarray) -> SegmentationResult:
        """Compute every metric from a ``[C, C]`` confusion matrix."""
        matrix = np.asarray(matrix, dtype=np.int64)
        correct = np.diag(matrix).astype(np.float64)
        true_count = matrix.sum(axis=1).astype(np.float64)
        union = true_count + matrix.sum(axis=0) - correct
        total = true_count.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            accuracy = np.where(true_count > 0, correct / true_count, np.nan)
            iou = np.where(union > 0, correct / union, np.nan)
        present = true_count > 0
        return cls(
            pixel_accuracy=float(correct.sum() / total) if total else float("nan"),
            mean_accuracy=float(np.mean(accuracy[present])) if present.any() else float("nan"),
            mean_iou=float(np.mean(iou[union > 0])) if (union > 0).any() else float("nan"),
            frequency_weighted_iou=float((true_count[present] * iou[present]).sum() / total)
            if total
            else float("nan"),
            per_class_accuracy=accuracy,
            per_class_iou=iou,
            confusion_matrix=matrix,
        )


def segmentation_metrics(
    predictions: Any, targets: Any, num_classes: int, ignore_index: int | None = 255
) -> SegmentationResult:
    """Pixel accuracy, mean accuracy, per-class IoU, mIoU and FW-IoU of class maps.

    Args:
        predictions: class maps ``[N, H, W]`` (any shape) or scores ``[N, C, H, W]``.
        targets: true class maps, same shape as the class maps.
        num_classes: C.
        ignore_index: target value to leave out (``None``: none).

    Example:
        >>> result = segmentation_metrics([[0, 1], [1, 1]], [[0, 1], [0, 1]], num_classes=2)
        >>> result.pixel_accuracy, round(result.mean_iou, 4)
        (0.75, 0.5833)
    """
    return SegmentationResult.from_confusion_matrix(
        segmentation_confusion_matrix(predictions, targets, num_classes, ignore_index)
    )


class SegmentationMeter:
    """Accumulates the confusion matrix over batches; :meth:`compute` gives the dataset's metrics.

    Example:
        >>> meter = SegmentationMeter(num_classes=2)
        >>> meter.update([[0, 1]], [[0, 0]])
        >>> meter.update([[1, 1]], [[1, 1]])
        >>> meter.compute().pixel_accuracy
        0.75
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, predictions: Any, targets: Any) -> None:
        """Add one batch of class maps (or scores)."""
        self.matrix += segmentation_confusion_matrix(
            predictions, targets, self.num_classes, self.ignore_index
        )

    def compute(self) -> SegmentationResult:
        """Metrics over everything seen so far."""
        return SegmentationResult.from_confusion_matrix(self.matrix)

    def reset(self) -> None:
        """Forget all batches."""
        self.matrix[:] = 0
