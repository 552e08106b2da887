"""Building blocks: shapes, parameter counts from the formulas, shortcuts, channel shuffle, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visionkit.nn import (
    BasicBlock,
    Bottleneck,
    ConvNormAct,
    DarknetResidual,
    DepthwiseSeparableConv,
    GroupedConv,
    InceptionModule,
    InvertedResidual,
    PreActBasicBlock,
    PreActBottleneck,
    channel_shuffle,
    make_divisible,
)


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_conv_norm_act_layout_and_shape() -> None:
    block = ConvNormAct(3, 16, 3, stride=2)
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert block[0].bias is None
    assert block(torch.randn(2, 3, 15, 15)).shape == (2, 16, 8, 8)
    linear = ConvNormAct(3, 4, 1, norm_layer=None, activation_layer=None)
    assert len(linear) == 1 and linear[0].bias is not None


def test_depthwise_separable_params() -> None:
    block = DepthwiseSeparableConv(192, 256, 3, norm_layer=None, activation_layer=None)
    # depthwise 3*3*192 (+192 bias), pointwise 192*256 (+256 bias)
    assert _params(block) == 3 * 3 * 192 + 192 + 192 * 256 + 256
    assert block(torch.randn(1, 192, 7, 7)).shape == (1, 256, 7, 7)


def test_channel_shuffle_is_a_transpose_permutation() -> None:
    x = torch.arange(12.0).view(1, 12, 1, 1)
    out = channel_shuffle(x, 3).flatten().tolist()
    expected = [float(g * 4 + c) for c in range(4) for g in range(3)]  # slow reference
    assert out == expected
    # shuffling with g then with C/g restores the order (a permutation: exact)
    assert torch.equal(channel_shuffle(channel_shuffle(x, 3), 4), x)
    with pytest.raises(ValueError, match="divisible by groups"):
        channel_shuffle(x, 5)


def test_grouped_conv_params_are_one_over_groups() -> None:
    plain = GroupedConv(32, 64, 3, groups=1, norm_layer=None, activation_layer=None)
    grouped = GroupedConv(32, 64, 3, groups=4, norm_layer=None, activation_layer=None)
    assert plain.conv[0].weight.numel() == 4 * grouped.conv[0].weight.numel()
    assert grouped(torch.randn(1, 32, 6, 6)).shape == (1, 64, 6, 6)
    with pytest.raises(ValueError, match="divisible by groups"):
        GroupedConv(30, 64, groups=4)


def test_inception_module_shapes_and_branch_kernel() -> None:
    module = InceptionModule(192, 64, 96, 128, 16, 32, 32)
    assert module(torch.randn(1, 192, 7, 7)).shape == (1, 256, 7, 7)
    assert module.branch3[1][0].kernel_size == (5, 5)
    assert InceptionModule(192, 64, 96, 128, 16, 32, 32, branch3_kernel_size=3).branch3[1][0].kernel_size == (
        3,
        3,
    )


def test_resnet_v1_blocks() -> None:
    block = BasicBlock(64, 64)
    assert block.downsample is None
    x = torch.randn(2, 64, 8, 8)
    assert block(x).shape == x.shape and bool((block(x) >= 0).all())  # ReLU after the addition
    bottleneck = Bottleneck(256, 128, stride=2)
    assert bottleneck(torch.randn(1, 256, 8, 8)).shape == (1, 512, 4, 4)
    assert bottleneck.conv2.stride == (2, 2) and bottleneck.conv1.stride == (1, 1)  # v1.5: stride on 3x3
    # names of torchvision's blocks
    names = {name for name, _ in bottleneck.named_parameters()}
    assert {"conv1.weight", "bn3.bias", "downsample.0.weight", "downsample.1.weight"} <= names


def test_pre_activation_blocks_have_identity_path() -> None:
    block = PreActBasicBlock(16, 16)
    with torch.no_grad():  # zero residual branch -> exact identity (nothing after the addition)
        block.conv2.weight.zero_()
    x = torch.randn(2, 16, 5, 5)
    assert torch.equal(block(x), x)  # the zero convolution gives exact zeros, and x + 0 = x
    bottleneck = PreActBottleneck(64, 32, stride=2)
    assert bottleneck(torch.randn(1, 64, 8, 8)).shape == (1, 128, 4, 4)
    assert PreActBottleneck(128, 32).shortcut is None


def test_inverted_residual() -> None:
    block = InvertedResidual(24, 24, 1, expand_ratio=6)
    assert block.use_residual
    with torch.no_grad():
        block.conv[2].weight.zero_()  # projection zero -> residual block returns its input (+ BN bias 0)
    block.eval()
    x = torch.randn(1, 24, 6, 6)
    # zero weights give exact zeros, which BN in eval maps to 0·(w/sqrt(1 + eps)) + (0 − 0) = 0; x + 0 = x
    assert torch.equal(block(x), x)
    assert isinstance(block.conv[0][2], nn.ReLU6) and not isinstance(block.conv[-1], nn.ReLU6)  # linear
    assert InvertedResidual(16, 24, 2, 6)(torch.randn(1, 16, 8, 8)).shape == (1, 24, 4, 4)
    with pytest.raises(ValueError, match="stride"):
        InvertedResidual(16, 16, 3, 6)


def test_darknet_residual() -> None:
    block = DarknetResidual(64)
    assert block(torch.randn(1, 64, 4, 4)).shape == (1, 64, 4, 4)
    assert isinstance(block.conv1[2], nn.LeakyReLU) and block.conv1[2].negative_slope == 0.1
    with pytest.raises(ValueError, match="even"):
        DarknetResidual(33)


@pytest.mark.parametrize(
    ("value", "expected"), [(32 * 0.75, 24), (24 * 0.5, 16), (100, 104), (3, 8), (91, 88)]
)
def test_make_divisible(value: float, expected: int) -> None:
    out = make_divisible(value)
    assert out == expected and out % 8 == 0 and out >= 0.9 * value
