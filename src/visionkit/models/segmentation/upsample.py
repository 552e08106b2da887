"""In-network upsampling of class scores: per-class transposed convolutions initialised to bilinear
interpolation (FCN §3.3: "upsampling is backwards strided convolution").

The bilinear kernel of size ``k`` has ``factor = ceil(k / 2)`` and centre ``factor − 1`` (odd ``k``) or
``factor − 0.5`` (even ``k``); its weight at ``(y, x)`` is ``(1 − |y − c| / factor)(1 − |x − c| / factor)``
— the kernel of the FCN authors' ``surgery.upsample_filt``. A transposed convolution of stride ``factor``
with it interpolates linearly between the input positions, which it places ``factor`` output pixels apart.
Each class is upsampled on its own (``groups = classes``: the diagonal that the authors' ``interp`` fills,
with no channel mixing).

Example:
    >>> bilinear_kernel(4)[0]
    tensor([0.0625, 0.1875, 0.1875, 0.0625])
    >>> up = ScoreUpsample(channels=2, factor=2)
    >>> up(torch.ones(1, 2, 3, 3))[0, 0, 2:6, 2:6]  # where two inputs meet: the constant is kept
    tensor([[1., 1., 1., 1.],
            [1., 1., 1., 1.],
            [1., 1., 1., 1.],
            [1., 1., 1., 1.]])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ScoreUpsample", "bilinear_kernel"]


def bilinear_kernel(size: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The ``[size, size]`` bilinear interpolation kernel (see the module docstring).

    Example:
        >>> bilinear_kernel(3)
        tensor([[0.2500, 0.5000, 0.2500],
                [0.5000, 1.0000, 0.5000],
                [0.2500, 0.5000, 0.2500]])
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    line = 1 - (torch.arange(size, dtype=torch.float64) - centre).abs() / factor
    return torch.outer(line, line).to(dtype)


class ScoreUpsample(nn.Module):
    """×``factor`` upsampling of ``channels`` score maps, one bilinear-initialised kernel per channel.

    The output is the full (unpadded) transposed convolution: ``(n − 1)·factor + kernel_size`` positions;
    the caller crops it (:mod:`visionkit.models.segmentation.alignment`).

    Args:
        channels: score maps (classes); each has its own kernel.
        factor: stride of the transposed convolution.
        kernel_size: default ``2·factor`` (Caffe's FCN); ``2·factor − 1`` for grids centred on pixels.
        trainable: learn the kernels (the paper's intermediate layers) or keep them bilinear as the
            authors' released nets do (``lr_mult: 0``): then the weight is a buffer, not a parameter.

    Shape:
        ``(N, channels, h, w) -> (N, channels, (h−1)·factor + k, (w−1)·factor + k)``.
    """

    def __init__(
        self, channels: int, factor: int, kernel_size: int | None = None, trainable: bool = False
    ) -> None:
        super().__init__()
        if channels < 1 or factor < 1:
            raise ValueError(f"channels and factor must be >= 1, got {channels} and {factor}")
        self.channels, self.factor = channels, factor
        self.kernel_size = kernel_size or 2 * factor
        weight = bilinear_kernel(self.kernel_size).expand(channels, 1, -1, -1).clone()
        if trainable:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)

    def forward(self, scores: Tensor) -> Tensor:
        weight = self.weight.to(scores.dtype)
        return F.conv_transpose2d(scores, weight, stride=self.factor, groups=self.channels)

    def extra_repr(self) -> str:
        trainable = isinstance(self.weight, nn.Parameter)
        return f"{self.channels}, factor={self.factor}, kernel_size={self.kernel_size}, trainable={trainable}"
