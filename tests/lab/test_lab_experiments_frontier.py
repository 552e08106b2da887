"""The frontier experiment (Cascade R-CNN, RefineDet): its measurements on an untrained model against slow
references, and the verdict logic on fixed numbers, both ways."""

from __future__ import annotations

import torch

from visionkit.data.shapes import ShapesDataset
from visionkit.lab.experiments import frontier_cascade_refinedet as experiment
from visionkit.models import create_model
from visionkit.models.detectors.refinedet import refine


def _slow_iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_anchor_ious_match_a_slow_loop() -> None:
    torch.manual_seed(0)
    model = create_model("refinedet_plain", num_classes=3).eval()
    image, target = ShapesDataset(1, seed=5)[0]
    found = experiment.anchor_ious(model, [image], [target])
    with torch.no_grad():
        batch, _ = model.preprocess([image])
        _, deltas, _, _, anchors = model.outputs(batch, model.extract_features(batch))
    refined = refine(deltas[0], anchors[0])
    before, after = [], []
    for i, anchor in enumerate(anchors[0].tolist()):
        ious = [_slow_iou(box, anchor) for box in target["boxes"].tolist()]
        best = max(range(len(ious)), key=ious.__getitem__)
        if ious[best] >= 0.5:
            before.append(ious[best])
            after.append(_slow_iou(target["boxes"][best].tolist(), refined[i].tolist()))
    assert found["anchors"] == len(before) > 0
    assert abs(found["before"] - sum(before) / len(before)) < 1e-6  # float32 IoUs, means of ≤ 1e3 values
    assert abs(found["after"] - sum(after) / len(after)) < 1e-6


def test_verdicts_hold_when_the_measurements_agree() -> None:
    verdicts = experiment.judge_frontier(
        [0.6, 0.8, 0.85, 0.86], [0.5, 0.7, 0.72], {"before": 0.55, "after": 0.8},
        {"low": 0.02, "high": 0.08}, {"refined": 0.7, "original": 0.65},
    )  # fmt: skip
    assert [v.holds for v in verdicts] == [True, True, True, True]


def test_verdicts_fail_when_they_do_not() -> None:
    verdicts = experiment.judge_frontier(
        [0.6, 0.8, 0.85, 0.84], [0.5, 0.7, 0.5], {"before": 0.55, "after": 0.5},
        {"low": -0.02, "high": 0.08}, {"refined": 0.7, "original": 0.69},
    )  # fmt: skip
    assert [v.holds for v in verdicts] == [False, False, False, False]
    assert not any(v.is_erratum for v in verdicts)


def test_stage_ious_match_a_slow_loop() -> None:
    torch.manual_seed(0)
    model = create_model("cascade_rcnn_plain_fpn", num_classes=3).eval()
    image, _ = ShapesDataset(1, seed=5)[0]
    with torch.no_grad():
        stages = model.stage_boxes([image])
    objects = stages[0][0][:3] + 2.0  # objects near three proposals, so some start at IoU >= 0.5
    target = {"boxes": objects, "labels": torch.zeros(3, dtype=torch.int64)}
    found = experiment.stage_ious(model, [image], [target])
    expected: list[list[float]] = [[] for _ in stages]
    for r, proposal in enumerate(stages[0][0].tolist()):
        ious = [_slow_iou(box, proposal) for box in objects.tolist()]
        best = max(range(len(ious)), key=ious.__getitem__)
        if ious[best] >= 0.5:
            for s, boxes in enumerate(stages):
                expected[s].append(_slow_iou(objects[best].tolist(), boxes[0][r].tolist()))
    assert len(found) == len(stages) == 4 and len(found[0]) == len(expected[0]) >= 3
    for got, want in zip(found, expected, strict=True):
        assert (
            max(abs(a - b) for a, b in zip(got, want, strict=True)) < 1e-6
        )  # float32 IoU: ~10 rounded ops of ≤ 2⁻²⁴ relative each, IoU ≤ 1
