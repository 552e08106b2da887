"""MobileNetV1 (Howard et al. 2017) and MobileNetV2 (Sandler et al. 2018) (handbook §28).

* V1: a 3×3/2 conv then 13 depthwise separable convs; downsampling by stride-2 depthwise convs (no
  pooling) and one global average pool. Width multiplier α thins every layer; the resolution
  multiplier ρ only changes the input size — :func:`mobilenet_v1_input_size` computes it. 1.0-224:
  4,231,976 parameters, ≈569 M MACs (the paper's 4.2 M / 569 M).
* V2: inverted residuals with linear bottlenecks and ReLU6; channels scaled by the width multiplier
  and rounded to multiples of 8. Parameter names and shapes equal torchvision's (3,504,872 at 1.0).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from visionkit.models.backbones.base import Backbone, finish, run_with_taps, tap_stages
from visionkit.models.registry import register_model
from visionkit.nn.blocks import ConvNormAct, DepthwiseSeparableConv, InvertedResidual, make_divisible
from visionkit.nn.init import constant_, kaiming_normal_, small_normal_

__all__ = ["MobileNetV1", "MobileNetV2", "mobilenet_v1_input_size"]

#: MobileNetV1 body after the stem: (output channels, stride of the depthwise conv)
V1_LAYERS = (
    [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
)

#: MobileNetV2 body: (expansion t, output channels c, repeats n, first stride s), from the paper's Table 2
V2_SETTINGS = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def mobilenet_v1_input_size(resolution_multiplier: float, base_size: int = 224) -> int:
    """The input side for resolution multiplier ρ: ``round(base_size * ρ)`` (224, 192, 160, 128 in the paper).

    ρ is not a layer: it scales the input, so MACs scale by about ρ² while parameters stay the same.

    Example:
        >>> [mobilenet_v1_input_size(r) for r in (1.0, 6 / 7, 5 / 7, 4 / 7)]
        [224, 192, 160, 128]
    """
    if not 0.0 < resolution_multiplier <= 1.0:
        raise ValueError(f"resolution_multiplier must be in (0, 1], got {resolution_multiplier}")
    return round(base_size * resolution_multiplier)


def _taps_from_strides(strides: list[int], channels: list[int]) -> tuple[dict[int, str], dict[str, int]]:
    """``c<k>`` = the last layer whose cumulative output stride is ``2^k`` (k = 2..5)."""
    taps: dict[int, str] = {}
    out_channels: dict[str, int] = {}
    for index, stride in enumerate(strides):
        if stride >= 4:
            name = f"c{stride.bit_length() - 1}"
            for old in [i for i, n in taps.items() if n == name]:
                del taps[old]
            taps[index], out_channels[name] = name, channels[index]
    return taps, out_channels


def _init_mobilenet(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                constant_(module.bias, 0.0)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            constant_(module.weight, 1.0)
            constant_(module.bias, 0.0)
        elif isinstance(module, nn.Linear):
            small_normal_(module.weight, 0.01)
            constant_(module.bias, 0.0)


class MobileNetV1(Backbone):
    """MobileNetV1: ``features`` (stem + 13 depthwise separable blocks), GAP, ``classifier``.

    Args:
        num_classes: classifier outputs.
        width_multiplier: α, scales every layer's channels (``max(8, int(c * α))``).
        dropout: before the classifier (0 in the paper).

    Example:
        >>> MobileNetV1(num_classes=10, width_multiplier=0.25)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    head_names = ("avgpool", "classifier")

    def __init__(self, num_classes: int = 1000, width_multiplier: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")

        def scaled(channels: int) -> int:
            return max(8, int(channels * width_multiplier))

        in_channels = scaled(32)
        layers: list[nn.Module] = [ConvNormAct(3, in_channels, 3, stride=2)]
        strides, channels, stride = [2], [in_channels], 2
        for out, layer_stride in V1_LAYERS:
            layers.append(DepthwiseSeparableConv(in_channels, scaled(out), 3, layer_stride))
            in_channels, stride = scaled(out), stride * layer_stride
            strides.append(stride)
            channels.append(in_channels)
        self.features = nn.Sequential(*layers)
        self._taps, self.out_channels = _taps_from_strides(strides, channels)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(in_channels, num_classes))
        _init_mobilenet(self)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        return run_with_taps(self.features, x, self._taps)

    def stages(self) -> list[nn.Module]:
        return tap_stages(self.features, self._taps)

    def forward_head(self, c5: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(c5), 1))


class MobileNetV2(Backbone):
    """MobileNetV2: stem 3×3/2, 17 inverted residuals, 1×1 to 1280, GAP, dropout, linear.

    Args:
        num_classes: classifier outputs.
        width_multiplier: scales channels, rounded to multiples of 8 (the last layer never shrinks
            below 1280).
        dropout: before the classifier (0.2 as in torchvision).

    Example:
        >>> MobileNetV2(num_classes=10)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    head_names = ("classifier",)

    def __init__(self, num_classes: int = 1000, width_multiplier: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        if width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be positive, got {width_multiplier}")
        in_channels = make_divisible(32 * width_multiplier, 8)
        last_channels = make_divisible(1280 * max(1.0, width_multiplier), 8)
        layers: list[nn.Module] = [ConvNormAct(3, in_channels, 3, stride=2, activation_layer=nn.ReLU6)]
        strides, channels, stride = [2], [in_channels], 2
        for expand, width, repeats, first_stride in V2_SETTINGS:
            out = make_divisible(width * width_multiplier, 8)
            for repeat in range(repeats):
                layer_stride = first_stride if repeat == 0 else 1
                layers.append(InvertedResidual(in_channels, out, layer_stride, expand_ratio=expand))
                in_channels, stride = out, stride * layer_stride
                strides.append(stride)
                channels.append(out)
        layers.append(ConvNormAct(in_channels, last_channels, 1, activation_layer=nn.ReLU6))
        strides.append(stride)
        channels.append(last_channels)
        self.features = nn.Sequential(*layers)
        self._taps, self.out_channels = _taps_from_strides(strides, channels)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(last_channels, num_classes))
        _init_mobilenet(self)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        return run_with_taps(self.features, x, self._taps)

    def stages(self) -> list[nn.Module]:
        return tap_stages(self.features, self._taps)

    def forward_head(self, c5: Tensor) -> Tensor:
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(c5, (1, 1)), 1))


@register_model()
def mobilenet_v1(
    *,
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    dropout: float = 0.0,
    features_only: bool = False,
) -> MobileNetV1:
    """MobileNetV1 (α = ``width_multiplier``; choose ρ via :func:`mobilenet_v1_input_size`)."""
    return finish(MobileNetV1(num_classes, width_multiplier, dropout), features_only)  # type: ignore[return-value]


@register_model()
def mobilenet_v2(
    *,
    num_classes: int = 1000,
    width_multiplier: float = 1.0,
    dropout: float = 0.2,
    features_only: bool = False,
) -> MobileNetV2:
    """MobileNetV2 (3,504,872 parameters at 1.0; 0.30 G MACs at 224×224)."""
    return finish(MobileNetV2(num_classes, width_multiplier, dropout), features_only)  # type: ignore[return-value]
