"""A plain conv backbone that a 2-core CPU trains from scratch in minutes (the demo-size detectors).

MobileNetV2's depthwise convolutions are slow to back-propagate on a CPU (about 2.5× this backbone's step
time at the same image size); for small images of simple objects (``shapes``) this stack of
Conv3×3-BN-ReLU stages is enough and trains fast. It follows the ``features_only`` contract of every
backbone (:mod:`visionkit.models.backbones.base`).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from visionkit.models.backbones.base import Backbone
from visionkit.nn.blocks import ConvNormAct

__all__ = ["PlainBackbone"]


class PlainBackbone(Backbone):
    """Conv3x3-BN-ReLU stages giving ``c2..c5`` at strides 4, 8, 16, 32 (always ``features_only``).

    Args:
        widths: channels of the stem (stride 2) and of ``c2, c3, c4, c5``.

    Shape:
        ``(N, 3, H, W) -> {"c2": (N, widths[1], H/4, W/4), ..., "c5": (N, widths[4], H/32, W/32)}``.

    Example:
        >>> import torch
        >>> features = PlainBackbone()(torch.rand(1, 3, 128, 128))
        >>> {name: tuple(f.shape[1:]) for name, f in features.items()}
        {'c2': (32, 32, 32), 'c3': (64, 16, 16), 'c4': (96, 8, 8), 'c5': (128, 4, 4)}
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 96, 128)) -> None:
        super().__init__()
        if len(widths) != 5 or min(widths) < 1:
            raise ValueError(f"widths must be 5 positive channel counts (stem, c2..c5), got {list(widths)}")
        stem, *stages = widths
        self.stem = ConvNormAct(3, stem, 3, stride=2)
        inputs = [stem, *stages[:-1]]
        self.blocks = nn.ModuleList(
            nn.Sequential(ConvNormAct(i, o, 3, stride=2), ConvNormAct(o, o, 3))
            for i, o in zip(inputs, stages, strict=True)
        )
        self.out_channels = {f"c{level}": width for level, width in zip(range(2, 6), stages, strict=True)}
        self.strides = {f"c{level}": 2**level for level in range(2, 6)}
        self.features_only = True  # a detection backbone: no classification head

    def forward_features(self, images: Tensor) -> dict[str, Tensor]:
        features, x = {}, self.stem(images)
        for level, block in zip(range(2, 6), self.blocks, strict=True):
            x = block(x)
            features[f"c{level}"] = x
        return features

    def stages(self) -> list[nn.Module]:
        return [self.stem, *self.blocks]
