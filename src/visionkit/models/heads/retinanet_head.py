"""RetinaNet class and box subnets (Lin et al., 2017, "Focal Loss for Dense Object Detection"; §11, §17).

Each subnet is ``num_convs`` 3×3 convs of ``channels`` with ReLU, shared by every pyramid level, then a
3×3 conv to ``A·K`` class logits or ``A·4`` box deltas per location. The class conv's bias starts at
``-log((1 - π) / π)`` with the prior ``π = 0.01``, so at the start every anchor predicts foreground with
probability 0.01 and the ~100k background anchors do not swamp the first iterations of the focal loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["RetinaNetClassificationHead", "RetinaNetHead", "RetinaNetRegressionHead", "flatten_level_outputs"]


def flatten_level_outputs(outputs: Sequence[Tensor], values_per_anchor: int) -> Tensor:
    """``[B, A·V, H, W]`` per level → ``Tensor[B, sum_l H·W·A, V]`` in the anchor generator's order
    (level by level, row-major over locations, then anchor)."""
    flat = []
    for output in outputs:
        batch, channels, height, width = output.shape
        anchors = channels // values_per_anchor
        flat.append(
            output.view(batch, anchors, values_per_anchor, height, width)
            .permute(0, 3, 4, 1, 2)
            .reshape(batch, height * width * anchors, values_per_anchor)
        )
    return torch.cat(flat, dim=1)


def group_count(channels: int) -> int:
    """GroupNorm groups for ``channels``: 32 as the paper, but at least 2 channels per group, so that a
    single image's 1×1 top level (P7 of a small image) still has 2 values per group to normalize.

    Example:
        >>> group_count(256), group_count(64), group_count(16), group_count(1)
        (32, 32, 8, 1)
    """
    return max(1, min(32, channels // 2))


def _subnet(in_channels: int, channels: int, num_convs: int, norm: str | None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index in range(num_convs):
        layers.append(nn.Conv2d(in_channels if index == 0 else channels, channels, 3, padding=1))
        if norm == "group":
            layers.append(nn.GroupNorm(group_count(channels), channels))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _Subnet(nn.Module):
    def __init__(
        self, in_channels: int, num_anchors: int, values: int, channels: int, num_convs: int, norm: str | None
    ) -> None:
        super().__init__()
        if norm not in (None, "group"):
            raise ValueError(f"norm must be None or 'group', got {norm!r}")
        self.values = values
        self.conv = _subnet(in_channels, channels, num_convs, norm)
        self.output = nn.Conv2d(channels if num_convs else in_channels, num_anchors * values, 3, padding=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, std=0.01)
                nn.init.zeros_(module.bias)  # type: ignore[arg-type]

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return flatten_level_outputs([self.output(self.conv(x)) for x in features], self.values)


class RetinaNetClassificationHead(_Subnet):
    """Class subnet: ``list of Tensor[B, C, H_l, W_l]`` → logits ``Tensor[B, sum H·W·A, num_classes]``.

    Example:
        >>> head = RetinaNetClassificationHead(8, num_anchors=9, num_classes=3, channels=8)
        >>> head([torch.zeros(2, 8, 4, 4), torch.zeros(2, 8, 2, 2)]).shape
        torch.Size([2, 180, 3])
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        *,
        channels: int = 256,
        num_convs: int = 4,
        prior_probability: float = 0.01,
        norm: str | None = None,
    ) -> None:
        super().__init__(in_channels, num_anchors, num_classes, channels, num_convs, norm)
        if not 0.0 < prior_probability < 1.0:
            raise ValueError(f"prior_probability must be in (0, 1), got {prior_probability}")
        self.num_classes = num_classes
        prior_logit = -math.log((1 - prior_probability) / prior_probability)
        nn.init.constant_(self.output.bias, prior_logit)  # type: ignore[arg-type]


class RetinaNetRegressionHead(_Subnet):
    """Box subnet: ``list of Tensor[B, C, H_l, W_l]`` → deltas ``Tensor[B, sum H·W·A, 4]``."""

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        *,
        channels: int = 256,
        num_convs: int = 4,
        norm: str | None = None,
    ) -> None:
        super().__init__(in_channels, num_anchors, 4, channels, num_convs, norm)


class RetinaNetHead(nn.Module):
    """Both subnets; ``forward(features) -> (class_logits [B, N, K], box_deltas [B, N, 4])``."""

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        *,
        channels: int = 256,
        num_convs: int = 4,
        prior_probability: float = 0.01,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        self.classification = RetinaNetClassificationHead(
            in_channels, num_anchors, num_classes, channels=channels, num_convs=num_convs,
            prior_probability=prior_probability, norm=norm,
        )  # fmt: skip
        self.regression = RetinaNetRegressionHead(
            in_channels, num_anchors, channels=channels, num_convs=num_convs, norm=norm
        )

    def forward(self, features: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return self.classification(features), self.regression(features)
