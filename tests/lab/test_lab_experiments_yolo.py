"""The §18 YOLO experiment: the fusion observer on both fusions, the architecture read independently, and
the verdict logic on fixed numbers, both ways."""

from __future__ import annotations

import pytest

from visionkit.lab.experiments import s18_yolo_versions as experiment
from visionkit.models import create_model


@pytest.mark.parametrize(("fusion", "kind"), [("concat", "concatenation"), ("sum", "sum")])
def test_fusion_observer_tells_concatenation_from_sum(fusion: str, kind: str) -> None:
    model = create_model("yolov3_plain", num_classes=3, fusion=fusion)
    seen = experiment.observe_fusion(model, size=64)
    assert seen["kind"] == kind
    # independently: the first convolution of the set after the first upsampling takes this many channels
    first = next(m for m in model.neck.sets[1].modules() if hasattr(m, "in_channels"))
    assert seen["joined"] == first.in_channels
    assert seen["joined"] == (seen["upsampled"] + seen["finer"] if fusion == "concat" else seen["finer"])


def test_architecture_counts() -> None:
    v2, v3 = experiment.architecture("yolov2_plain"), experiment.architecture("yolov3_plain")
    assert (v2["anchors"], v3["anchors"], v3["per_scale"]) == (5, 9, [3, 3, 3])
    assert sorted(g[0] for g in v3["grids"]) == [416 // 32, 416 // 16, 416 // 8]
    verdicts = experiment.judge_architecture(v2, v3, experiment.observe_fusion(v3["model"], size=64))
    assert [v.holds for v in verdicts] == [True, False, False]
    assert all(v.is_erratum for v in verdicts[1:])


def test_architecture_verdicts_both_ways() -> None:
    paper = {"grids": [(13, 13)], "anchors": 5, "per_scale": [5]}
    handbook_v3 = {"grids": [(52, 52), (26, 26), (13, 13)], "anchors": 3, "per_scale": [1, 1, 1]}
    summed = {"kind": "sum", "upsampled": 96, "finer": 96, "joined": 96}
    assert [v.holds for v in experiment.judge_architecture(paper, handbook_v3, summed)] == [True] * 3
    one_scale = {"grids": [(13, 13)], "anchors": 9, "per_scale": [9]}
    concat = {"kind": "concatenation", "upsampled": 48, "finer": 96, "joined": 144}
    assert [v.holds for v in experiment.judge_architecture(paper, one_scale, concat)] == [False] * 3


def test_small_object_verdict_both_ways() -> None:
    rows = {"YOLOv2": {"APs": 0.2}, "YOLOv3": {"APs": 0.35}}
    assert experiment.judge_small(rows, {"low": 0.05, "high": 0.2}).holds
    assert not experiment.judge_small(rows, {"low": -0.01, "high": 0.2}).holds
