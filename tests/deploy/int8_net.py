"""The small network of the int8 tests (PTQ and QAT): two 3×3 convolutions with a ReLU6 and a residual
ReLU, global average pool, a linear layer — every kind of node the QDQ graph quantizes."""

from __future__ import annotations

import torch
from torch import nn


class Int8Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.relu6(self.conv1(x))
        y = torch.relu(self.conv2(y) + y)
        return self.fc(y.mean((2, 3)))
