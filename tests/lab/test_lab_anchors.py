"""The demo's anchor counting equals a direct matcher count; its NMS switch goes through the settings."""

from __future__ import annotations

import pytest
import torch

from visionkit.data.shapes import ShapesDataset
from visionkit.lab.demo import count_anchors, set_nms
from visionkit.models import create_model
from visionkit.models.detectors import ResizedInput
from visionkit.ops.boxes import box_iou
from visionkit.ops.matcher import Matcher
from visionkit.ops.sampler import sample_balanced

SMALL = {"widths": (8, 8, 16, 16, 32), "fpn_channels": 16}


def test_count_anchors_equals_direct_matcher_count() -> None:
    torch.manual_seed(0)
    model = create_model("retinanet_plain_fpn", num_classes=3, **SMALL).eval()
    dataset = ShapesDataset(3, seed=5)
    row = count_anchors(ResizedInput(model, 128), dataset, count=3, image_size=128)[0]
    batch = torch.zeros(1, 3, 128, 128)
    with torch.no_grad():
        anchors = model.anchor_generator(batch, model.levels(batch))[0]
    foreground = background = 0
    for index in range(3):
        matches = Matcher(0.5, 0.4, allow_low_quality_matches=True)(
            box_iou(dataset[index][1]["boxes"], anchors)
        )
        foreground += int((matches >= 0).sum())
        background += int((matches == -1).sum())
    assert row["anchors / image"] == anchors.shape[0] == 3069
    assert (
        row["foreground"] * 3 == foreground and row["background"] * 3 == background
    )  # exact: integer sums / 3 * 3


def test_count_anchors_of_the_rpn_counts_its_sampled_minibatch() -> None:
    torch.manual_seed(0)
    model = create_model("fasterrcnn_plain_fpn", num_classes=3, **SMALL).eval()
    dataset = ShapesDataset(2, seed=5)
    torch.manual_seed(1)
    rows = count_anchors(model, dataset, count=2, image_size=128)
    assert [row["model"] for row in rows] == [
        "Faster R-CNN: RPN anchors",
        "Faster R-CNN: RPN sampled minibatch",
    ]
    batch = torch.zeros(1, 3, 128, 128)
    features = model.extract_features(batch)
    anchors = model.rpn.anchor_generator(batch, [features[n] for n in model.rpn_feature_names])[0]
    torch.manual_seed(1)
    sampled = 0
    for index in range(2):
        matches = model.rpn.matcher(box_iou(dataset[index][1]["boxes"], anchors))
        positive, negative = sample_balanced(matches, 256, 0.5)
        sampled += int(positive.sum()) + int(negative.sum())
    assert rows[1]["foreground"] + rows[1]["background"] == sampled / 2 == 256


@pytest.mark.parametrize("name", ["retinanet_plain_fpn", "fasterrcnn_plain_fpn"])
def test_set_nms_changes_only_the_postprocess_settings(name: str) -> None:
    model = create_model(name, num_classes=3, **SMALL)
    set_nms(model, "soft_gaussian", 1.5)
    assert (model.postprocess.nms_method, model.postprocess.soft_nms_sigma) == ("soft_gaussian", 1.5)
    set_nms(model, "hard")
    assert (model.postprocess.nms_method, model.postprocess.soft_nms_sigma) == ("hard", 1.5)
    wrapped = ResizedInput(model, 64)
    set_nms(wrapped, "soft_linear")
    assert model.postprocess.nms_method == "soft_linear"
