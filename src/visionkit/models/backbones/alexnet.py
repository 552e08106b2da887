"""AlexNet (Krizhevsky et al. 2012), single-tower version as in torchvision (handbook §13's example).

Parameter names and shapes equal torchvision's; 61,100,840 parameters at 1000 classes.
Features: ``c2`` after conv1 (stride 4), ``c3`` after conv2 (8), ``c4`` after conv5 (16), ``c5``
after the last max-pool (32).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from visionkit.models.backbones.base import Backbone, finish, run_with_taps
from visionkit.models.registry import register_model

__all__ = ["AlexNet"]


class AlexNet(Backbone):
    """AlexNet: five convs (11×11/4, 5×5, 3×3 ×3), three max-pools, 6×6 adaptive pool, three FC layers.

    Shape:
        ``(N, 3, H, W) -> (N, num_classes)``, ``H, W >= 63``.

    Example:
        >>> AlexNet(num_classes=10)(torch.randn(1, 3, 64, 64)).shape
        torch.Size([1, 10])
    """

    head_names = ("avgpool", "classifier")

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self._taps = {1: "c2", 4: "c3", 11: "c4", 12: "c5"}
        self.out_channels = {"c2": 64, "c3": 192, "c4": 256, "c5": 256}
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        return run_with_taps(self.features, x, self._taps)

    def forward_head(self, c5: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(c5), 1))


@register_model()
def alexnet(*, num_classes: int = 1000, features_only: bool = False, dropout: float = 0.5) -> AlexNet:
    """AlexNet (61,100,840 parameters at 1000 classes)."""
    return finish(AlexNet(num_classes, dropout), features_only)  # type: ignore[return-value]
