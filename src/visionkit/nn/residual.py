"""Residual blocks of ResNet v1 and v2 (handbook §21, §25, "Bottleneck layer").

* v1 (He et al. 2016, "Deep Residual Learning"): conv-BN-ReLU inside, ReLU *after* the addition.
  :class:`BasicBlock` (two 3×3) and :class:`Bottleneck` (1×1 reduce → 3×3 → 1×1 expand ×4, stride on
  the 3×3 as in torchvision's "v1.5"). Attribute names match torchvision so checkpoints load.
* v2 (He et al. 2016, "Identity Mappings in Deep Residual Networks"): pre-activation BN-ReLU-conv,
  nothing after the addition, so the shortcut is a clean identity path. :class:`PreActBasicBlock` and
  :class:`PreActBottleneck`; a projection shortcut (1×1 conv) is applied to the pre-activated input
  only when the shape changes.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

__all__ = ["BasicBlock", "Bottleneck", "PreActBasicBlock", "PreActBottleneck", "conv1x1", "conv3x3"]

NormFactory = Callable[[int], nn.Module]


def conv3x3(
    in_channels: int, out_channels: int, stride: int = 1, groups: int = 1, dilation: int = 1
) -> nn.Conv2d:
    """3×3 convolution without bias, padding = dilation (size-preserving at stride 1)."""
    return nn.Conv2d(
        in_channels, out_channels, 3, stride, padding=dilation, groups=groups, bias=False, dilation=dilation
    )


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1×1 convolution without bias."""
    return nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)


def projection_shortcut(
    in_channels: int, out_channels: int, stride: int, norm_layer: NormFactory | None
) -> nn.Module | None:
    """``1×1 conv (+ norm)`` shortcut when the shape changes, else ``None`` (identity)."""
    if stride == 1 and in_channels == out_channels:
        return None
    if norm_layer is None:
        return nn.Sequential(conv1x1(in_channels, out_channels, stride))
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), norm_layer(out_channels))


class BasicBlock(nn.Module):
    """ResNet v1 basic block: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    Args:
        in_channels: input channels.
        channels: output channels (``expansion = 1``).
        stride: of the first 3×3 conv; the shortcut projects when stride or channels change.

    Shape:
        ``(N, in_channels, H, W) -> (N, channels, H / stride, W / stride)``.

    Example:
        >>> import torch
        >>> BasicBlock(64, 128, stride=2)(torch.randn(1, 64, 8, 8)).shape
        torch.Size([1, 128, 4, 4])
    """

    expansion = 1

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, norm_layer: NormFactory = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = norm_layer(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = norm_layer(channels)
        self.downsample = projection_shortcut(in_channels, channels, stride, norm_layer)
        self.stride = stride
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet v1 bottleneck: ``1×1 (width) → 3×3 (width, stride) → 1×1 (channels × 4)`` + shortcut, ReLU.

    Args:
        in_channels: input channels.
        channels: bottleneck width before expansion; output has ``channels * 4``.
        stride: on the 3×3 conv (torchvision "v1.5").
        groups, base_width: ResNeXt-style width ``channels * base_width / 64 * groups``.

    Shape:
        ``(N, in_channels, H, W) -> (N, 4 * channels, H / stride, W / stride)``.

    Example:
        >>> import torch
        >>> Bottleneck(64, 64)(torch.randn(1, 64, 8, 8)).shape
        torch.Size([1, 256, 8, 8])
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        groups: int = 1,
        base_width: int = 64,
        norm_layer: NormFactory = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        width = int(channels * (base_width / 64.0)) * groups
        out_channels = channels * self.expansion
        self.conv1 = conv1x1(in_channels, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, out_channels)
        self.bn3 = norm_layer(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = projection_shortcut(in_channels, out_channels, stride, norm_layer)
        self.stride = stride
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class PreActBasicBlock(nn.Module):
    """ResNet v2 basic block: ``x + conv2(relu(bn2(conv1(relu(bn1(x))))))``, identity shortcut.

    When stride or channels change, the shortcut is a 1×1 conv applied to ``relu(bn1(x))``.

    Example:
        >>> import torch
        >>> PreActBasicBlock(64, 64)(torch.randn(1, 64, 8, 8)).shape
        torch.Size([1, 64, 8, 8])
    """

    expansion = 1

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, norm_layer: NormFactory = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        self.bn1 = norm_layer(in_channels)
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn2 = norm_layer(channels)
        self.conv2 = conv3x3(channels, channels)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = projection_shortcut(in_channels, channels, stride, None)
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        preactivated = self.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(preactivated)
        out = self.conv1(preactivated)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + shortcut


class PreActBottleneck(nn.Module):
    """ResNet v2 bottleneck: BN-ReLU-1×1, BN-ReLU-3×3 (stride), BN-ReLU-1×1 (×4), plus identity.

    Example:
        >>> import torch
        >>> PreActBottleneck(64, 64, stride=2)(torch.randn(1, 64, 8, 8)).shape
        torch.Size([1, 256, 4, 4])
    """

    expansion = 4

    def __init__(
        self, in_channels: int, channels: int, stride: int = 1, norm_layer: NormFactory = nn.BatchNorm2d
    ) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.bn1 = norm_layer(in_channels)
        self.conv1 = conv1x1(in_channels, channels)
        self.bn2 = norm_layer(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn3 = norm_layer(channels)
        self.conv3 = conv1x1(channels, out_channels)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = projection_shortcut(in_channels, out_channels, stride, None)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        preactivated = self.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(preactivated)
        out = self.conv1(preactivated)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        return out + shortcut
