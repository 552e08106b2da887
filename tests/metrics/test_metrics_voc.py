"""PASCAL VOC AP against a literal re-implementation of the devkit's voc_eval loop.

Tolerances: the comparisons with the devkit loop are exact by construction — the boxes are integers (the
xyxy → xywh → xyxy round trip of our storage is exact), the IoU, recall ``tp/npos``, precision
``tp/max(tp + fp, eps)``, the envelope and ``np.sum((r[i+1] − r[i])·p[i+1])`` / ``ap += p/11.0`` over the
same levels are the same float64 expressions in the same order. The hand-made curves are compared with
their exact rational AP and a bound from counting our roundings (tests/tolerances.py).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from tolerances import assert_fraction_within, gamma
from visionkit.metrics.detection.voc import evaluate_voc


def _devkit_ap(rec, prec, use_07_metric):
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def _devkit_eval(predictions, targets, cls, ovthresh, use_07_metric, offset):
    """The devkit's per-class loop, one detection at a time (stable score order)."""
    class_recs, npos = {}, 0
    for i, t in enumerate(targets):
        keep = t["labels"].numpy() == cls
        difficult = t.get("difficult", torch.zeros(len(keep), dtype=torch.bool)).numpy()[keep].astype(bool)
        class_recs[i] = {
            "bbox": t["boxes"].numpy()[keep].astype(float),
            "difficult": difficult,
            "det": [False] * int(keep.sum()),
        }
        npos += int((~difficult).sum())
    image_ids, confidence, boxes = [], [], []
    for i, p in enumerate(predictions):
        keep = p["labels"].numpy() == cls
        image_ids += [i] * int(keep.sum())
        confidence += p["scores"].numpy()[keep].tolist()
        boxes += p["boxes"].numpy()[keep].astype(float).tolist()
    order = sorted(range(len(confidence)), key=lambda j: -confidence[j])
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, j in enumerate(order):
        record, bb = class_recs[image_ids[j]], np.array(boxes[j])
        ovmax, jmax = -np.inf, -1
        gt = record["bbox"]
        if gt.size > 0:
            iw = np.maximum(np.minimum(gt[:, 2], bb[2]) - np.maximum(gt[:, 0], bb[0]) + offset, 0.0)
            ih = np.maximum(np.minimum(gt[:, 3], bb[3]) - np.maximum(gt[:, 1], bb[1]) + offset, 0.0)
            inters = iw * ih
            uni = (
                (bb[2] - bb[0] + offset) * (bb[3] - bb[1] + offset)
                + (gt[:, 2] - gt[:, 0] + offset) * (gt[:, 3] - gt[:, 1] + offset)
                - inters
            )
            overlaps = inters / uni
            ovmax, jmax = np.max(overlaps), int(np.argmax(overlaps))
        if ovmax > ovthresh:
            if not record["difficult"][jmax]:
                if not record["det"][jmax]:
                    tp[d] = 1.0
                    record["det"][jmax] = True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    if npos == 0:
        return None
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return _devkit_ap(rec, prec, use_07_metric), rec, prec


def _random_voc(seed, num_images=10, num_classes=4):
    rng = np.random.default_rng(seed)
    targets, predictions = [], []
    for i in range(num_images):
        count = int(rng.integers(0, 7)) if i % 4 else 0
        xy = rng.integers(0, 100, (count, 2))
        boxes = np.concatenate([xy, xy + rng.integers(1, 60, (count, 2))], axis=1).astype(np.float64)
        labels = rng.integers(0, num_classes, count)
        targets.append(
            {
                "boxes": torch.from_numpy(boxes),
                "labels": torch.from_numpy(labels),
                "difficult": torch.from_numpy(rng.random(count) < 0.2),
            }
        )
        hits = rng.integers(0, count, int(rng.integers(0, 2 * count + 1))) if count else np.zeros(0, int)
        det = np.round(boxes[hits] + rng.normal(0, 3, (len(hits), 4))) if count else np.zeros((0, 4))
        fp_xy = rng.integers(0, 120, (int(rng.integers(0, 6)), 2))
        det = np.concatenate([det, np.concatenate([fp_xy, fp_xy + rng.integers(1, 50, fp_xy.shape)], 1)])
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2])
        pred_labels = np.concatenate(
            [labels[hits] if count else np.zeros(0, int), rng.integers(0, num_classes, len(fp_xy))]
        )
        predictions.append(
            {
                "boxes": torch.from_numpy(det),
                "scores": torch.from_numpy(rng.integers(0, 8, len(det)) / 7),
                "labels": torch.from_numpy(pred_labels.astype(np.int64)),
            }
        )
    return targets, predictions


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("interpolation", ["11point", "all"])
@pytest.mark.parametrize("offset", [0, 1])
def test_voc_equals_devkit_loop(seed, interpolation, offset) -> None:
    # seeds 4 and 6 have a class whose recall is exactly 3/10 (or 6/10, 7/10): with exact tenths as the
    # 11 levels the AP differs from the devkit's np.arange levels there (DEVKIT_ELEVEN_LEVELS)
    targets, predictions = _random_voc(seed)
    result = evaluate_voc(
        predictions, targets, interpolation=interpolation, pixel_offset=offset, num_classes=4
    )
    for cls in range(4):
        ref = _devkit_eval(predictions, targets, cls, 0.5, interpolation == "11point", offset)
        if ref is None:
            assert result.average_precision[cls] == -1.0
            continue
        assert result.average_precision[cls] == ref[0]
        np.testing.assert_array_equal(result.recall[cls], ref[1])
        np.testing.assert_array_equal(result.precision[cls], ref[2])
    valid = result.average_precision > -1
    assert result.mean_average_precision == result.average_precision[valid].mean()  # the same np.mean


def test_difficult_objects_are_ignored_and_duplicates_are_false_positives() -> None:
    target = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [50.0, 50, 60, 60]]),
        "labels": torch.tensor([0, 0]),
        "difficult": torch.tensor([False, True]),
    }
    prediction = {
        "boxes": torch.tensor([[50.0, 50, 60, 60], [0.0, 0, 10, 10], [0.0, 0, 10, 10]]),
        "scores": torch.tensor([0.95, 0.9, 0.8]),
        "labels": torch.tensor([0, 0, 0]),
    }
    result = evaluate_voc([prediction], [target], interpolation="all")
    # the difficult hit counts for nothing; the first hit on the easy box is TP, its duplicate FP
    assert result.num_ground_truth.tolist() == [1]
    np.testing.assert_array_equal(result.recall[0], [0.0, 1.0, 1.0])  # 0/1, 1/1: exact
    np.testing.assert_array_equal(result.precision[0], [0.0, 1.0, 0.5])  # 0/eps, 1/1, 1/2: exact
    assert result.mean_average_precision == 1.0  # one recall step (1 − 0)·1: exact
    eleven = evaluate_voc([prediction], [target], interpolation="11point")
    # 11 terms fl(1/11.0) added in sequence: each term 1 rounding + 10 additions
    assert_fraction_within(eleven.mean_average_precision, Fraction(1), gamma(11, torch.float64))


def test_eleven_point_differs_from_all_point_on_a_known_curve() -> None:
    # one class, 2 ground truths: ranks TP, FP, TP -> precision 1, 1/2, 2/3; recall 1/2, 1/2, 1
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20.0, 0, 30, 10]]), "labels": torch.tensor([0, 0])}
    prediction = {
        "boxes": torch.tensor([[0.0, 0, 10, 10], [40.0, 0, 50, 10], [20.0, 0, 30, 10]]),
        "scores": torch.tensor([0.9, 0.8, 0.7]),
        "labels": torch.tensor([0, 0, 0]),
    }
    all_point = evaluate_voc([prediction], [target], interpolation="all").mean_average_precision
    eleven = evaluate_voc([prediction], [target], interpolation="11point").mean_average_precision
    # exact values 1/2·1 + 1/2·2/3 = 5/6 and (6·1 + 5·2/3)/11 = 28/33. Ours: the recalls 1/2, 1 and their
    # steps are exact, precision 2/3 one rounding, the product by 1/2 and the sum one each: γ(3) of the
    # terms; 11-point: precision (1 rounding), /11, 10 additions: γ(12) of the terms (tests/tolerances.py)
    assert_fraction_within(all_point, Fraction(5, 6), gamma(3, torch.float64) * 5 / 6, "all-point")
    assert_fraction_within(eleven, Fraction(28, 33), gamma(12, torch.float64) * 28 / 33, "11-point")


def test_pixel_offset_changes_iou_at_the_threshold() -> None:
    # continuous IoU = 50/100 = 0.5 (not > 0.5: a miss); with +1 pixels it is 66/121 > 0.5 (a hit)
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}
    prediction = {
        "boxes": torch.tensor([[0.0, 0, 10, 5]]),
        "scores": torch.tensor([0.9]),
        "labels": torch.tensor([0]),
    }
    assert evaluate_voc([prediction], [target], pixel_offset=0).mean_average_precision == 0.0
    assert evaluate_voc([prediction], [target], pixel_offset=1).mean_average_precision == 1.0  # exact


def test_voc_bad_input() -> None:
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([0])}
    prediction = {
        "boxes": torch.tensor([[0.0, 0, 10, 5]]),
        "scores": torch.tensor([0.9]),
        "labels": torch.tensor([0]),
    }
    with pytest.raises(ValueError, match="interpolation"):
        evaluate_voc([prediction], [target], interpolation="101point")
    with pytest.raises(ValueError, match="pixel_offset"):
        evaluate_voc([prediction], [target], pixel_offset=0.5)
    with pytest.raises(ValueError, match="inverted"):
        evaluate_voc([{**prediction, "boxes": torch.tensor([[10.0, 0, 0, 5]])}], [target])
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    result = evaluate_voc([empty], [target])
    assert result.mean_average_precision == 0.0 and result.per_class()[0]["num_det"] == 0


def test_detection_meter_over_batches_equals_one_call() -> None:
    from visionkit.metrics.detection import DetectionMeter, evaluate_coco

    targets, predictions = _random_voc(11)
    for metric, interpolation in (("voc07", "11point"), ("voc12", "all")):
        meter = DetectionMeter(metric, num_classes=4)
        for start in range(0, len(targets), 3):
            meter.update(predictions[start : start + 3], targets[start : start + 3])
        whole = evaluate_voc(predictions, targets, num_classes=4, interpolation=interpolation)
        np.testing.assert_array_equal(meter.compute().average_precision, whole.average_precision)
    meter = DetectionMeter("coco", num_classes=4)
    areas = [
        {**t, "area": (t["boxes"][:, 2] - t["boxes"][:, 0]) * (t["boxes"][:, 3] - t["boxes"][:, 1])}
        for t in targets
    ]
    for start in range(0, len(targets), 4):
        meter.update(predictions[start : start + 4], areas[start : start + 4])
    predictions[0]["scores"].zero_()  # later in-place edits do not reach the stored copies
    np.testing.assert_array_equal(
        meter.compute().stats, evaluate_coco(meter.predictions, areas, num_classes=4).stats
    )
    meter.reset()
    assert meter.predictions == [] and meter.targets == []
    with pytest.raises(ValueError, match="metric must be"):
        DetectionMeter("map")
