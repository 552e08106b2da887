"""Which input pixel each feature-map position stands for, and the crops that line score maps up (FCN §4.2).

A feature map's :class:`Frame` ``(stride, offset)`` says that position ``i`` is centred on input pixel
coordinate ``stride · i + offset`` (pixel ``p`` has its centre at ``p``). Every layer maps frames
exactly — it is the coordinate map of Caffe's ``coord_map.py``, read for the semantics:

* convolution or pooling (kernel ``k``, stride ``s``, padding ``p``, dilation ``d``): output ``j`` covers
  inputs ``s·j − p .. s·j − p + d(k−1)``, centred on ``s·j − p + d(k−1)/2``, so
  ``(S, B) → (S·s, B + S·(d(k−1)/2 − p))``;
* transposed convolution (kernel ``k``, stride ``f``, no padding): output ``o`` interpolates input
  ``(o − (k−1)/2) / f``, so ``(S, B) → (S/f, B − (S/f)·(k−1)/2)``;
* cropping ``c`` positions: ``(S, B) → (S, B + S·c)``.

Two maps of one stride line up when the one that starts earlier is cropped (or the other placed into it)
by the difference of their offsets over the stride; the final map (stride 1) is cropped by ``−offset`` so
output pixel ``p`` is input pixel ``p``. Caffe's FCN (``conv1_1`` padded by 100, unpadded ``fc6``,
kernels ``2f``) gives the published crops 19 (32s), 5 and 27 (16s), 5, 9 and 31 (8s) — the tests recompute
them from these rules.

Example:
    >>> frame = Frame(1, 0.0)
    >>> for _ in range(5):  # five 2×2 max-pools after padding-1 3×3 convolutions
    ...     frame = conv_frame(frame, kernel=2, stride=2, padding=0)
    >>> frame
    Frame(stride=32, offset=15.5)
    >>> kernel = upsampling_kernel(frame, factor=32, target_offset=0.0)  # onto the input pixels
    >>> kernel, transposed_frame(frame, kernel, factor=32)  # so crop 16 upsampled pixels
    (64, Frame(stride=1, offset=-16.0))
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

__all__ = [
    "Frame",
    "align_crops",
    "conv_frame",
    "crop_frame",
    "sequential_frames",
    "transposed_frame",
    "upsampling_kernel",
]


@dataclass(frozen=True)
class Frame:
    """Position ``i`` of a feature map is centred on input coordinate ``stride · i + offset``."""

    stride: int
    offset: float


def _pair_first(value: int | tuple[int, ...] | str) -> int:
    if isinstance(value, str):
        raise ValueError(f"padding={value!r}: give explicit integer padding to compute a frame")
    return int(value[0]) if isinstance(value, tuple) else int(value)


def conv_frame(frame: Frame, kernel: int, stride: int, padding: int, dilation: int = 1) -> Frame:
    """The frame after a convolution or pooling layer (the same along both axes for square layers)."""
    reach = dilation * (kernel - 1) / 2
    return Frame(frame.stride * stride, frame.offset + frame.stride * (reach - padding))


def transposed_frame(frame: Frame, kernel: int, factor: int) -> Frame:
    """The frame after an unpadded transposed convolution of stride ``factor`` (upsampling)."""
    if frame.stride % factor:
        raise ValueError(f"cannot upsample stride {frame.stride} by {factor}: not a divisor")
    fine = frame.stride // factor
    return Frame(fine, frame.offset - fine * (kernel - 1) / 2)


def crop_frame(frame: Frame, crop: int) -> Frame:
    """The frame after dropping the first ``crop`` positions."""
    return Frame(frame.stride, frame.offset + frame.stride * crop)


def _whole(value: float, what: str) -> int:
    if value != round(value):
        raise ValueError(f"{what} is {value}: the two grids are not aligned to whole positions")
    return round(value)


def align_crops(first: Frame, second: Frame) -> tuple[int, int]:
    """How many positions each of two maps of one stride starts before the other: ``(d, 0)`` when the first
    starts ``d`` positions earlier, ``(0, d)`` when the second does (crop it by ``d``, or place the other
    ``d`` positions into it).

    Example:
        >>> align_crops(Frame(16, -11.5), Frame(16, -91.5))  # Caffe FCN-16s: score_pool4 is cropped by 5
        (0, 5)
    """
    if first.stride != second.stride:
        raise ValueError(f"cannot align strides {first.stride} and {second.stride}")
    shift = _whole((first.offset - second.offset) / first.stride, "the offset difference over the stride")
    return (0, shift) if shift >= 0 else (-shift, 0)


def upsampling_kernel(frame: Frame, factor: int, target_offset: float) -> int:
    """Kernel size of a bilinear ×``factor`` transposed convolution from ``frame`` whose output lines up, to
    whole positions, with a grid of offset ``target_offset`` (then :func:`align_crops` gives the crops).

    Caffe's kernel ``2·factor`` suits grids centred between pixels (2×2 pooling: offsets ``(S−1)/2``);
    grids of odd, ``k//2``-padded strided convolutions (ResNet, MobileNet: offsets ``0``) need
    ``2·factor − 1``. The first size that gives whole positions is used.

    Raises:
        ValueError: neither size aligns the grids.
    """
    for kernel in (2 * factor, 2 * factor - 1):
        upsampled = transposed_frame(frame, kernel, factor)
        shift = (target_offset - upsampled.offset) / upsampled.stride
        if shift == round(shift):
            return kernel
    raise ValueError(f"no bilinear kernel aligns {frame} upsampled by {factor} with offset {target_offset}")


def sequential_frames(layers: Iterable[nn.Module], frame: Frame | None = None) -> list[Frame]:
    """The frame after each layer of a sequence (convolutions and poolings move it, the rest does not).

    Example:
        >>> layers = [nn.Conv2d(3, 4, 3, padding=100), nn.ReLU(), nn.MaxPool2d(2, 2, ceil_mode=True)]
        >>> [f.offset for f in sequential_frames(layers)]
        [-99.0, -99.0, -98.5]
    """
    frame = frame or Frame(1, 0.0)
    frames = []
    for layer in layers:
        if isinstance(layer, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
            kernel, stride = _pair_first(layer.kernel_size), _pair_first(layer.stride)
            padding = _pair_first(layer.padding)
            dilation = _pair_first(layer.dilation) if isinstance(layer, nn.Conv2d | nn.MaxPool2d) else 1
            frame = conv_frame(frame, kernel, stride, padding, dilation)
        frames.append(frame)
    return frames
