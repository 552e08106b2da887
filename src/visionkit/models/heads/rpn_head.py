"""Region Proposal Network head (Ren et al., 2015, Faster R-CNN §3.1; handbook §10).

A 3×3 conv (the paper's "sliding window") with ReLU, then two sibling 1×1 convs: ``A`` objectness logits
and ``4A`` box deltas per location, shared across pyramid levels.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["RPNHead"]


class RPNHead(nn.Module):
    """Per level ``Tensor[B, C, H, W]`` → ``(objectness [B, A, H, W], deltas [B, 4A, H, W])`` lists.

    Args:
        in_channels: channels of every input level.
        num_anchors: anchors per location ``A`` (9 for one level with 3 sizes × 3 ratios; 3 with FPN).

    Example:
        >>> import torch
        >>> objectness, deltas = RPNHead(8, 3)([torch.zeros(1, 8, 4, 4)])
        >>> objectness[0].shape, deltas[0].shape
        (torch.Size([1, 3, 4, 4]), torch.Size([1, 12, 4, 4]))
    """

    def __init__(self, in_channels: int, num_anchors: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, in_channels, 3, padding=1)
        self.objectness = nn.Conv2d(in_channels, num_anchors, 1)
        self.box_deltas = nn.Conv2d(in_channels, 4 * num_anchors, 1)
        for layer in (self.conv, self.objectness, self.box_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)  # type: ignore[arg-type]

    def forward(self, features: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        objectness, deltas = [], []
        for feature in features:
            hidden = F.relu(self.conv(feature))
            objectness.append(self.objectness(hidden))
            deltas.append(self.box_deltas(hidden))
        return objectness, deltas
