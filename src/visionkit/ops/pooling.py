"""Max and average pooling as autograd Functions with an explicit backward (handbook §20).

The forward passes equal ``torch.nn.functional.max_pool2d`` / ``avg_pool2d`` and so do the backward
passes, which are written out by hand to show how pooling back-propagates:

* **max pooling** records, for every output, the flat index (``y * W + x``) of the input element that
  won its window, and the backward adds each output gradient to that one element; all other elements get
  zero. Ties go to the *first* maximum in the window in row-major order, as in torch; a NaN in a window
  wins it (NaN propagates).
* **mean pooling** divides each output gradient evenly by the window's divisor and adds that share to
  every element of the window, so the gradient sum is preserved.

The divisor of average pooling: with ``count_include_pad=True`` it is the number of window cells that lie
inside the zero-padded input (cells beyond the padding, which only ``ceil_mode`` creates, are never
counted); with ``count_include_pad=False`` it is the number of cells inside the real input.
``divisor_override`` replaces both.

Inputs are ``Tensor[N, C, H, W]`` or ``Tensor[C, H, W]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx

__all__ = ["AvgPool2d", "MaxPool2d", "avg_pool2d", "max_pool2d", "pool_output_size"]

IntPair = int | tuple[int, int]


def _pair(value: IntPair, name: str, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= minimum for v in pair):
        raise ValueError(f"{name} must be an int or a pair of ints >= {minimum}, got {value!r}")
    return pair  # type: ignore[return-value]


def pool_output_size(
    size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool
) -> int:
    """Number of pooling windows along one axis (torch's rule, including the ``ceil_mode`` fix-up).

    With ``ceil_mode`` the last window may start in the right padding but never beyond it.

    Example:
        >>> pool_output_size(5, kernel=2, stride=2, padding=0, dilation=1, ceil_mode=True)
        3
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    count = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (count - 1) * stride >= size + padding:
        count -= 1
    return count


def _windows(
    tensor: Tensor,
    fill: float,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    out_size: tuple[int, int],
) -> Tensor:
    """``[..., H, W]`` → ``[..., oH, oW, kH * kW]``: every pooling window, padded cells set to ``fill``."""
    height, width = tensor.shape[-2:]
    extra = [
        max(0, (out_size[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1 - (size + 2 * padding[i]))
        for i, size in enumerate((height, width))
    ]
    padded = F.pad(tensor, (padding[1], padding[1] + extra[1], padding[0], padding[0] + extra[0]), value=fill)
    windows = padded.unfold(-2, dilation[0] * (kernel[0] - 1) + 1, stride[0])
    windows = windows.unfold(-2, dilation[1] * (kernel[1] - 1) + 1, stride[1])
    windows = windows[..., :: dilation[0], :: dilation[1]][..., : out_size[0], : out_size[1], :, :]
    return windows.reshape(*windows.shape[:-2], kernel[0] * kernel[1])


class _MaxPool2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        input: Tensor,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        dilation: tuple[int, int],
        ceil_mode: bool,
    ) -> tuple[Tensor, Tensor]:
        height, width = input.shape[-2:]
        out_size = tuple(
            pool_output_size(s, kernel[i], stride[i], padding[i], dilation[i], ceil_mode)
            for i, s in enumerate((height, width))
        )
        values = _windows(input, -math.inf, kernel, stride, padding, dilation, out_size)  # type: ignore[arg-type]
        # torch.argmax returns the first maximum (and treats NaN as the maximum), matching torch's kernel.
        winner = values.argmax(dim=-1, keepdim=True)
        flat_index = torch.arange(height * width, device=input.device).view(height, width)
        index_windows = _windows(flat_index, -1, kernel, stride, padding, dilation, out_size)  # type: ignore[arg-type]
        indices = index_windows.expand(values.shape).gather(-1, winner).squeeze(-1)
        output = values.gather(-1, winner).squeeze(-1)
        ctx.save_for_backward(indices)
        ctx.input_shape = input.shape  # type: ignore[attr-defined]
        ctx.mark_non_differentiable(indices)
        return output, indices

    @staticmethod
    def backward(ctx: FunctionCtx, grad_output: Tensor, _grad_indices: Tensor | None):  # type: ignore[override]
        (indices,) = ctx.saved_tensors  # type: ignore[attr-defined]
        shape = ctx.input_shape  # type: ignore[attr-defined]
        lead = grad_output.shape[:-2]
        grad_input = grad_output.new_zeros(*lead, shape[-2] * shape[-1])
        # Route each output's gradient to its recorded arg-max; overlapping windows accumulate.
        grad_input.scatter_add_(-1, indices.reshape(*lead, -1), grad_output.reshape(*lead, -1))
        return grad_input.view(shape), None, None, None, None, None


class _AvgPool2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        input: Tensor,
        kernel: tuple[int, int],
        stride: tuple[int, int],
        padding: tuple[int, int],
        ceil_mode: bool,
        count_include_pad: bool,
        divisor_override: int | None,
    ) -> Tensor:
        height, width = input.shape[-2:]
        out_size = tuple(
            pool_output_size(s, kernel[i], stride[i], padding[i], 1, ceil_mode)
            for i, s in enumerate((height, width))
        )
        sums = _windows(input, 0.0, kernel, stride, padding, (1, 1), out_size).sum(-1)  # type: ignore[arg-type]
        divisor = _avg_divisor(input, kernel, stride, padding, out_size, count_include_pad, divisor_override)  # type: ignore[arg-type]
        ctx.save_for_backward(divisor)
        ctx.settings = (input.shape, kernel, stride, padding, out_size)  # type: ignore[attr-defined]
        return sums / divisor

    @staticmethod
    def backward(ctx: FunctionCtx, grad_output: Tensor):  # type: ignore[override]
        (divisor,) = ctx.saved_tensors  # type: ignore[attr-defined]
        shape, kernel, stride, padding, out_size = ctx.settings  # type: ignore[attr-defined]
        height, width = shape[-2:]
        share = (grad_output / divisor).reshape(-1, 1, out_size[0] * out_size[1])
        # Spread each share evenly over its window: fold (col2im) sums the overlapping windows' shares.
        full = tuple(
            max((out_size[i] - 1) * stride[i] + kernel[i], size + 2 * padding[i])
            for i, size in enumerate(shape[-2:])
        )
        columns = share.expand(-1, kernel[0] * kernel[1], -1).contiguous()
        padded = F.fold(columns, output_size=full, kernel_size=kernel, stride=stride)
        grad_input = padded[..., padding[0] : padding[0] + height, padding[1] : padding[1] + width]
        return grad_input.reshape(shape), None, None, None, None, None, None


def _avg_divisor(
    input: Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    out_size: tuple[int, int],
    count_include_pad: bool,
    divisor_override: int | None,
) -> Tensor:
    """``Tensor[oH, oW]`` of window divisors (see the module docstring)."""
    if divisor_override is not None:
        return input.new_full(out_size, float(divisor_override))
    counts = []
    for axis, size in enumerate(input.shape[-2:]):
        start = torch.arange(out_size[axis], device=input.device) * stride[axis] - padding[axis]
        end = torch.clamp(start + kernel[axis], max=size + padding[axis])
        if not count_include_pad:
            start, end = start.clamp(min=0), end.clamp(max=size)
        counts.append((end - start).to(input.dtype))
    return counts[0][:, None] * counts[1][None, :]


def _check_input(input: Tensor, padding: tuple[int, int], kernel: tuple[int, int]) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if input.dim() not in (3, 4) or not input.is_floating_point():
        raise ValueError(
            f"input must be a floating Tensor[N, C, H, W] or [C, H, W], got {input.dtype} {list(input.shape)}"
        )
    if any(2 * p > k for p, k in zip(padding, kernel, strict=True)):
        raise ValueError(
            f"padding must be at most half the kernel size, got padding={padding}, kernel={kernel}"
        )


def max_pool2d(
    input: Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Max pooling whose backward routes each output gradient to the recorded arg-max (handbook §20).

    Args:
        input: ``Tensor[N, C, H, W]`` (or ``[C, H, W]``), floating point.
        kernel_size, stride (default ``kernel_size``), padding, dilation: ints or ``(h, w)`` pairs.
        ceil_mode: use ceil instead of floor for the output size.
        return_indices: also return the flat arg-max indices ``y * W + x`` (as torch does).

    Returns:
        ``Tensor[N, C, oH, oW]``, plus ``Tensor[N, C, oH, oW]`` int64 indices if ``return_indices``.
        Ties: the first maximum in the window (row-major) wins.

    Example:
        >>> x = torch.tensor([[[[1.0, 3.0], [3.0, 2.0]]]], requires_grad=True)
        >>> y = max_pool2d(x, 2); y.sum().backward(); x.grad
        tensor([[[[0., 1.],
                  [0., 0.]]]])
    """
    kernel = _pair(kernel_size, "kernel_size", 1)
    strides = kernel if stride is None else _pair(stride, "stride", 1)
    pads = _pair(padding, "padding", 0)
    dilations = _pair(dilation, "dilation", 1)
    _check_input(input, pads, kernel)
    output, indices = _MaxPool2dFunction.apply(input, kernel, strides, pads, dilations, ceil_mode)
    return (output, indices) if return_indices else output


def avg_pool2d(
    input: Tensor,
    kernel_size: IntPair,
    stride: IntPair | None = None,
    padding: IntPair = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> Tensor:
    """Mean pooling whose backward spreads each output gradient evenly over its window (handbook §20).

    Args:
        input: ``Tensor[N, C, H, W]`` (or ``[C, H, W]``), floating point.
        kernel_size, stride (default ``kernel_size``), padding: ints or ``(h, w)`` pairs.
        ceil_mode: use ceil instead of floor for the output size.
        count_include_pad: count zero-padding cells in the divisor (see the module docstring).
        divisor_override: if given, divide every window sum by this number instead.

    Returns:
        ``Tensor[N, C, oH, oW]``.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2).requires_grad_()
        >>> y = avg_pool2d(x, 2); y.backward(torch.ones_like(y)); y, x.grad
        (tensor([[[[1.5000]]]], grad_fn=<_AvgPool2dFunctionBackward>), tensor([[[[0.2500, 0.2500],
                  [0.2500, 0.2500]]]]))
    """
    kernel = _pair(kernel_size, "kernel_size", 1)
    strides = kernel if stride is None else _pair(stride, "stride", 1)
    pads = _pair(padding, "padding", 0)
    _check_input(input, pads, kernel)
    if divisor_override is not None and divisor_override <= 0:
        raise ValueError(f"divisor_override must be a positive int, got {divisor_override}")
    return _AvgPool2dFunction.apply(
        input, kernel, strides, pads, ceil_mode, count_include_pad, divisor_override
    )


class MaxPool2d(torch.nn.Module):
    """Module form of :func:`max_pool2d`."""

    def __init__(
        self,
        kernel_size: IntPair,
        stride: IntPair | None = None,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.dilation, self.ceil_mode = dilation, ceil_mode

    def forward(self, input: Tensor) -> Tensor:
        return max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"ceil_mode={self.ceil_mode}"
        )


class AvgPool2d(torch.nn.Module):
    """Module form of :func:`avg_pool2d`."""

    def __init__(
        self,
        kernel_size: IntPair,
        stride: IntPair | None = None,
        padding: IntPair = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad, self.divisor_override = (
            ceil_mode,
            count_include_pad,
            divisor_override,
        )

    def forward(self, input: Tensor) -> Tensor:
        return avg_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"ceil_mode={self.ceil_mode}"
        )
