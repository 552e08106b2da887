"""Boundary band and paired bootstrap against per-pixel and per-draw loops (integer counts: exact)."""

from __future__ import annotations

import numpy as np
import pytest

from visionkit.metrics.segmentation import segmentation_confusion_matrix, segmentation_metrics
from visionkit.metrics.segmentation_compare import (
    bootstrap_gain,
    boundary_band,
    boundary_metrics,
    per_image_confusion_matrices,
)


def _band_loop(labels: np.ndarray, width: int, ignore: int) -> np.ndarray:
    height, wide = labels.shape
    band = np.zeros(labels.shape, bool)
    for y in range(height):
        for x in range(wide):
            if labels[y, x] == ignore:
                continue
            for qy in range(max(y - width, 0), min(y + width + 1, height)):
                for qx in range(max(x - width, 0), min(x + width + 1, wide)):
                    if labels[qy, qx] != ignore and labels[qy, qx] != labels[y, x]:
                        band[y, x] = True
    return band


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("width", [0, 1, 3])
def test_boundary_band_against_a_loop(seed: int, width: int) -> None:
    rng = np.random.default_rng(seed)
    labels = np.kron(rng.integers(0, 3, (2, 4, 5)), np.ones((1, 4, 3), int))  # blocks: real edges
    labels[0, rng.random(labels.shape[1:]) < 0.1] = 255
    band = boundary_band(labels, width)
    for image in range(2):
        assert np.array_equal(band[image], _band_loop(labels[image], width, 255))
    assert band.any() == (width > 0)
    assert np.array_equal(boundary_band(labels[1], width), band[1])  # one [H, W] map


def test_boundary_metrics_score_the_band_only() -> None:
    rng = np.random.default_rng(7)
    targets = np.kron(rng.integers(0, 4, (3, 3, 3)), np.ones((1, 5, 5), int))
    predictions = np.where(rng.random(targets.shape) < 0.8, targets, rng.integers(0, 4, targets.shape))
    banded = np.where(boundary_band(targets, 2), targets, 255)
    ours = boundary_metrics(predictions, targets, 4, width=2)
    assert np.array_equal(
        ours.confusion_matrix, segmentation_metrics(predictions, banded, 4).confusion_matrix
    )
    assert ours.confusion_matrix.sum() == boundary_band(targets, 2).sum() < targets.size


def test_bootstrap_against_a_loop_over_the_same_draws() -> None:
    rng = np.random.default_rng(3)
    targets = rng.integers(0, 3, (9, 6, 6))
    weak = np.where(rng.random(targets.shape) < 0.6, targets, rng.integers(0, 3, targets.shape))
    strong = np.where(rng.random(targets.shape) < 0.9, targets, rng.integers(0, 3, targets.shape))
    a, b = (per_image_confusion_matrices(p, targets, 3) for p in (weak, strong))
    assert np.array_equal(a.sum(0), segmentation_confusion_matrix(weak, targets, 3))
    result = bootstrap_gain(a, b, resamples=200, seed=5)
    generator, gains = np.random.default_rng(5), []
    for _ in range(200):
        draw = generator.integers(0, 9, 9)
        scores = [segmentation_metrics(p[draw], targets[draw], 3).mean_iou for p in (weak, strong)]
        gains.append(scores[1] - scores[0])
    low, high = np.percentile(gains, [2.5, 97.5])
    assert result["low"] == low and result["high"] == high
    assert result["below_zero"] == np.mean(np.asarray(gains) <= 0)
    full = segmentation_metrics(strong, targets, 3).mean_iou - segmentation_metrics(weak, targets, 3).mean_iou
    assert result["gain"] == full and 0 < low < full < high
    same = bootstrap_gain(a, a, resamples=20)
    assert same == {"gain": 0.0, "low": 0.0, "high": 0.0, "below_zero": 1.0}
    with pytest.raises(ValueError, match=r"\[N, C, C\]"):
        bootstrap_gain(a, b[:3])


def test_docstring_examples() -> None:
    import doctest

    import visionkit.metrics.segmentation_compare as module

    result = doctest.testmod(module, extraglobs={"np": np})
    assert result.attempted > 0 and result.failed == 0
