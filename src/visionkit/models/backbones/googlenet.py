"""GoogLeNet / Inception v1 (Szegedy et al. 2015; handbook §36), torchvision-compatible.

Nine Inception modules with 1×1 reductions, two optional auxiliary classifiers (after 4a and 4d,
used only in training). Like torchvision, the "5×5" branch uses a 3×3 kernel (a known deviation
kept so that checkpoints load); parameter names and shapes equal torchvision's: 6,624,904
parameters without and 13,004,888 with the auxiliary heads.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from visionkit.models.backbones.base import Backbone, finish
from visionkit.models.registry import register_model
from visionkit.nn.blocks import InceptionModule

__all__ = ["BasicConv2d", "GoogLeNet", "GoogLeNetOutputs", "InceptionAux"]

#: name -> (in, 1×1, 3×3 reduce, 3×3, 5×5 reduce, 5×5, pool proj), the paper's Table 1
INCEPTION_CONFIGS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


class GoogLeNetOutputs(NamedTuple):
    """Training output with auxiliary heads: main logits and the two auxiliary logits ``(N, classes)``."""

    logits: Tensor
    aux_logits2: Tensor
    aux_logits1: Tensor


class BasicConv2d(nn.Module):
    """Conv (no bias) → BN (eps 0.001) → ReLU, named ``conv`` / ``bn`` as in torchvision."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4×4 average pool, 1×1 conv (128), FC 1024, dropout 0.7, FC classes."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(nn.functional.adaptive_avg_pool2d(x, (4, 4)))
        x = self.dropout(self.relu(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


class GoogLeNet(Backbone):
    """GoogLeNet. ``forward`` returns logits ``(N, num_classes)``, or :class:`GoogLeNetOutputs` in
    training mode when ``aux_logits=True``.

    Features: ``c2`` conv3 (192, stride 4), ``c3`` inception3b (480, 8), ``c4`` inception4e (832, 16),
    ``c5`` inception5b (1024, 32).

    Example:
        >>> GoogLeNet(num_classes=10).eval()(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    inception3a: InceptionModule
    inception3b: InceptionModule
    inception4a: InceptionModule
    inception4b: InceptionModule
    inception4c: InceptionModule
    inception4d: InceptionModule
    inception4e: InceptionModule
    inception5a: InceptionModule
    inception5b: InceptionModule
    head_names = ("avgpool", "dropout", "fc", "aux1", "aux2")

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False, dropout: float = 0.2) -> None:
        super().__init__()
        self.aux_logits = aux_logits
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in ("inception3a", "inception3b"):
            self.add_module(name, self._inception(name))
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        for name in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            self.add_module(name, self._inception(name))
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        for name in ("inception5a", "inception5b"):
            self.add_module(name, self._inception(name))
        self.aux1 = InceptionAux(512, num_classes) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)
        self.out_channels = {"c2": 192, "c3": 480, "c4": 832, "c5": 1024}
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(module.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1.0)
                nn.init.constant_(module.bias, 0.0)

    @staticmethod
    def _inception(name: str) -> InceptionModule:
        return InceptionModule(*INCEPTION_CONFIGS[name], branch3_kernel_size=3, conv_block=BasicConv2d)

    def _trunk(self, x: Tensor) -> tuple[dict[str, Tensor], list[Tensor]]:
        auxiliary: list[Tensor] = []
        x = self.maxpool1(self.conv1(x))
        c2 = self.conv3(self.conv2(x))
        c3 = self.inception3b(self.inception3a(self.maxpool2(c2)))
        x = self.inception4a(self.maxpool3(c3))
        if self.aux1 is not None and self.training:
            auxiliary.append(self.aux1(x))
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        if self.aux2 is not None and self.training:
            auxiliary.append(self.aux2(x))
        c4 = self.inception4e(x)
        c5 = self.inception5b(self.inception5a(self.maxpool4(c4)))
        return {"c2": c2, "c3": c3, "c4": c4, "c5": c5}, auxiliary

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        return self._trunk(x)[0]

    def forward_head(self, c5: Tensor) -> Tensor:
        return self.fc(self.dropout(torch.flatten(self.avgpool(c5), 1)))

    def forward(self, x: Tensor) -> Any:
        self.check_input(x)
        features, auxiliary = self._trunk(x)
        if self.features_only:
            return features
        logits = self.forward_head(features["c5"])
        if auxiliary:
            return GoogLeNetOutputs(logits, auxiliary[1], auxiliary[0])
        return logits


@register_model()
def googlenet(
    *, num_classes: int = 1000, aux_logits: bool = False, dropout: float = 0.2, features_only: bool = False
) -> GoogLeNet:
    """GoogLeNet (6,624,904 parameters; 13,004,888 with ``aux_logits=True``)."""
    return finish(GoogLeNet(num_classes, aux_logits, dropout), features_only)  # type: ignore[return-value]
