"""Small ResNets for tiny images (8x8 digits, 32x32): a 3x3 stride-1 stem (no max-pool, which would
leave nothing of an 8x8 image) and three stages of basic residual blocks (handbook §21).

Importing this module registers ``resnet_digits`` (174,970 parameters at 10 classes) and
``resnet_tiny_digits`` (widths 4/8/16, one block per stage: 5,142 parameters; a distillation student).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from visionkit.models.registry import register_model
from visionkit.nn.residual import BasicBlock


class SmallResNet(nn.Module):
    """Conv3x3-BN-ReLU stem, stages of :class:`~visionkit.nn.BasicBlock` (stride 2 between stages), GAP, fc.

    Args:
        in_channels: image channels (1 for digits).
        num_classes: classifier outputs.
        widths: channels of each stage.
        blocks: residual blocks per stage.

    Shape:
        ``(N, in_channels, H, W) -> (N, num_classes)``.

    Example:
        >>> SmallResNet(1, 10)(torch.randn(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: tuple[int, ...] = (16, 32, 64),
        blocks: int = 2,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            stage = [BasicBlock(channels, width, stride)] + [
                BasicBlock(width, width) for _ in range(blocks - 1)
            ]
            stages.append(nn.Sequential(*stage))
            channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


@register_model()
def resnet_digits(*, num_classes: int = 10, in_channels: int = 1, blocks: int = 2) -> SmallResNet:
    """A small ResNet for 8x8 one-channel digits: widths 16/32/64, ``blocks`` blocks per stage."""
    return SmallResNet(in_channels, num_classes, (16, 32, 64), blocks)


@register_model()
def resnet_tiny_digits(*, num_classes: int = 10, in_channels: int = 1) -> SmallResNet:
    """A tiny ResNet for 8x8 digits: widths 4/8/16, one block per stage (a student for distillation)."""
    return SmallResNet(in_channels, num_classes, (4, 8, 16), 1)


__all__ = ["SmallResNet", "resnet_digits", "resnet_tiny_digits"]
