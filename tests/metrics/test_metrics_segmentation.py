"""Segmentation metrics against scikit-learn and a per-pixel loop reference.

Tolerances: pixel accuracy, per-class accuracy and IoU are one division of exact integer counts on every
side (exact). Mean accuracy, mIoU and FW-IoU: the same per-class terms summed in a different order (the
loop's Python ``sum``, ``np.nanmean`` over an array with NaNs in between, our ``np.mean`` / ``.sum()`` of the
defined classes), one division each: :func:`tolerances.mean_difference_bound`. sklearn's balanced
accuracy is our np.mean of the same per-class recalls (exact).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from tolerances import assert_numbers_within, mean_difference_bound
from visionkit.metrics.segmentation import (
    SegmentationMeter,
    segmentation_confusion_matrix,
    segmentation_metrics,
)

F64 = torch.float64


def _loop_reference(predictions, targets, num_classes, ignore_index):
    """Count every pixel in Python, then apply the FCN paper's formulas literally."""
    n = [[0] * num_classes for _ in range(num_classes)]
    for p, t in zip(
        np.asarray(predictions).ravel().tolist(), np.asarray(targets).ravel().tolist(), strict=True
    ):
        if t != ignore_index:
            n[t][p] += 1
    t_i = [sum(row) for row in n]
    pixel = sum(n[i][i] for i in range(num_classes)) / sum(t_i)
    accs = [n[i][i] / t_i[i] for i in range(num_classes) if t_i[i]]
    unions = [t_i[i] + sum(n[j][i] for j in range(num_classes)) - n[i][i] for i in range(num_classes)]
    ious = [n[i][i] / unions[i] if unions[i] else float("nan") for i in range(num_classes)]
    fw = sum(t_i[i] * ious[i] for i in range(num_classes) if t_i[i]) / sum(t_i)
    return np.array(n), pixel, sum(accs) / len(accs), ious, np.nanmean(ious), fw


@pytest.mark.parametrize("seed", range(6))
def test_against_loop_and_sklearn(seed) -> None:
    rng = np.random.default_rng(seed)
    num_classes = 5
    targets = rng.integers(0, num_classes - (seed % 2), (2, 9, 11))  # odd seeds: class 4 never in targets
    predictions = np.where(
        rng.random(targets.shape) < 0.6, targets, rng.integers(0, num_classes, targets.shape)
    )
    targets[:, 0, :] = 255  # ignored row
    result = segmentation_metrics(torch.from_numpy(predictions), torch.from_numpy(targets), num_classes)
    matrix, pixel, mean_acc, ious, miou, fw = _loop_reference(predictions, targets, num_classes, 255)
    np.testing.assert_array_equal(result.confusion_matrix, matrix)
    assert result.pixel_accuracy == pixel
    np.testing.assert_array_equal(result.per_class_iou, ious)
    accs, iou = result.per_class_accuracy, result.per_class_iou
    accs, iou = accs[~np.isnan(accs)], iou[~np.isnan(iou)]  # the terms both sides sum (all in [0, 1])
    assert_numbers_within(result.mean_accuracy, mean_acc, mean_difference_bound(accs.sum(), accs.size, F64))
    assert_numbers_within(result.mean_iou, miou, mean_difference_bound(iou.sum(), iou.size, F64))
    # FW-IoU: Σ tᵢ·IoUᵢ / Σ tᵢ, each product rounded identically on both sides, the sum in another order
    weighted = matrix.sum(1)[matrix.sum(1) > 0] * result.per_class_iou[matrix.sum(1) > 0]
    fw_bound = mean_difference_bound(weighted.sum(), weighted.size, F64, divisor=matrix.sum())
    assert_numbers_within(result.frequency_weighted_iou, fw, fw_bound)
    keep = targets.ravel() != 255
    y_true, y_pred = targets.ravel()[keep], predictions.ravel()[keep]
    np.testing.assert_array_equal(
        result.confusion_matrix, skm.confusion_matrix(y_true, y_pred, labels=range(5))
    )
    assert result.pixel_accuracy == skm.accuracy_score(y_true, y_pred)  # exact count / count
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert result.mean_accuracy == skm.balanced_accuracy_score(y_true, y_pred)
        jaccard = skm.jaccard_score(y_true, y_pred, labels=range(5), average=None, zero_division=0)
    defined = ~np.isnan(result.per_class_iou)  # sklearn gives 0 (with a warning) where we give NaN
    np.testing.assert_array_equal(result.per_class_iou[defined], jaccard[defined])  # tp / (tp + fp + fn)
    assert (jaccard[~defined] == 0).all()


def test_scores_input_meter_and_ignore_none() -> None:
    rng = np.random.default_rng(9)
    logits = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    targets = torch.from_numpy(rng.integers(0, 4, (3, 6, 6)))
    from_scores = segmentation_metrics(logits, targets, 4, ignore_index=None)
    from_maps = segmentation_metrics(logits.argmax(1), targets, 4, ignore_index=None)
    assert from_scores.mean_iou == from_maps.mean_iou
    meter = SegmentationMeter(4, ignore_index=None)
    for i in range(3):
        meter.update(logits[i : i + 1].argmax(1), targets[i : i + 1])
    np.testing.assert_array_equal(meter.compute().confusion_matrix, from_maps.confusion_matrix)
    meter.reset()
    assert meter.matrix.sum() == 0


def test_perfect_and_absent_classes() -> None:
    labels = np.array([[0, 0, 1], [1, 2, 2]])
    result = segmentation_metrics(labels, labels, num_classes=4)
    assert result.pixel_accuracy == 1.0 and result.mean_iou == 1.0 and result.frequency_weighted_iou == 1.0
    assert np.isnan(result.per_class_iou[3]) and np.isnan(result.per_class_accuracy[3])


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"targets contain class ids \[7\]"):
        segmentation_confusion_matrix([[0, 1]], [[0, 7]], num_classes=3)
    with pytest.raises(ValueError, match=r"predictions contain class ids \[-1\]"):
        segmentation_confusion_matrix([[0, -1]], [[0, 1]], num_classes=3)
    with pytest.raises(ValueError, match="same shape"):
        segmentation_confusion_matrix([[0, 1, 1]], [[0, 1]], num_classes=3)
    with pytest.raises(ValueError, match="score channels"):
        segmentation_metrics(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), num_classes=3)
    with pytest.raises(TypeError, match="integers"):
        segmentation_metrics(np.zeros((2, 2)), np.zeros((2, 2)), num_classes=3)
    with pytest.raises(ValueError, match="must be finite"):
        segmentation_metrics(
            torch.full((1, 3, 2, 2), float("nan")), torch.zeros(1, 2, 2, dtype=torch.long), 3
        )
