"""COCO box AP/AR against pycocotools, live and bit for bit (all 12 stats plus the precision/recall arrays).

Exact by construction: our IoU is pycocotools' ``bbIou`` expression in float64 on the same xywh values,
the thresholds and the 101 recall points are built with the same ``np.linspace`` calls, precision is
``tp / (fp + tp + np.spacing(1))`` and recall ``tp / npig`` of the same integer counts, and every mean is
``np.mean`` of the same ``[T, R, K]`` slice masked with ``> -1`` in the same (C) order. Matching is
discrete, so any difference in it would be a bug, not rounding.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from tolerances import assert_numbers_within, mean_error_bound
from visionkit.metrics.detection.coco import (
    COCO_AREA_RANGES,
    coco_iou_thresholds,
    coco_recall_thresholds,
    evaluate_coco,
    evaluate_coco_sets,
)
from visionkit.metrics.detection.io import load_coco_ground_truth, load_coco_results

pycocotools = pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

COCO128 = (
    Path(__file__).resolve().parents[2].parent
    / "shared"
    / "data"
    / "coco128"
    / "annotations"
    / "instances_train2017_first128.json"
)


def _pycocotools(gt: dict, results: list, max_dets=None, area_ranges=None, iou_thrs=None) -> COCOeval:
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results)) if results else COCO()
        if not results:  # pycocotools' loadRes refuses an empty list; build the empty result set by hand
            coco_dt.dataset = {"images": gt["images"], "categories": gt["categories"], "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        if max_dets is not None:
            evaluator.params.maxDets = list(max_dets)
        if area_ranges is not None:
            evaluator.params.areaRng = [list(v) for v in area_ranges.values()]
            evaluator.params.areaRngLbl = list(area_ranges)
        if iou_thrs is not None:
            evaluator.params.iouThrs = np.asarray(iou_thrs)
        evaluator.evaluate()
        evaluator.accumulate()
        if max_dets is None and area_ranges is None and iou_thrs is None:
            evaluator.summarize()
    return evaluator


def _assert_same(ours, ref: COCOeval, stats: bool = True) -> None:
    np.testing.assert_array_equal(ours.precision, ref.eval["precision"])
    np.testing.assert_array_equal(ours.recall, ref.eval["recall"])
    if stats:
        np.testing.assert_array_equal(ours.stats, ref.stats)


def _generated_results(gt: dict, seed: int) -> list[dict]:
    """Jittered true positives, duplicates, hits on crowd regions, random false positives, tied scores."""
    rng = np.random.default_rng(seed)
    results = []
    image_ids = [image["id"] for image in gt["images"]]
    category_ids = [category["id"] for category in gt["categories"]]
    for annotation in gt["annotations"]:
        x, y, w, h = annotation["bbox"]
        copies = 2 if annotation.get("iscrowd") else int(rng.integers(0, 4))  # 2+ = duplicates
        for _ in range(copies):
            jitter = rng.normal(0, 0.08, 4) * np.array([w, h, w, h])
            box = [x + jitter[0], y + jitter[1], max(w + jitter[2], 0.5), max(h + jitter[3], 0.5)]
            score = float(rng.integers(0, 10) / 10) if rng.random() < 0.3 else float(rng.random())
            results.append(
                {
                    "image_id": annotation["image_id"],
                    "category_id": annotation["category_id"],
                    "bbox": [float(v) for v in box],
                    "score": score,
                }
            )
    for _ in range(2500):
        x, y = rng.random(2) * 500
        w, h = rng.random(2) * 200 + 1
        results.append(
            {
                "image_id": int(rng.choice(image_ids)),
                "category_id": int(rng.choice(category_ids)),
                "bbox": [float(x), float(y), float(w), float(h)],
                "score": float(rng.random()),
            }
        )
    order = rng.permutation(len(results))
    return [results[i] for i in order]


@pytest.mark.skipif(not COCO128.is_file(), reason="coco128 annotations not available")
@pytest.mark.parametrize("seed", [0])
def test_coco128_generated_detections_equal_pycocotools(seed: int) -> None:
    gt = json.loads(COCO128.read_text())
    assert any(a["iscrowd"] for a in gt["annotations"])  # crowd regions are exercised
    results = _generated_results(gt, seed)
    ref = _pycocotools(gt, results)
    ground_truth = load_coco_ground_truth(COCO128)
    ours = evaluate_coco_sets(ground_truth, load_coco_results(results, ground_truth))
    _assert_same(ours, ref)
    assert ours.stats[0] > 0.05  # the generated detections are not all misses


def _random_dataset(seed: int, num_images: int = 12, num_classes: int = 4, integer: bool = False):
    """Targets/predictions in the visionkit contract (xyxy) and the same data as COCO dicts."""
    rng = np.random.default_rng(seed)
    targets, predictions = [], []
    for i in range(num_images):
        count = int(rng.integers(0, 8)) if i % 5 else 0  # every 5th image has no ground truth
        xy = rng.random((count, 2)) * 200
        wh = rng.random((count, 2)) * 120 + 1
        boxes = np.concatenate([xy, xy + wh], axis=1)
        if integer:
            boxes = np.round(boxes)
        labels = rng.integers(0, num_classes, count)
        crowd = rng.random(count) < 0.1
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) * rng.uniform(0.6, 1.0, count)
        targets.append(
            {
                "boxes": torch.from_numpy(boxes),
                "labels": torch.from_numpy(labels),
                "iscrowd": torch.from_numpy(crowd),
                "area": torch.from_numpy(area),
            }
        )
        hits = rng.integers(0, count + 1) if count else 0
        pieces = [boxes[rng.integers(0, count, hits)] + rng.normal(0, 4, (hits, 4))] if count else []
        fp_xy = rng.random((int(rng.integers(0, 15)), 2)) * 250
        pieces.append(np.concatenate([fp_xy, fp_xy + rng.random((len(fp_xy), 2)) * 100 + 1], axis=1))
        det = np.concatenate(pieces)
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2])
        if integer:
            det = np.round(det)
        pred_labels = np.concatenate(
            [
                labels[rng.integers(0, count, hits)] if count else np.zeros(0, int),
                rng.integers(0, num_classes, len(fp_xy)),
            ]
        )
        scores = rng.integers(0, 6, len(det)) / 5.0 if integer else rng.random(len(det))
        predictions.append(
            {
                "boxes": torch.from_numpy(det),
                "scores": torch.from_numpy(scores),
                "labels": torch.from_numpy(pred_labels.astype(np.int64)),
            }
        )
    return targets, predictions, _as_coco(targets, predictions, num_classes)


def _as_coco(targets, predictions, num_classes):
    def xywh(boxes):
        b = np.asarray(boxes, dtype=np.float64)
        return [[float(r[0]), float(r[1]), float(r[2] - r[0]), float(r[3] - r[1])] for r in b]

    gt = {
        "images": [{"id": i + 1} for i in range(len(targets))],
        "categories": [{"id": c} for c in range(num_classes)],
        "annotations": [],
    }
    for i, t in enumerate(targets):
        for box, label, crowd, area in zip(
            xywh(t["boxes"]), t["labels"].tolist(), t["iscrowd"].tolist(), t["area"].tolist(), strict=True
        ):
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": label,
                    "bbox": box,
                    "area": area,
                    "iscrowd": int(crowd),
                }
            )
    results = []
    for i, p in enumerate(predictions):
        for box, score, label in zip(
            xywh(p["boxes"]), p["scores"].tolist(), p["labels"].tolist(), strict=True
        ):
            results.append({"image_id": i + 1, "category_id": label, "bbox": box, "score": score})
    return gt, results


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("integer", [False, True])
def test_random_synthetic_sets_equal_pycocotools(seed: int, integer: bool) -> None:
    targets, predictions, (gt, results) = _random_dataset(seed, integer=integer)
    ours = evaluate_coco(predictions, targets, num_classes=4)
    _assert_same(ours, _pycocotools(gt, results))


def test_empty_predictions_and_images_without_ground_truth() -> None:
    targets, predictions, (gt, _) = _random_dataset(3)
    empty = [
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
        for _ in targets
    ]
    ours = evaluate_coco(empty, targets, num_classes=4)
    _assert_same(ours, _pycocotools(gt, []))
    assert ours.stats[0] == 0.0
    # only images without ground truth get detections: every detection is a false positive
    no_gt = [p if len(t["boxes"]) == 0 else e for p, t, e in zip(predictions, targets, empty, strict=True)]
    _, _, (_, results) = _random_dataset(3)
    results = [r for r in results if len(targets[r["image_id"] - 1]["boxes"]) == 0]
    assert results
    _assert_same(evaluate_coco(no_gt, targets, num_classes=4), _pycocotools(gt, results))


def test_classes_without_ground_truth_are_minus_one_and_counted() -> None:
    targets, predictions, (gt, results) = _random_dataset(4, num_classes=3)
    ours = evaluate_coco(predictions, targets, num_classes=6)  # classes 3, 4, 5 never occur
    gt["categories"] = [{"id": c} for c in range(6)]
    _assert_same(ours, _pycocotools(gt, results))
    assert ours.num_classes_without_ground_truth == 3
    assert (ours.precision[:, :, 3:] == -1).all() and (ours.recall[:, 3:] == -1).all()
    assert [row["AP"] for row in ours.per_class()][3:] == [-1.0, -1.0, -1.0]


@pytest.mark.parametrize("max_dets", [(1, 5, 20), (2, 3, 4), (10, 100, 300)])
def test_configurable_max_detections_area_ranges_and_thresholds(max_dets) -> None:
    targets, predictions, (gt, results) = _random_dataset(5, num_images=8)
    areas = {"all": (0.0, 1e10), "tiny": (0.0, 40.0**2), "big": (40.0**2, 1e10)}
    thresholds = [0.3, 0.5, 0.7]
    ours = evaluate_coco(
        predictions,
        targets,
        num_classes=4,
        max_detections=max_dets,
        area_ranges=areas,
        iou_thresholds=thresholds,
    )
    ref = _pycocotools(gt, results, max_dets=max_dets, area_ranges=areas, iou_thrs=thresholds)
    _assert_same(ours, ref, stats=False)
    ours_default = evaluate_coco(predictions, targets, num_classes=4, max_detections=max_dets)
    ref_default = _pycocotools(gt, results, max_dets=max_dets)
    _assert_same(ours_default, ref_default, stats=False)
    valid = ref_default.eval["precision"][..., 0, 2]
    assert ours_default.stats[0] == valid[valid > -1].mean()


def test_per_class_table_and_pr_curves() -> None:
    targets, predictions, (gt, results) = _random_dataset(6)
    ours = evaluate_coco(predictions, targets, num_classes=4)
    ref = _pycocotools(gt, results)
    for k, row in enumerate(ours.per_class()):
        p = ref.eval["precision"][:, :, k, 0, -1]
        assert row["AP"] == p[p > -1].mean()  # np.mean of the same masked [T, R] slice
        assert row["AP50"] == p[0][p[0] > -1].mean()
        assert row["num_gt"] == sum(
            1 for a in gt["annotations"] if a["category_id"] == k and not a["iscrowd"]
        )
    recall_points, curve = ours.pr_curve(category=1, iou_threshold=0.5)
    assert recall_points.shape == (101,)
    np.testing.assert_array_equal(curve, ref.eval["precision"][0, :, 1, 0, -1])
    assert "maxDets=100" in ours.summary() and len(ours.summary().splitlines()) == 12


def test_grids_are_built_exactly_as_pycocotools() -> None:
    params = COCOeval(iouType="bbox").params
    np.testing.assert_array_equal(coco_iou_thresholds(), params.iouThrs)
    np.testing.assert_array_equal(coco_recall_thresholds(), params.recThrs)
    assert [list(v) for v in COCO_AREA_RANGES.values()] == params.areaRng
    assert coco_iou_thresholds().dtype == np.float64


def test_unknown_image_ids_nan_and_duplicates_are_rejected(tmp_path) -> None:
    targets, _, (gt, results) = _random_dataset(7)
    ground_truth = load_coco_ground_truth(gt)
    with pytest.raises(ValueError, match=r"image ids not in the ground truth: \[998, 999\]"):
        load_coco_results(
            [*results, {**results[0], "image_id": 999}, {**results[0], "image_id": 998}], ground_truth
        )
    with pytest.raises(ValueError, match=r"category ids not in the ground truth: \[77\]"):
        load_coco_results([*results, {**results[0], "category_id": 77}], ground_truth)
    with pytest.raises(ValueError, match=r"non-finite score at entries \[1\]"):
        load_coco_results([results[0], {**results[0], "score": float("nan")}], ground_truth)
    with pytest.raises(ValueError, match="non-finite or negative-size 'bbox'"):
        load_coco_results([{**results[0], "bbox": [0, 0, float("nan"), 3]}], ground_truth)
    duplicated = copy.deepcopy(gt)
    duplicated["images"].append({"id": 1})
    with pytest.raises(ValueError, match=r"duplicate image ids \[1\]"):
        load_coco_ground_truth(duplicated)
    duplicated = copy.deepcopy(gt)
    duplicated["annotations"].append(dict(duplicated["annotations"][0]))
    with pytest.raises(ValueError, match="duplicate annotation ids"):
        load_coco_ground_truth(duplicated)
    with pytest.raises(ValueError, match="does not exist"):
        load_coco_ground_truth(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad\.json.*not valid JSON"):
        load_coco_ground_truth(tmp_path / "bad.json")
    prediction = {
        "boxes": torch.tensor([[0.0, 0, 5, 5]]),
        "scores": torch.tensor([float("nan")]),
        "labels": torch.tensor([0]),
    }
    with pytest.raises(ValueError, match=r"predictions\[0\]\['scores'\] must be finite"):
        evaluate_coco([prediction], targets[:1])
    prediction["scores"] = torch.tensor([0.5])
    prediction["boxes"] = torch.tensor([[0.0, float("inf"), 5, 5]])
    with pytest.raises(ValueError, match=r"predictions\[0\]\['boxes'\] must be finite"):
        evaluate_coco([prediction], targets[:1])
    with pytest.raises(ValueError, match="predictions has 1 images but targets has 2"):
        evaluate_coco([prediction], targets[:2])
    keyed_targets = [{**t, "image_id": i + 10} for i, t in enumerate(targets[:2])]
    with pytest.raises(ValueError, match=r"image ids not in the ground truth: \[5\]"):
        evaluate_coco([{**prediction, "boxes": torch.tensor([[0.0, 0, 5, 5]]), "image_id": 5}], keyed_targets)


def test_missing_area_is_computed_with_a_warning() -> None:
    target = {"boxes": torch.tensor([[0.0, 0, 10, 20]]), "labels": torch.tensor([0])}
    prediction = {
        "boxes": torch.tensor([[0.0, 0, 10, 20]]),
        "scores": torch.tensor([0.7]),
        "labels": torch.tensor([0]),
    }
    with pytest.warns(UserWarning, match="1 ground-truth boxes have no 'area'"):
        result = evaluate_coco([prediction], [target])
    # one perfect match: every precision point is pycocotools' 1 / (1 + spacing(1)) (one rounding), every
    # recall 1; AP is the mean of those equal values, within γ(n) of them (tests/tolerances.py)
    point = 1 / (1 + np.spacing(1))
    for a in (0, 1):  # "all" and "small" (200 px²)
        assert (result.precision[..., a, -1] == point).all() and (result.recall[..., a, -1] == 1.0).all()
        n = result.precision[..., a, -1].size
        assert_numbers_within(result.stats[3 * a], point, mean_error_bound(n * point, n, torch.float64))
    gt = {
        "images": [{"id": 1}],
        "categories": [{"id": 3}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 20]}],
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_coco_ground_truth(gt)
    assert loaded.area.tolist() == [200.0] and not loaded.iscrowd.any()
    assert any("no 'area'" in str(w.message) for w in caught) and any(
        "iscrowd" in str(w.message) for w in caught
    )


def _adversarial_dataset(seed: int):
    """Ties everywhere: duplicated ground truths, equal scores, IoU exactly 0.5, zero-size boxes, crowds."""
    rng = np.random.default_rng(seed)
    targets, predictions = [], []
    for _ in range(6):
        base = rng.integers(0, 40, (4, 2)) * 2.0
        boxes = np.concatenate([base, base + rng.integers(1, 20, (4, 2)) * 2.0], axis=1)
        boxes = np.concatenate([boxes, boxes[:2]])  # exact duplicates: IoU ties between ground truths
        labels = rng.integers(0, 2, len(boxes))
        labels[4:] = labels[:2]
        crowd = np.zeros(len(boxes), dtype=bool)
        crowd[rng.integers(0, len(boxes))] = True
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        area[0] = 40.0**2  # area field says "medium" whatever the box says
        targets.append(
            {
                "boxes": torch.from_numpy(boxes),
                "labels": torch.from_numpy(labels),
                "iscrowd": torch.from_numpy(crowd),
                "area": torch.from_numpy(area),
            }
        )
        det = np.concatenate(
            [boxes, boxes, boxes[:, [0, 1, 2, 1]] + [0, 0, 0, 0]]
        )  # copies and zero-height boxes
        half = boxes.copy()
        half[:, 2] = (boxes[:, 0] + boxes[:, 2]) / 2  # half the width: IoU exactly 0.5
        det = np.concatenate([det, half])
        det[:, 3] = np.maximum(det[:, 3], det[:, 1])
        scores = rng.integers(0, 3, len(det)) / 2.0
        det_labels = np.concatenate([labels, labels, labels, labels])
        predictions.append(
            {
                "boxes": torch.from_numpy(det),
                "scores": torch.from_numpy(scores),
                "labels": torch.from_numpy(det_labels),
            }
        )
    return targets, predictions, _as_coco(targets, predictions, 2)


@pytest.mark.parametrize("seed", range(4))
def test_adversarial_ties_equal_pycocotools(seed: int) -> None:
    targets, predictions, (gt, results) = _adversarial_dataset(seed)
    ours = evaluate_coco(predictions, targets, num_classes=2)
    _assert_same(ours, _pycocotools(gt, results))
    for max_dets in [(1, 2, 3)]:
        ours = evaluate_coco(predictions, targets, num_classes=2, max_detections=max_dets)
        _assert_same(ours, _pycocotools(gt, results, max_dets=max_dets), stats=False)


def test_unknown_category_in_ground_truth_is_rejected() -> None:
    gt = {
        "images": [{"id": 1}],
        "categories": [{"id": 1}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 4, "bbox": [0, 0, 2, 2], "area": 4, "iscrowd": 0}
        ],
    }
    with pytest.raises(ValueError, match=r"annotation category ids not in the ground truth: \[4\]"):
        load_coco_ground_truth(gt)
    gt["annotations"][0].update(category_id=1, image_id=7)
    with pytest.raises(ValueError, match=r"annotation image ids not in the ground truth: \[7\]"):
        load_coco_ground_truth(gt)


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_box = st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 4), st.integers(0, 4)).map(
    lambda b: [
        float(b[0]),
        float(b[1]),
        float(b[0] + b[2]),
        float(b[1] + b[3]),
    ]  # small grid: many exact ties
)


@st.composite
def _tiny_dataset(draw):
    num_images = draw(st.integers(1, 3))
    targets, predictions = [], []
    for _ in range(num_images):
        gt_boxes = draw(st.lists(_box, max_size=4))
        det_boxes = draw(st.lists(_box, max_size=6))
        targets.append(
            {
                "boxes": torch.tensor(gt_boxes, dtype=torch.float64).reshape(-1, 4),
                "labels": torch.tensor(
                    draw(st.lists(st.integers(0, 1), min_size=len(gt_boxes), max_size=len(gt_boxes))),
                    dtype=torch.long,
                ),
                "iscrowd": torch.tensor(
                    draw(st.lists(st.booleans(), min_size=len(gt_boxes), max_size=len(gt_boxes))),
                    dtype=torch.bool,
                ),
                "area": torch.tensor(
                    [(b[2] - b[0]) * (b[3] - b[1]) * 100 for b in gt_boxes], dtype=torch.float64
                ),
            }
        )
        predictions.append(
            {
                "boxes": torch.tensor(det_boxes, dtype=torch.float64).reshape(-1, 4),
                "scores": torch.tensor(
                    draw(
                        st.lists(
                            st.sampled_from([0.1, 0.5, 0.9]), min_size=len(det_boxes), max_size=len(det_boxes)
                        )
                    ),
                    dtype=torch.float64,
                ),
                "labels": torch.tensor(
                    draw(st.lists(st.integers(0, 1), min_size=len(det_boxes), max_size=len(det_boxes))),
                    dtype=torch.long,
                ),
            }
        )
    return targets, predictions


@settings(max_examples=40, deadline=None)
@given(_tiny_dataset())
def test_fuzz_tiny_datasets_equal_pycocotools(data) -> None:
    targets, predictions = data
    gt, results = _as_coco(targets, predictions, 2)
    ours = evaluate_coco(predictions, targets, num_classes=2, max_detections=(1, 2, 100))
    _assert_same(ours, _pycocotools(gt, results, max_dets=(1, 2, 100)), stats=False)


@pytest.mark.skipif(not COCO128.is_file(), reason="coco128 annotations not available")
def test_loader_round_trip_to_the_detector_contract() -> None:
    from visionkit.metrics.detection.io import to_predictions, to_targets

    gt = json.loads(COCO128.read_text())
    ground_truth = load_coco_ground_truth(gt)
    detections = load_coco_results(_generated_results(gt, 3), ground_truth)
    targets, predictions = to_targets(ground_truth), to_predictions(detections, ground_truth)
    assert len(targets) == 128 and targets[0]["boxes"].dtype == torch.float64
    first = next(a for a in gt["annotations"] if a["image_id"] == targets[0]["image_id"])
    x, y, w, h = first["bbox"]
    label = int(np.searchsorted(ground_truth.category_ids, first["category_id"]))
    assert [x, y, x + w, y + h] in targets[0]["boxes"].tolist() and label in targets[0]["labels"].tolist()
    via_contract = evaluate_coco(predictions, targets, num_classes=len(ground_truth.category_ids))
    direct = evaluate_coco_sets(ground_truth, detections)
    np.testing.assert_array_equal(via_contract.stats, direct.stats)


def test_per_detection_matches_equal_pycocotools_eval_images() -> None:
    from visionkit.metrics.detection.io import from_predictions
    from visionkit.metrics.detection.matching import match_coco

    targets, predictions, (gt, results) = _adversarial_dataset(5)
    ref = _pycocotools(gt, results)
    ground_truth, detections = from_predictions(predictions, targets, num_classes=2)
    k = len(ground_truth.category_ids)
    areas = np.array(list(COCO_AREA_RANGES.values()))
    matches = match_coco(
        detections.image * k + detections.category,
        detections.boxes,
        detections.scores,
        detections.area,
        ground_truth.image * k + ground_truth.category,
        ground_truth.boxes,
        ground_truth.area,
        ground_truth.iscrowd,
        coco_iou_thresholds(),
        areas,
        100,
    )
    matched_gt, det_ignored = matches.dense(len(coco_iou_thresholds()))
    where = {int(d): i for i, d in enumerate(matches.kept)}  # result index -> kept position
    checked = 0
    for e in ref.evalImgs:
        if e is None:
            continue
        a = [list(r) for r in areas].index(list(e["aRng"]))
        columns = [where[d - 1] for d in e["dtIds"]]  # loadRes numbers results from 1
        ours_gt = np.where(matched_gt[a][:, columns] >= 0, matched_gt[a][:, columns] + 1, 0)  # gt ids from 1
        np.testing.assert_array_equal(ours_gt, e["dtMatches"])
        np.testing.assert_array_equal(det_ignored[a][:, columns], e["dtIgnore"])
        checked += len(columns)
    assert checked > 50
