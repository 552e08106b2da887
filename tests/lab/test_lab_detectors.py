"""The demo's small detectors keep the detector contracts; anchor counting equals a direct matcher count."""

from __future__ import annotations

import pytest
import torch

from visionkit.data.shapes import ShapesDataset
from visionkit.lab.demo import count_anchors, set_nms
from visionkit.lab.detectors import PlainBackbone, small_faster_rcnn, small_retinanet
from visionkit.ops.boxes import box_iou
from visionkit.ops.matcher import Matcher


def test_plain_backbone_feature_contract() -> None:
    backbone = PlainBackbone((8, 8, 16, 16, 32))
    features = backbone(torch.rand(2, 3, 64, 96))
    assert list(features) == ["c2", "c3", "c4", "c5"]
    for name, feature in features.items():
        stride = backbone.strides[name]
        assert feature.shape == (2, backbone.out_channels[name], 64 // stride, 96 // stride)
    with pytest.raises(ValueError, match="widths must be 5"):
        PlainBackbone((8, 8))


@pytest.mark.parametrize("build", [small_retinanet, small_faster_rcnn])
def test_small_detectors_train_and_detect(build) -> None:
    torch.manual_seed(0)
    model = build(3, widths=(8, 8, 16, 16, 32), fpn_channels=16)
    dataset = ShapesDataset(2, seed=0)
    images, targets = zip(*[dataset[i] for i in range(2)], strict=True)
    losses = model(list(images), list(targets))
    assert all(torch.isfinite(value) for value in losses.values())
    sum(losses.values()).backward()
    model.eval()
    for method in ("hard", "soft_gaussian"):
        set_nms(model, method)
        assert (model.roi_heads if hasattr(model, "roi_heads") else model).nms_method == method
        with torch.no_grad():
            detections = model(list(images))
        assert len(detections) == 2 and all(set(d) >= {"boxes", "scores", "labels"} for d in detections)


def test_count_anchors_equals_direct_matcher_count() -> None:
    torch.manual_seed(0)
    model = small_retinanet(3, widths=(8, 8, 16, 16, 32), fpn_channels=16).eval()
    dataset = ShapesDataset(3, seed=5)
    row = count_anchors(model, dataset, count=3, image_size=128)[0]
    batch = torch.zeros(1, 3, 128, 128)
    with torch.no_grad():
        anchors = model.anchor_generator(batch, model.features(batch))[0]
    foreground = background = 0
    for index in range(3):
        matches = Matcher(0.5, 0.4, allow_low_quality_matches=True)(
            box_iou(dataset[index][1]["boxes"], anchors)
        )
        foreground += int((matches >= 0).sum())
        background += int((matches == -1).sum())
    assert row["anchors / image"] == anchors.shape[0] == 3069
    assert row["foreground"] == pytest.approx(foreground / 3) and row["background"] == pytest.approx(
        background / 3
    )
