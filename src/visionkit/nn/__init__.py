"""visionkit.nn: building blocks, our reference BatchNorm2d and weight initialization (handbook §4, §5,
§12, §21, §25, §28, §31, §36)."""

from visionkit.nn.blocks import (
    ConvNormAct,
    DarknetResidual,
    DepthwiseSeparableConv,
    GroupedConv,
    InceptionModule,
    InvertedResidual,
    channel_shuffle,
    make_divisible,
)
from visionkit.nn.init import init_weights
from visionkit.nn.norm import BatchNorm2d, batch_norm_2d
from visionkit.nn.residual import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck

__all__ = [
    "BasicBlock",
    "BatchNorm2d",
    "Bottleneck",
    "ConvNormAct",
    "DarknetResidual",
    "DepthwiseSeparableConv",
    "GroupedConv",
    "InceptionModule",
    "InvertedResidual",
    "PreActBasicBlock",
    "PreActBottleneck",
    "batch_norm_2d",
    "channel_shuffle",
    "init_weights",
    "make_divisible",
]
