"""Convolution building blocks: conv-norm-activation, depthwise separable, grouped + channel shuffle,
Inception v1, inverted residual (MobileNetV2) and the Darknet-53 residual.

Every block takes ``norm_layer`` / ``activation_layer`` factories so a model can swap
``torch.nn.BatchNorm2d`` for :class:`visionkit.nn.BatchNorm2d` (the reference) or for ``nn.Identity``.
Residual blocks of ResNet v1/v2 live in :mod:`visionkit.nn.residual`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "ConvNormAct",
    "DarknetResidual",
    "DepthwiseSeparableConv",
    "GroupedConv",
    "InceptionModule",
    "InvertedResidual",
    "channel_shuffle",
    "make_divisible",
]

NormFactory = Callable[[int], nn.Module]
ActivationFactory = Callable[..., nn.Module]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor`` without dropping below 90 %.

    The MobileNet convention (Sandler et al. 2018, reference code): channel counts scaled by a width
    multiplier are rounded to multiples of 8 for efficient kernels.

    Example:
        >>> make_divisible(32 * 0.75), make_divisible(24 * 0.5), make_divisible(100)
        (24, 16, 104)
    """
    if divisor <= 0:
        raise ValueError(f"make_divisible: divisor must be positive, got {divisor}")
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class ConvNormAct(nn.Sequential):
    """Conv2d → norm → activation, with "same" padding for odd kernels.

    Submodules are numbered ``0`` (conv), ``1`` (norm), ``2`` (activation) like torchvision's
    ``Conv2dNormActivation`` so state dicts line up. The conv has no bias when a norm follows.

    Args:
        in_channels, out_channels: channels.
        kernel_size, stride, groups, dilation: of the convolution.
        padding: default ``dilation * (kernel_size - 1) // 2`` (keeps size at stride 1).
        norm_layer: factory ``(channels) -> module`` or ``None`` for no norm.
        activation_layer: factory ``() -> module`` or ``None`` for a linear output.

    Shape:
        ``(N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride))``.

    Example:
        >>> ConvNormAct(3, 16, 3, stride=2)(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 16, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        dilation: int = 1,
        norm_layer: NormFactory | None = nn.BatchNorm2d,
        activation_layer: ActivationFactory | None = nn.ReLU,
        inplace: bool | None = True,
    ) -> None:
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride,
                padding,
                dilation=dilation,
                groups=groups,
                bias=norm_layer is None,
            )
        ]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            layers.append(activation_layer(inplace=inplace) if inplace is not None else activation_layer())
        super().__init__(*layers)
        self.out_channels = out_channels


class DepthwiseSeparableConv(nn.Module):
    """Depthwise k×k conv (one filter per channel) then pointwise 1×1 conv (handbook §12, MobileNetV1).

    Cost relative to a standard k×k conv: ``1 / out_channels + 1 / k²`` (Howard et al. 2017).

    Args:
        in_channels, out_channels: channels.
        kernel_size, stride: of the depthwise conv (MobileNetV1 downsamples here instead of pooling).

    Shape:
        ``(N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride))``.

    Example:
        >>> DepthwiseSeparableConv(32, 64, stride=2)(torch.randn(1, 32, 16, 16)).shape
        torch.Size([1, 64, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        norm_layer: NormFactory | None = nn.BatchNorm2d,
        activation_layer: ActivationFactory | None = nn.ReLU,
    ) -> None:
        super().__init__()
        self.depthwise = ConvNormAct(
            in_channels, in_channels, kernel_size, stride, groups=in_channels,
            norm_layer=norm_layer, activation_layer=activation_layer,
        )  # fmt: skip
        self.pointwise = ConvNormAct(
            in_channels, out_channels, 1, norm_layer=norm_layer, activation_layer=activation_layer
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` groups (ShuffleNet, Zhang et al. 2018).

    ``(N, g*c, H, W)`` viewed as ``(N, g, c, H, W)``, transposed to ``(N, c, g, H, W)`` and flattened,
    so the next grouped conv sees channels from every group.

    Example:
        >>> channel_shuffle(torch.arange(6.0).view(1, 6, 1, 1), 2).flatten().tolist()
        [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
    """
    if x.dim() != 4:
        raise ValueError(f"channel_shuffle: x must be (N, C, H, W), got shape {tuple(x.shape)}")
    batch, channels, height, width = x.shape
    if groups <= 0 or channels % groups:
        raise ValueError(f"channel_shuffle: channels ({channels}) must be divisible by groups ({groups})")
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class GroupedConv(nn.Module):
    """Group convolution (handbook §31): ``groups`` independent convs, optionally followed by a shuffle.

    Parameters and MACs are ``1/groups`` of the ungrouped conv.

    Example:
        >>> GroupedConv(8, 16, 3, groups=4, shuffle=True)(torch.randn(1, 8, 5, 5)).shape
        torch.Size([1, 16, 5, 5])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 2,
        shuffle: bool = True,
        norm_layer: NormFactory | None = nn.BatchNorm2d,
        activation_layer: ActivationFactory | None = nn.ReLU,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"GroupedConv: in_channels ({in_channels}) and out_channels ({out_channels}) "
                f"must be divisible by groups ({groups})"
            )
        self.conv = ConvNormAct(
            in_channels, out_channels, kernel_size, stride, groups=groups,
            norm_layer=norm_layer, activation_layer=activation_layer,
        )  # fmt: skip
        self.groups, self.shuffle = groups, shuffle
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return channel_shuffle(x, self.groups) if self.shuffle else x


class InceptionModule(nn.Module):
    """Inception v1 module with 1×1 reductions (Szegedy et al. 2015, "Going Deeper with Convolutions").

    Four parallel branches concatenated along channels:
    ``1×1`` | ``1×1 → 3×3`` | ``1×1 → k×k`` | ``3×3 max-pool → 1×1``.
    Submodule names (``branch1``..``branch4``) match torchvision's GoogLeNet. The paper's third branch
    uses ``k = 5``; torchvision's GoogLeNet uses 3 (kept for checkpoint compatibility via
    ``branch3_kernel_size=3``).

    Args:
        in_channels: input channels.
        ch1x1, ch3x3_reduce, ch3x3, ch5x5_reduce, ch5x5, pool_proj: branch widths as in the paper's table.
        branch3_kernel_size: kernel of the third branch's second conv.
        conv_block: factory ``(in, out, kernel_size, padding=...) -> module``.

    Shape:
        ``(N, in_channels, H, W) -> (N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W)``.

    Example:
        >>> InceptionModule(192, 64, 96, 128, 16, 32, 32)(torch.randn(1, 192, 8, 8)).shape
        torch.Size([1, 256, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3_reduce: int,
        ch3x3: int,
        ch5x5_reduce: int,
        ch5x5: int,
        pool_proj: int,
        branch3_kernel_size: int = 5,
        conv_block: Callable[..., nn.Module] | None = None,
    ) -> None:
        super().__init__()
        block = conv_block or ConvNormAct
        self.branch1 = block(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            block(in_channels, ch3x3_reduce, kernel_size=1),
            block(ch3x3_reduce, ch3x3, kernel_size=3, padding=1),
        )
        k = branch3_kernel_size
        self.branch3 = nn.Sequential(
            block(in_channels, ch5x5_reduce, kernel_size=1),
            block(ch5x5_reduce, ch5x5, kernel_size=k, padding=k // 2),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            block(in_channels, pool_proj, kernel_size=1),
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual with linear bottleneck (Sandler et al. 2018).

    ``1×1 expand (×t, ReLU6) → 3×3 depthwise (stride, ReLU6) → 1×1 linear projection``, plus the
    identity shortcut when ``stride == 1`` and ``in_channels == out_channels``. The body is ``self.conv``
    with torchvision's numbering (``conv.0`` expand, ``conv.1`` depthwise, ``conv.2`` projection,
    ``conv.3`` norm; without expansion ``conv.0`` depthwise, ``conv.1``, ``conv.2``).

    Shape:
        ``(N, in_channels, H, W) -> (N, out_channels, ceil(H / stride), ceil(W / stride))``.

    Example:
        >>> InvertedResidual(16, 24, stride=2, expand_ratio=6)(torch.randn(1, 16, 8, 8)).shape
        torch.Size([1, 24, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: float,
        norm_layer: NormFactory = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual: stride must be 1 or 2, got {stride}")
        hidden = round(in_channels * expand_ratio)
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(
                ConvNormAct(in_channels, hidden, 1, norm_layer=norm_layer, activation_layer=nn.ReLU6)
            )
        layers += [
            ConvNormAct(
                hidden, hidden, 3, stride, groups=hidden, norm_layer=norm_layer, activation_layer=nn.ReLU6
            ),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            norm_layer(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class DarknetResidual(nn.Module):
    """Darknet-53 residual (Redmon & Farhadi 2018, YOLOv3): ``1×1 (C/2) → 3×3 (C)`` + identity.

    Leaky ReLU (slope 0.1) after each batch-normalized conv.

    Example:
        >>> DarknetResidual(64)(torch.randn(1, 64, 8, 8)).shape
        torch.Size([1, 64, 8, 8])
    """

    def __init__(self, channels: int, norm_layer: NormFactory = nn.BatchNorm2d) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"DarknetResidual: channels must be even, got {channels}")

        def leaky(inplace: bool = True) -> nn.Module:
            return nn.LeakyReLU(0.1, inplace=inplace)

        self.conv1 = ConvNormAct(channels, channels // 2, 1, norm_layer=norm_layer, activation_layer=leaky)
        self.conv2 = ConvNormAct(channels // 2, channels, 3, norm_layer=norm_layer, activation_layer=leaky)
        self.out_channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.conv1(x))
