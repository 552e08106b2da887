"""Darknet-53 (Redmon & Farhadi 2018, "YOLOv3: An Incremental Improvement"; handbook §18) and Darknet-19
(Redmon & Farhadi 2017, "YOLO9000: Better, Faster, Stronger", Table 6).

A 3×3 stem then five stages, each a 3×3/2 downsampling conv followed by 1, 2, 8, 8, 4
:class:`~visionkit.nn.DarknetResidual` blocks; batch norm and leaky ReLU (0.1) everywhere; no pooling
until the global average pool of the classifier. YOLOv3 uses ``c3``, ``c4``, ``c5`` (strides 8, 16, 32).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from visionkit.models.backbones.base import Backbone, finish
from visionkit.models.registry import register_model
from visionkit.nn.blocks import ConvNormAct, DarknetResidual, make_divisible
from visionkit.nn.init import constant_, kaiming_normal_

__all__ = ["Darknet19", "Darknet53"]

#: (output channels, residual blocks) per stage
STAGES = [(64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)]


def _leaky(inplace: bool = True) -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=inplace)


def _width(channels: int, multiplier: float) -> int:
    """``channels × multiplier`` rounded to a multiple of 8 (at least 8); the paper's widths at 1.0."""
    if not multiplier > 0:
        raise ValueError(f"width_multiplier must be > 0, got {multiplier!r}")
    return channels if multiplier == 1.0 else make_divisible(channels * multiplier, 8)


class _Darknet(Backbone):
    """What Darknet-53 and Darknet-19 share: ``stem`` then ``stage1``..``stage5``, features ``c2``..``c5``
    from stages 2–5, darknet's initialisation (He for leaky ReLU 0.1, BN at identity)."""

    stem: nn.Module
    stage1: nn.Sequential
    stage2: nn.Sequential
    stage3: nn.Sequential
    stage4: nn.Sequential
    stage5: nn.Sequential

    def init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                kaiming_normal_(module.weight, mode="fan_out", nonlinearity="leaky_relu", negative_slope=0.1)
            elif isinstance(module, nn.BatchNorm2d):
                constant_(module.weight, 1.0)
                constant_(module.bias, 0.0)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        c2 = self.stage2(self.stage1(self.stem(x)))
        c3 = self.stage3(c2)
        c4 = self.stage4(c3)
        return {"c2": c2, "c3": c3, "c4": c4, "c5": self.stage5(c4)}

    def stages(self) -> list[nn.Module]:
        return [nn.ModuleList([self.stem, self.stage1]), self.stage2, self.stage3, self.stage4, self.stage5]


class Darknet53(_Darknet):
    """Darknet-53 classifier/backbone: ``stem``, ``stage1``..``stage5``, GAP, ``fc``.

    Features: ``c2`` = stage2 (128, stride 4), ``c3`` = stage3 (256, 8), ``c4`` = stage4 (512, 16),
    ``c5`` = stage5 (1024, 32); ``width_multiplier`` scales every width (rounded to multiples of 8), e.g.
    0.125 for a CPU-size Darknet-53 with the paper's depth.

    Example:
        >>> Darknet53(num_classes=10)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
        >>> Darknet53(width_multiplier=0.125).out_channels
        {'c2': 16, 'c3': 32, 'c4': 64, 'c5': 128}
    """

    head_names = ("avgpool", "fc")

    def __init__(self, num_classes: int = 1000, width_multiplier: float = 1.0) -> None:
        super().__init__()
        in_channels = _width(32, width_multiplier)
        self.stem = ConvNormAct(3, in_channels, 3, activation_layer=_leaky)
        for index, (full, blocks) in enumerate(STAGES, start=1):
            channels = _width(full, width_multiplier)
            layers: list[nn.Module] = [
                ConvNormAct(in_channels, channels, 3, stride=2, activation_layer=_leaky)
            ]
            layers += [DarknetResidual(channels) for _ in range(blocks)]
            self.add_module(f"stage{index}", nn.Sequential(*layers))
            in_channels = channels
        self.out_channels = {f"c{k}": _width(STAGES[k - 1][0], width_multiplier) for k in (2, 3, 4, 5)}
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_channels, num_classes)
        self.init_weights()

    def forward_head(self, c5: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(c5), 1))


@register_model()
def darknet53(
    *, num_classes: int = 1000, width_multiplier: float = 1.0, features_only: bool = False
) -> Darknet53:
    """Darknet-53 (41.6 M parameters at 1000 classes and width 1)."""
    return finish(Darknet53(num_classes, width_multiplier), features_only)  # type: ignore[return-value]


#: Darknet-19 stages after the 3×3/32 stem: a 2×2 max-pool, then (channels, kernel) convolutions
DARKNET19_STAGES = [
    [(64, 3)],
    [(128, 3), (64, 1), (128, 3)],
    [(256, 3), (128, 1), (256, 3)],
    [(512, 3), (256, 1), (512, 3), (256, 1), (512, 3)],
    [(1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)],
]


class Darknet19(_Darknet):
    """Darknet-19 (YOLOv2's backbone): 19 convolutions (3×3 and 1×1 bottlenecks, BN, leaky ReLU 0.1) and
    5 max-pools; classifier = 1×1 conv to ``num_classes``, global average pool.

    Features: ``c2`` = stage2 (128, stride 4), ``c3`` (256, 8), ``c4`` (512, 16: YOLOv2's passthrough
    source), ``c5`` (1024, 32); ``width_multiplier`` as :class:`Darknet53`'s.

    Example:
        >>> Darknet19(num_classes=10)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    head_names = ("classifier",)

    def __init__(self, num_classes: int = 1000, width_multiplier: float = 1.0) -> None:
        super().__init__()
        in_channels = _width(32, width_multiplier)
        self.stem = ConvNormAct(3, in_channels, 3, activation_layer=_leaky)
        for index, convs in enumerate(DARKNET19_STAGES, start=1):
            layers: list[nn.Module] = [nn.MaxPool2d(2, 2)]
            for full, kernel in convs:
                channels = _width(full, width_multiplier)
                layers.append(ConvNormAct(in_channels, channels, kernel, activation_layer=_leaky))
                in_channels = channels
            self.add_module(f"stage{index}", nn.Sequential(*layers))
        self.out_channels = {
            f"c{k}": _width(DARKNET19_STAGES[k - 1][0][0], width_multiplier) for k in (2, 3, 4, 5)
        }
        self.classifier = nn.Sequential(nn.Conv2d(in_channels, num_classes, 1), nn.AdaptiveAvgPool2d((1, 1)))
        self.init_weights()

    def forward_head(self, c5: Tensor) -> Tensor:
        return torch.flatten(self.classifier(c5), 1)


@register_model()
def darknet19(
    *, num_classes: int = 1000, width_multiplier: float = 1.0, features_only: bool = False
) -> Darknet19:
    """Darknet-19 (20.8 M parameters at 1000 classes and width 1)."""
    return finish(Darknet19(num_classes, width_multiplier), features_only)  # type: ignore[return-value]
