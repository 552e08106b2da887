"""FPN neck against a literal re-implementation of the paper's equations."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from visionkit.models.necks import FeaturePyramidNetwork, top_down_merge


def _features(
    size: int = 64, channels: tuple[int, ...] = (8, 12, 16, 20), seed: int = 0
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        f"c{k}": torch.randn(2, c, -(-size // 2**k), -(-size // 2**k), generator=generator)
        for k, c in zip((2, 3, 4, 5), channels, strict=True)
    }


def _reference(fpn: FeaturePyramidNetwork, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Slow and literal: lateral 1×1, nearest upsampling by index lookup, add, 3×3 smoothing."""
    names = fpn.in_names
    laterals = [
        F.conv2d(features[n], c.weight, c.bias) for n, c in zip(names, fpn.lateral_convs, strict=True)
    ]
    merged = [None] * len(laterals)
    merged[-1] = laterals[-1]
    for i in range(len(laterals) - 2, -1, -1):
        coarse = merged[i + 1]
        height, width = laterals[i].shape[-2:]
        rows = (torch.arange(height) * coarse.shape[-2] // height).tolist()  # nearest: floor(dst * in / out)
        columns = (torch.arange(width) * coarse.shape[-1] // width).tolist()
        merged[i] = laterals[i] + coarse[:, :, rows][:, :, :, columns]
    outputs = {
        f"p{n[1:]}": F.conv2d(m, c.weight, c.bias, padding=1)
        for n, m, c in zip(names, merged, fpn.output_convs, strict=True)
    }
    return outputs


@pytest.mark.parametrize("size", [64, 70, 33])
def test_fpn_equals_the_literal_reference(size: int) -> None:
    torch.manual_seed(0)
    fpn = FeaturePyramidNetwork({"c2": 8, "c3": 12, "c4": 16, "c5": 20}, out_channels=6)
    features = _features(size)
    outputs = fpn(features)
    expected = _reference(fpn, features)
    assert list(outputs) == ["p2", "p3", "p4", "p5"]
    for name, tensor in expected.items():
        assert outputs[name].shape == (2, 6, *features[f"c{name[1:]}"].shape[-2:])
        # the same convolutions (weights, inputs, shapes), an exact nearest-neighbour copy and one
        # addition of the same two numbers: identical
        assert torch.equal(outputs[name], tensor)


def test_top_down_merge_adds_upsampled_coarser_maps() -> None:
    fine, middle, coarse = torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 2, 2), torch.tensor([[[[5.0]]]])
    merged = top_down_merge([fine, middle, coarse])
    assert merged[2].item() == 5.0
    assert merged[1].flatten().tolist() == [6.0] * 4
    assert merged[0].flatten().tolist() == [6.0] * 16
    with pytest.raises(ValueError, match="at least one"):
        top_down_merge([])


def test_extra_levels_maxpool_and_p6p7() -> None:
    torch.manual_seed(0)
    features = _features(128)
    maxpool = FeaturePyramidNetwork({"c2": 8, "c3": 12, "c4": 16, "c5": 20}, 6, extra_blocks="maxpool")
    outputs = maxpool(features)
    assert list(outputs) == ["p2", "p3", "p4", "p5", "p6"]
    assert torch.equal(outputs["p6"], outputs["p5"][:, :, ::2, ::2])  # a 1x1 max pool: a selection
    assert maxpool.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    retina = FeaturePyramidNetwork({"c3": 12, "c4": 16, "c5": 20}, 6, extra_blocks="p6p7", extra_source="c5")
    outputs = retina({k: v for k, v in features.items() if k != "c2"})
    assert list(outputs) == ["p3", "p4", "p5", "p6", "p7"]
    assert torch.equal(outputs["p6"], retina.p6(features["c5"]))  # the same convolution on the same input
    assert torch.equal(outputs["p7"], retina.p7(F.relu(outputs["p6"])))
    from_p5 = FeaturePyramidNetwork({"c3": 12, "c4": 16, "c5": 20}, 6, extra_blocks="p6p7", extra_source="p5")
    assert from_p5.p6.in_channels == 6


def test_every_parameter_gets_a_gradient() -> None:
    fpn = FeaturePyramidNetwork({"c3": 12, "c4": 16, "c5": 20}, 6, extra_blocks="p6p7")
    outputs = fpn({k: v for k, v in _features(64).items() if k != "c2"})
    sum(o.sum() for o in outputs.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in fpn.parameters())


def test_bad_configuration_and_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="consecutive"):
        FeaturePyramidNetwork({"c2": 4, "c4": 4})
    with pytest.raises(ValueError, match="extra_blocks"):
        FeaturePyramidNetwork({"c5": 4}, extra_blocks="p8")
    fpn = FeaturePyramidNetwork({"c4": 16, "c5": 20}, 6)
    with pytest.raises(ValueError, match=r"missing \['c4'\]"):
        fpn({"c5": torch.zeros(1, 20, 2, 2)})
