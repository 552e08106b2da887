"""Fast R-CNN box head (Girshick, 2015; the two-FC head of Faster R-CNN with FPN, Lin et al., 2017).

Pooled RoI features ``[R, C, S, S]`` → two fully connected layers with ReLU (``representation_size``,
1024 in the FPN paper) → ``K + 1`` class scores (label 0 = background) and class-specific box deltas
``4 (K + 1)``.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["FastRCNNPredictor", "TwoMLPHead"]


class TwoMLPHead(nn.Module):
    """``Tensor[R, C, S, S]`` → ``Tensor[R, representation_size]`` through two FC layers with ReLU.

    Example:
        >>> import torch
        >>> TwoMLPHead(8 * 7 * 7, 32)(torch.zeros(5, 8, 7, 7)).shape
        torch.Size([5, 32])
    """

    def __init__(self, in_features: int, representation_size: int = 1024) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))


class FastRCNNPredictor(nn.Module):
    """``Tensor[R, D]`` → ``(class_logits [R, K + 1], box_deltas [R, 4 (K + 1)])``; index 0 is background.
    With ``class_agnostic=True`` one box per RoI, ``box_deltas [R, 4]`` (the stages of Cascade R-CNN).

    Example:
        >>> import torch
        >>> logits, deltas = FastRCNNPredictor(32, num_classes=3)(torch.zeros(5, 32))
        >>> logits.shape, deltas.shape
        (torch.Size([5, 4]), torch.Size([5, 16]))
        >>> FastRCNNPredictor(32, num_classes=3, class_agnostic=True)(torch.zeros(5, 32))[1].shape
        torch.Size([5, 4])
    """

    def __init__(self, in_features: int, num_classes: int, *, class_agnostic: bool = False) -> None:
        super().__init__()
        self.num_classes, self.class_agnostic = num_classes, class_agnostic
        self.cls_score = nn.Linear(in_features, num_classes + 1)
        self.bbox_pred = nn.Linear(in_features, 4 if class_agnostic else 4 * (num_classes + 1))
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        return self.cls_score(x), self.bbox_pred(x)
