"""VGG 11/13/16/19 with and without batch norm (Simonyan & Zisserman 2015; handbook §14).

Stacks of 3×3 convolutions: two 3×3 layers see a 5×5 window and three see 7×7, with ``27 C²``
weights instead of ``49 C²`` for one 7×7 layer and more non-linearities. Parameter names and shapes
equal torchvision's (``features.<i>``, ``classifier.<i>``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from visionkit.models.backbones.base import Backbone, finish, run_with_taps, tap_stages
from visionkit.models.registry import register_model
from visionkit.nn.init import constant_, kaiming_normal_, small_normal_

__all__ = ["VGG", "VGG_CONFIGS"]

#: depth -> conv widths per layer, "M" = 2×2 max-pool (configurations A, B, D, E of the paper)
VGG_CONFIGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


def make_vgg_layers(config: list[int | str], batch_norm: bool) -> tuple[nn.Sequential, dict[int, str], dict]:
    """Build ``features`` and the taps: ``c<k>`` = the deepest layer at stride ``2^k``."""
    layers: list[nn.Module] = []
    taps: dict[int, str] = {}
    out_channels: dict[str, int] = {}
    in_channels, stride = 3, 1
    for item in config:
        if item == "M":
            if stride >= 4:  # the ReLU before this pool is the deepest layer at this stride
                name = f"c{stride.bit_length() - 1}"
                taps[len(layers) - 1], out_channels[name] = name, in_channels
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            stride *= 2
            continue
        width = int(item)
        layers.append(nn.Conv2d(in_channels, width, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU(inplace=True))
        in_channels = width
    taps[len(layers) - 1], out_channels["c5"] = "c5", in_channels  # after pool5 (stride 32)
    return nn.Sequential(*layers), taps, out_channels


class VGG(Backbone):
    """VGG: ``features`` (3×3 convs + max-pools), adaptive 7×7 average pool, three FC layers.

    Shape:
        ``(N, 3, H, W) -> (N, num_classes)`` for any ``H, W >= 32``.

    Example:
        >>> VGG(VGG_CONFIGS[11], batch_norm=False, num_classes=10)(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """

    head_names = ("avgpool", "classifier")

    def __init__(
        self, config: list[int | str], batch_norm: bool, num_classes: int = 1000, dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.features, self._taps, self.out_channels = make_vgg_layers(config, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    constant_(module.bias, 0.0)
            elif isinstance(module, nn.BatchNorm2d):
                constant_(module.weight, 1.0)
                constant_(module.bias, 0.0)
            elif isinstance(module, nn.Linear):
                small_normal_(module.weight, 0.01)
                constant_(module.bias, 0.0)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        return run_with_taps(self.features, x, self._taps)

    def stages(self) -> list[nn.Module]:
        return tap_stages(self.features, self._taps)

    def forward_head(self, c5: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(c5), 1))


def _vgg(depth: int, batch_norm: bool, num_classes: int, features_only: bool, dropout: float) -> VGG:
    return finish(VGG(VGG_CONFIGS[depth], batch_norm, num_classes, dropout), features_only)  # type: ignore[return-value]


@register_model()
def vgg11(*, num_classes: int = 1000, features_only: bool = False, dropout: float = 0.5) -> VGG:
    """VGG-11 (configuration A; 132,863,336 parameters)."""
    return _vgg(11, False, num_classes, features_only, dropout)


@register_model()
def vgg11_bn(*, num_classes: int = 1000, features_only: bool = False, dropout: float = 0.5) -> VGG:
    """VGG-11 with batch norm (132,868,840 parameters)."""
    return _vgg(11, True, num_classes, features_only, dropout)


@register_model()
def vgg13(*, num_classes: int = 1000, features_only: bool = False, dropout: float = 0.5) -> VGG:
    """VGG-13 (configuration B)."""
    return _vgg(13, False, num_classes, features_only, dropout)


@register_model()
def vgg13_bn(*, num_classes: int = 1000, features_only: bool = False, dropout: float = 0.5) -> VGG:
    """VGG-13 with batch norm."""
    return _vgg(13, True, num_classes, features_only, dropout)


@register_model()
def vgg16(*, num_classes: int = 1000, features_only: bool = False, dropout: float = 0.5) -> VGG:
    """VGG-16 (configuration D; 138,357,544 parameters; 15.47 G MACs at 224×224)."""
    return _vgg(16, False, num_classes, features_only, dropout)


@register_model()
def vgg16_bn(*, num_classes: int = 1000, features_only: bool = False, dropout: float = 0.5) -> VGG:
    """VGG-16 with batch norm (138,365,992 parameters)."""
    return _vgg(16, True, num_classes, features_only, dropout)


@register_model()
def vgg19(*, num_classes: int = 1000, features_only: bool = False, dropout: float = 0.5) -> VGG:
    """VGG-19 (configuration E; 143,667,240 parameters)."""
    return _vgg(19, False, num_classes, features_only, dropout)


@register_model()
def vgg19_bn(*, num_classes: int = 1000, features_only: bool = False, dropout: float = 0.5) -> VGG:
    """VGG-19 with batch norm (143,678,248 parameters)."""
    return _vgg(19, True, num_classes, features_only, dropout)
