"""The plain conv backbone of the demo-size detectors keeps the features_only contract."""

from __future__ import annotations

import pytest
import torch

from visionkit.models.backbones.plain import PlainBackbone
from visionkit.structures import ShapeSpec


def test_plain_backbone_feature_contract() -> None:
    backbone = PlainBackbone((8, 8, 16, 16, 32))
    features = backbone(torch.rand(2, 3, 64, 96))
    assert list(features) == ["c2", "c3", "c4", "c5"]
    for name, feature in features.items():
        stride = backbone.strides[name]
        assert feature.shape == (2, backbone.out_channels[name], 64 // stride, 96 // stride)
    assert backbone.output_shape()["c3"] == ShapeSpec(16, 8)
    assert len(backbone.stages()) == 5 and backbone.stages()[0] is backbone.stem
    with pytest.raises(ValueError, match="widths must be 5"):
        PlainBackbone((8, 8))


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "plain"])
def test_backbones_name_the_expected_and_the_given_input_shape(name: str) -> None:
    from visionkit.errors import InputShapeError
    from visionkit.models import create_model

    backbone = PlainBackbone() if name == "plain" else create_model(name, num_classes=4)
    with pytest.raises(InputShapeError, match=r"expected \(N, 3, H, W\) images, got \(2, 1, 32, 32\)"):
        backbone(torch.rand(2, 1, 32, 32))
    with pytest.raises(InputShapeError, match=r"expected an image batch \(N, C, H, W\), got \(3, 32, 32\)"):
        backbone(torch.rand(3, 32, 32))
