"""The demo's paired bootstrap of a COCO AP gain, against pycocotools on the same resampled images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionkit.data.shapes import ShapesConfig, ShapesDataset
from visionkit.lab.demo import bootstrap_ap_gain

pycocotools = pytest.importorskip("pycocotools.cocoeval")
from pycocotools.coco import COCO  # noqa: E402


def _dataset() -> ShapesDataset:
    return ShapesDataset(5, seed=7, config=ShapesConfig.crowded_preset(128))


def _predictions(dataset: ShapesDataset, keep_every: int, jitter: float, seed: int) -> list[dict]:
    """Ground truth turned into detections: every ``keep_every``-th box, shifted by up to ``jitter`` px."""
    generator = torch.Generator().manual_seed(seed)
    predictions = []
    for index in range(len(dataset)):
        target = dataset[index][1]
        boxes = target["boxes"][::keep_every]
        boxes = boxes + (torch.rand(boxes.shape, generator=generator) - 0.5) * 2 * jitter
        scores = torch.rand(boxes.shape[0], generator=generator)
        predictions.append({"boxes": boxes, "scores": scores, "labels": target["labels"][::keep_every]})
    return predictions


def _pycocotools_ap(predictions: list[dict], targets: list[dict], iou: slice = slice(None)) -> float:
    """COCO AP of images given by position (repeats allowed: each position is its own image); ``iou``
    selects IoU thresholds (``slice(5, 6)``: AP75)."""
    images, annotations, detections = [], [], []
    for image_id, (prediction, target) in enumerate(zip(predictions, targets, strict=True), start=1):
        images.append({"id": image_id, "width": 128, "height": 128})
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist(), strict=True):
            width, height = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [box[0], box[1], width, height], "area": width * height,
                                "iscrowd": 0})  # fmt: skip
        for box, score, label in zip(prediction["boxes"].tolist(), prediction["scores"].tolist(),
                                     prediction["labels"].tolist(), strict=True):  # fmt: skip
            detections.append({"image_id": image_id, "category_id": label, "score": score,
                               "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})  # fmt: skip
    ground_truth = COCO()
    ground_truth.dataset = {"images": images, "annotations": annotations,
                            "categories": [{"id": k} for k in range(3)]}  # fmt: skip
    ground_truth.createIndex()
    evaluator = pycocotools.COCOeval(ground_truth, ground_truth.loadRes(detections), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    precision = evaluator.eval["precision"][iou, :, :, 0, 2]  # IoU, recall, class; area all, maxDets 100
    present = [k for k in range(3) if any(a["category_id"] == k for a in annotations)]
    return float(np.mean(precision[:, :, present]))


def test_bootstrap_matches_pycocotools_on_the_same_draws(capsys: pytest.CaptureFixture) -> None:
    dataset = _dataset()
    baseline = _predictions(dataset, keep_every=2, jitter=3.0, seed=1)
    candidate = _predictions(dataset, keep_every=1, jitter=3.0, seed=2)
    result = bootstrap_ap_gain(baseline, candidate, dataset, resamples=12, seed=3)
    targets = [dataset[index][1] for index in range(len(dataset))]
    generator = np.random.default_rng(3)
    gains = []
    for _ in range(12):
        draw = generator.integers(0, len(dataset), len(dataset))
        drawn = [targets[i] for i in draw]
        gains.append(_pycocotools_ap([candidate[i] for i in draw], drawn)
                     - _pycocotools_ap([baseline[i] for i in draw], drawn))  # fmt: skip
    capsys.readouterr()  # pycocotools prints progress
    low, high = np.percentile(gains, [2.5, 97.5])
    assert result["low"] == pytest.approx(low, abs=1e-6) and result["high"] == pytest.approx(high, abs=1e-6)
    assert result["below_zero"] == pytest.approx(float(np.mean(np.asarray(gains) <= 0)))
    assert len(set(np.round(gains, 9))) > 1  # the draws differ, so the check above compares intervals


def test_bootstrap_of_another_coco_number_matches_pycocotools(capsys: pytest.CaptureFixture) -> None:
    dataset = _dataset()
    baseline = _predictions(dataset, keep_every=2, jitter=3.0, seed=1)
    candidate = _predictions(dataset, keep_every=1, jitter=3.0, seed=2)
    result = bootstrap_ap_gain(baseline, candidate, dataset, resamples=6, seed=4, metric="AP75")
    targets = [dataset[index][1] for index in range(len(dataset))]
    generator, gains = np.random.default_rng(4), []
    for _ in range(6):
        draw = generator.integers(0, len(dataset), len(dataset))
        drawn = [targets[i] for i in draw]
        gains.append(_pycocotools_ap([candidate[i] for i in draw], drawn, slice(5, 6))
                     - _pycocotools_ap([baseline[i] for i in draw], drawn, slice(5, 6)))  # fmt: skip
    capsys.readouterr()
    low, high = np.percentile(gains, [2.5, 97.5])
    assert result["low"] == pytest.approx(low, abs=1e-6) and result["high"] == pytest.approx(high, abs=1e-6)


def test_bootstrap_of_equal_predictions_is_zero_and_of_a_strict_gain_is_positive() -> None:
    dataset = _dataset()
    half = _predictions(dataset, keep_every=2, jitter=0.0, seed=1)
    same = bootstrap_ap_gain(half, half, dataset, resamples=5)
    assert same == {"low": 0.0, "high": 0.0, "below_zero": 1.0}
    full = _predictions(dataset, keep_every=1, jitter=0.0, seed=1)  # every object, exact boxes
    better = bootstrap_ap_gain(half, full, dataset, resamples=20)
    assert 0 < better["low"] <= better["high"] and better["below_zero"] == 0.0


def test_bootstrap_rejects_bad_arguments() -> None:
    dataset = _dataset()
    predictions = _predictions(dataset, keep_every=1, jitter=0.0, seed=0)
    with pytest.raises(ValueError, match="resamples must be >= 1, got 0"):
        bootstrap_ap_gain(predictions, predictions, dataset, resamples=0)
    with pytest.raises(ValueError, match="baseline 4, candidate 5, dataset 5"):
        bootstrap_ap_gain(predictions[:4], predictions, dataset, resamples=3)
