"""ResNet v1 (He et al. 2016) and ResNet v2 / pre-activation (He et al. 2016, "Identity Mappings"),
depths 18, 34, 50, 101, 152 (handbook §21, §25).

v1 has torchvision's exact parameter names and shapes (``conv1``, ``bn1``, ``layer1``..``layer4``,
``fc``; bottleneck stride on the 3×3 conv, "v1.5"), so a torchvision checkpoint loads with
``strict=True``. v2 uses pre-activation blocks, a conv-BN-ReLU-maxpool stem and a final BN-ReLU
before pooling (as in the authors' Torch code); its features ``c2``..``c4`` are the raw stage sums and
``c5`` is after the final BN-ReLU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from visionkit.models.backbones.base import Backbone, finish
from visionkit.models.registry import register_model
from visionkit.nn.init import constant_, kaiming_normal_
from visionkit.nn.residual import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck

__all__ = ["PreActResNet", "ResNet"]

NormFactory = Callable[[int], nn.Module]

#: depth -> (block kind, blocks per stage)
DEPTHS: dict[int, tuple[str, list[int]]] = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}
STAGE_WIDTHS = (64, 128, 256, 512)


def _make_stage(
    block: type[nn.Module], in_channels: int, channels: int, blocks: int, stride: int, norm: NormFactory
) -> tuple[nn.Sequential, int]:
    """One stage: the first block changes stride/channels, the rest keep them."""
    layers = [block(in_channels, channels, stride, norm_layer=norm)]
    out_channels = channels * int(block.expansion)  # type: ignore[attr-defined]
    layers += [block(out_channels, channels, 1, norm_layer=norm) for _ in range(blocks - 1)]
    return nn.Sequential(*layers), out_channels


class ResNet(Backbone):
    """ResNet v1: 7×7/2 conv-BN-ReLU, 3×3/2 max-pool, four stages of residual blocks, GAP, fc.

    Args:
        block: :class:`~visionkit.nn.BasicBlock` or :class:`~visionkit.nn.Bottleneck`.
        layers: blocks per stage, e.g. ``[3, 4, 6, 3]`` for ResNet-50.
        num_classes: size of the classifier output.
        zero_init_residual: start each residual branch's last BN at gamma = 0 (Goyal et al. 2017).
        norm_layer: factory for the norm layers.

    Shape:
        ``(N, 3, H, W) -> (N, num_classes)``; features ``c2..c5`` at strides 4..32.

    Example:
        >>> ResNet(BasicBlock, [2, 2, 2, 2], num_classes=10)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential
    head_names = ("avgpool", "fc")

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        norm_layer: NormFactory = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        for index, (width, blocks) in enumerate(zip(STAGE_WIDTHS, layers, strict=True)):
            stage, channels_out = _make_stage(
                block, channels, width, blocks, 1 if index == 0 else 2, norm_layer
            )
            self.add_module(f"layer{index + 1}", stage)
            self.out_channels[f"c{index + 2}"] = channels = channels_out
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                constant_(module.weight, 1.0)
                constant_(module.bias, 0.0)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    last_norm = module.bn3 if isinstance(module, Bottleneck) else module.bn2
                    if isinstance(last_norm.weight, Tensor):
                        constant_(last_norm.weight, 0.0)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return {"c2": c2, "c3": c3, "c4": c4, "c5": self.layer4(c4)}

    def stages(self) -> list[nn.Module]:
        return [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_head(self, c5: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(c5), 1))


class PreActResNet(Backbone):
    """ResNet v2 (pre-activation): stem conv-BN-ReLU-maxpool, pre-activation stages, BN-ReLU, GAP, fc.

    Args:
        block: :class:`~visionkit.nn.PreActBasicBlock` or :class:`~visionkit.nn.PreActBottleneck`.
        layers: blocks per stage.
        num_classes: classifier outputs.

    Example:
        >>> PreActResNet(PreActBasicBlock, [2, 2, 2, 2], 10)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential
    head_names = ("avgpool", "fc")

    def __init__(
        self,
        block: type[PreActBasicBlock] | type[PreActBottleneck],
        layers: list[int],
        num_classes: int = 1000,
        norm_layer: NormFactory = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        for index, (width, blocks) in enumerate(zip(STAGE_WIDTHS, layers, strict=True)):
            stage, channels_out = _make_stage(
                block, channels, width, blocks, 1 if index == 0 else 2, norm_layer
            )
            self.add_module(f"layer{index + 1}", stage)
            self.out_channels[f"c{index + 2}"] = channels = channels_out
        self.final_norm = norm_layer(channels)
        self.final_relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.final_relu(self.final_norm(self.layer4(c4)))
        return {"c2": c2, "c3": c3, "c4": c4, "c5": c5}

    def stages(self) -> list[nn.Module]:
        last = nn.ModuleList([self.layer4, self.final_norm])
        return [nn.ModuleList([self.conv1, self.bn1]), self.layer1, self.layer2, self.layer3, last]

    def forward_head(self, c5: Tensor) -> Tensor:
        return self.fc(torch.flatten(self.avgpool(c5), 1))


def _resnet(depth: int, num_classes: int, features_only: bool, zero_init_residual: bool) -> ResNet:
    kind, layers = DEPTHS[depth]
    block = BasicBlock if kind == "basic" else Bottleneck
    model = ResNet(block, layers, num_classes=num_classes, zero_init_residual=zero_init_residual)
    return finish(model, features_only)  # type: ignore[return-value]


def _resnet_v2(depth: int, num_classes: int, features_only: bool) -> PreActResNet:
    kind, layers = DEPTHS[depth]
    block = PreActBasicBlock if kind == "basic" else PreActBottleneck
    return finish(PreActResNet(block, layers, num_classes=num_classes), features_only)  # type: ignore[return-value]


@register_model()
def resnet18(
    *, num_classes: int = 1000, features_only: bool = False, zero_init_residual: bool = False
) -> ResNet:
    """ResNet-18 v1 (11,689,512 parameters at 1000 classes, torchvision-compatible)."""
    return _resnet(18, num_classes, features_only, zero_init_residual)


@register_model()
def resnet34(
    *, num_classes: int = 1000, features_only: bool = False, zero_init_residual: bool = False
) -> ResNet:
    """ResNet-34 v1 (21,797,672 parameters)."""
    return _resnet(34, num_classes, features_only, zero_init_residual)


@register_model()
def resnet50(
    *, num_classes: int = 1000, features_only: bool = False, zero_init_residual: bool = False
) -> ResNet:
    """ResNet-50 v1 (25,557,032 parameters; 4.089 G MACs at 224×224)."""
    return _resnet(50, num_classes, features_only, zero_init_residual)


@register_model()
def resnet101(
    *, num_classes: int = 1000, features_only: bool = False, zero_init_residual: bool = False
) -> ResNet:
    """ResNet-101 v1 (44,549,160 parameters)."""
    return _resnet(101, num_classes, features_only, zero_init_residual)


@register_model()
def resnet152(
    *, num_classes: int = 1000, features_only: bool = False, zero_init_residual: bool = False
) -> ResNet:
    """ResNet-152 v1 (60,192,808 parameters)."""
    return _resnet(152, num_classes, features_only, zero_init_residual)


@register_model()
def resnet18_v2(*, num_classes: int = 1000, features_only: bool = False) -> PreActResNet:
    """Pre-activation ResNet-18 (v2)."""
    return _resnet_v2(18, num_classes, features_only)


@register_model()
def resnet34_v2(*, num_classes: int = 1000, features_only: bool = False) -> PreActResNet:
    """Pre-activation ResNet-34 (v2)."""
    return _resnet_v2(34, num_classes, features_only)


@register_model()
def resnet50_v2(*, num_classes: int = 1000, features_only: bool = False) -> PreActResNet:
    """Pre-activation ResNet-50 (v2)."""
    return _resnet_v2(50, num_classes, features_only)


@register_model()
def resnet101_v2(*, num_classes: int = 1000, features_only: bool = False) -> PreActResNet:
    """Pre-activation ResNet-101 (v2)."""
    return _resnet_v2(101, num_classes, features_only)


@register_model()
def resnet152_v2(*, num_classes: int = 1000, features_only: bool = False) -> PreActResNet:
    """Pre-activation ResNet-152 (v2)."""
    return _resnet_v2(152, num_classes, features_only)
