"""Classification backbones: exact parameter counts, the feature contract, and a smoke test over every
registered model (forward on a small input, every parameter gets a finite gradient)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from visionkit.models import create_model, list_models
from visionkit.models.backbones import FEATURE_NAMES, FEATURE_STRIDES, Backbone
from visionkit.models.backbones.mobilenet import mobilenet_v1_input_size

#: torchvision's parameter counts (1000 classes), from the issue / torchvision's model docs
TORCHVISION_PARAMETERS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "mobilenet_v2": 3_504_872,
    "googlenet": 6_624_904,
}


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _is_backbone(name: str) -> bool:
    with torch.device("meta"):
        return isinstance(create_model(name), Backbone)


@pytest.mark.parametrize(("name", "expected"), sorted(TORCHVISION_PARAMETERS.items()))
def test_parameter_counts_equal_torchvision(name: str, expected: int) -> None:
    with torch.device("meta"):  # shapes only: no memory, no initialization cost
        assert _count(create_model(name)) == expected


def test_other_parameter_counts() -> None:
    with torch.device("meta"):
        assert _count(create_model("googlenet", aux_logits=True)) == 13_004_888
        assert _count(create_model("mobilenet_v1")) == 4_231_976  # the paper's "4.2 M"
        assert _count(create_model("darknet53")) == 41_609_928
        # width multiplier: thinner network, channels multiples of 8 (MobileNetV2) / int(c·α) (V1)
        half = create_model("mobilenet_v2", width_multiplier=0.5)
        assert all(m.out_channels % 8 == 0 for m in half.features)
        assert _count(create_model("mobilenet_v1", width_multiplier=0.5)) < 4_231_976 / 3
    assert [mobilenet_v1_input_size(r) for r in (1.0, 6 / 7, 5 / 7, 4 / 7)] == [224, 192, 160, 128]
    with pytest.raises(ValueError, match="resolution_multiplier"):
        mobilenet_v1_input_size(1.5)


@pytest.mark.parametrize("name", list_models())
def test_feature_contract(name: str) -> None:
    """Shapes for every backbone on the meta device (no compute); numbers in test_feature_values."""
    if not _is_backbone(name):
        pytest.skip(f"{name} is not a classification backbone")
    with torch.device("meta"):
        model = create_model(name, features_only=True).eval()
        full = create_model(name)
    assert model.features_only and set(model.strides) == set(FEATURE_NAMES) == set(model.out_channels)
    assert model.strides == FEATURE_STRIDES
    size = 64
    with torch.no_grad():
        features = model(torch.randn(1, 3, size, size, device="meta"))
    assert list(features) == list(FEATURE_NAMES)
    for key, value in features.items():
        assert value.shape[1] == model.out_channels[key]
        if name == "alexnet":  # 11×11/4 stem and unpadded pools: nominal strides, sizes 15, 7, 3, 1
            expected = (15, 7, 3, 1)[FEATURE_NAMES.index(key)]
        else:
            expected = size // model.strides[key]
        assert value.shape[2:] == (expected, expected), key
    # no head left, so every remaining parameter is used by the features
    assert _count(model) < _count(full)
    missing = full.load_state_dict(model.state_dict(), strict=False).missing_keys
    trunk = ("layer", "features.", "conv", "stage", "stem", "incep")
    assert missing and all(not key.startswith(trunk) for key in missing)


@pytest.mark.parametrize("name", ["resnet18", "resnet18_v2", "mobilenet_v2", "googlenet", "vgg11_bn"])
def test_feature_values_match_forward(name: str) -> None:
    """features_only and forward_features give the same numbers; the head applied to c5 is forward."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=4).eval()
    x = torch.randn(1, 3, 64, 64)
    # forward is forward_head(forward_features(x)): the same kernels on the same tensors, so identical
    with torch.no_grad():
        features = model.forward_features(x)
        assert torch.equal(model.forward_head(features["c5"]), model(x))
        backbone = copy.deepcopy(model).remove_head()  # what features_only=True does
        for key, value in backbone(x).items():
            assert torch.equal(value, features[key])


def test_googlenet_eval_returns_logits_and_bad_input() -> None:
    model = create_model("googlenet", aux_logits=True, num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        create_model("resnet18")(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="uint8"):
        create_model("mobilenet_v2")(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="uint8"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(TypeError, match="features_only"):
        create_model("resnet18", features_only=1)
    with pytest.raises(TypeError, match="unknown keyword"):
        create_model("resnet18", width_multiplier=0.5)


def test_zero_init_residual_and_strides_nominal() -> None:
    model = create_model("resnet50", zero_init_residual=True)
    assert all(float(block.bn3.weight.detach().abs().sum()) == 0 for block in model.layer1)
    assert math.log2(model.strides["c5"]) == 5
