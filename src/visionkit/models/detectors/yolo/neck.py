"""The YOLOv3 neck and detection head, and YOLOv2's passthrough (reorg) layer (handbook §18).

YOLOv3 (Redmon & Farhadi, 2018, §2.3 and darknet's ``yolov3.cfg``): on the coarsest backbone map a set
of five alternating 1×1 / 3×3 convolutions; its output goes to that scale's head and, through a 1×1
convolution and a ×2 nearest upsampling, is **concatenated** with the next finer backbone map, which gets
its own five-convolution set, and so on down to stride 8. ``fusion="sum"`` adds instead of concatenating
(the handbook's "eltwise sum"; the lateral 1×1 then outputs the finer map's channels). Each head is a 3×3
convolution (twice the set's width) and a 1×1 output convolution with ``A·(5+K)`` channels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionkit.errors import ConfigError, InputShapeError
from visionkit.nn.blocks import ConvNormAct
from visionkit.structures import ShapeSpec

__all__ = ["REORG_MODES", "YOLOv3Head", "YOLOv3Neck", "darknet_conv", "reorg"]

REORG_MODES = ("darknet", "space_to_depth")


def _leaky(inplace: bool = True) -> nn.Module:
    return nn.LeakyReLU(0.1, inplace=inplace)


def darknet_conv(in_channels: int, out_channels: int, kernel_size: int) -> ConvNormAct:
    """Darknet's ``[convolutional]`` block: conv (no bias) → batch norm → leaky ReLU (0.1)."""
    return ConvNormAct(in_channels, out_channels, kernel_size, activation_layer=_leaky)


def _conv_set(in_channels: int, width: int) -> nn.Sequential:
    """1×1 (w) → 3×3 (2w) → 1×1 (w) → 3×3 (2w) → 1×1 (w)."""
    layers, channels = [], in_channels
    for index in range(5):
        out, kernel = (width, 1) if index % 2 == 0 else (2 * width, 3)
        layers.append(darknet_conv(channels, out, kernel))
        channels = out
    return nn.Sequential(*layers)


class YOLOv3Neck(nn.Module):
    """Top-down path of YOLOv3 over ``c3, c4, c5`` (module docstring).

    Args:
        in_shapes: channels and stride of the backbone maps used, finest first (e.g. ``c3, c4, c5``).
        widths: the 1×1 width of each level's convolution set, finest first (darknet: 128, 256, 512).
        fusion: ``"concat"`` (the paper) or ``"sum"``.

    Shape:
        ``{"c3": [B, C3, H/8, W/8], ...} -> {"p3": [B, widths[0], H/8, W/8], "p4": ..., "p5": ...}``
        (output names ``p<log2 stride>``).

    Example:
        >>> from visionkit.structures import ShapeSpec
        >>> neck = YOLOv3Neck({"c4": ShapeSpec(16, 16), "c5": ShapeSpec(32, 32)}, (8, 16))
        >>> out = neck({"c4": torch.rand(1, 16, 4, 4), "c5": torch.rand(1, 32, 2, 2)})
        >>> {k: tuple(v.shape) for k, v in out.items()}
        {'p4': (1, 8, 4, 4), 'p5': (1, 16, 2, 2)}
    """

    def __init__(
        self, in_shapes: Mapping[str, ShapeSpec], widths: Sequence[int], fusion: str = "concat"
    ) -> None:
        super().__init__()
        if fusion not in ("concat", "sum"):
            raise ConfigError(f"fusion={fusion!r}: expected 'concat' (the paper) or 'sum'")
        if len(widths) != len(in_shapes) or min(widths) < 1:
            raise ConfigError(
                f"neck_widths={tuple(widths)!r}: expected {len(in_shapes)} positive widths, one per level"
            )
        self.in_names = list(in_shapes)
        self.fusion = fusion
        shapes = list(in_shapes.values())
        self.out_names = [f"p{int(s.stride).bit_length() - 1}" for s in shapes]
        self._shapes = {
            name: ShapeSpec(w, s.stride) for name, w, s in zip(self.out_names, widths, shapes, strict=True)
        }
        self.sets = nn.ModuleList()
        self.laterals = nn.ModuleList()
        for level in range(len(shapes) - 1, -1, -1):  # coarse to fine
            channels = shapes[level].channels
            if level < len(shapes) - 1:
                lateral_out = widths[level] if fusion == "concat" else channels
                self.laterals.append(darknet_conv(widths[level + 1], lateral_out, 1))
                channels = channels + lateral_out if fusion == "concat" else channels
            self.sets.append(_conv_set(channels, widths[level]))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self._shapes)

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        maps = [features[name] for name in self.in_names]
        outputs: list[Tensor] = []
        x = self.sets[0](maps[-1])
        outputs.append(x)
        for position, finer in enumerate(reversed(maps[:-1])):
            up = F.interpolate(self.laterals[position](x), size=finer.shape[-2:], mode="nearest")
            x = self.sets[position + 1](torch.cat([up, finer], 1) if self.fusion == "concat" else up + finer)
            outputs.append(x)
        return dict(zip(self.out_names, reversed(outputs), strict=True))


class YOLOv3Head(nn.Module):
    """Per level: 3×3 conv (2·width) → 1×1 conv to ``num_anchors[l]·(5 + num_classes)`` (with bias);
    ``hidden=False``: the 1×1 output conv alone (YOLOv2's region layer follows it directly).
    ``objectness_prior`` π > 0 starts every objectness bias at ``log(π / (1 − π))`` (σ = π; RetinaNet's
    prior, not in the YOLO papers, whose biases start at 0: σ = ½ on every one of thousands of
    predictions, a large first-epoch objectness loss); 0 keeps the papers' start.

    Example:
        >>> head = YOLOv3Head([8, 16], [3, 3], num_classes=2)
        >>> [tuple(o.shape) for o in head([torch.rand(1, 8, 4, 4), torch.rand(1, 16, 2, 2)])]
        [(1, 21, 4, 4), (1, 21, 2, 2)]
    """

    def __init__(
        self,
        widths: Sequence[int],
        num_anchors: Sequence[int],
        num_classes: int,
        hidden: bool = True,
        objectness_prior: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= objectness_prior < 1.0:
            raise ConfigError(
                f"objectness_prior={objectness_prior!r}: expected 0 (off) or a number in (0, 1)"
            )
        self.blocks = nn.ModuleList(
            nn.Sequential(darknet_conv(w, 2 * w, 3), nn.Conv2d(2 * w, a * (5 + num_classes), 1))
            if hidden
            else nn.Sequential(nn.Conv2d(w, a * (5 + num_classes), 1))
            for w, a in zip(widths, num_anchors, strict=True)
        )
        if objectness_prior > 0:
            with torch.no_grad():
                for block in self.blocks:
                    block[-1].bias[4 :: 5 + num_classes] = math.log(objectness_prior / (1 - objectness_prior))

    def forward(self, levels: Sequence[Tensor]) -> list[Tensor]:
        return [block(x) for block, x in zip(self.blocks, levels, strict=True)]


def reorg(x: Tensor, stride: int = 2, mode: str = "darknet") -> Tensor:
    """YOLOv2's passthrough reorganisation: ``[B, C, H, W] -> [B, C·s², H/s, W/s]``.

    ``mode="darknet"`` reproduces darknet's ``reorg_cpu(..., forward=0)`` as its ``reorg`` layer calls it
    (so darknet weights after a passthrough line up): the input buffer is read as ``[C/s², H·s, W·s]`` and
    ``out[k, j, i] = in'[k mod C/s², j·s + (k div C/s²) div s, i·s + (k div C/s²) mod s]`` on an
    ``[C, H, W]`` view, then viewed as ``[C·s², H/s, W/s]``. ``mode="space_to_depth"`` is the plain
    rearrangement ``out[c·s² + dy·s + dx, j, i] = in[c, j·s + dy, i·s + dx]`` (``pixel_unshuffle``).

    Raises:
        InputShapeError: ``H`` or ``W`` not divisible by ``s`` (or, for darknet's order, ``C`` by ``s²``).

    Example:
        >>> reorg(torch.arange(16.0).view(1, 4, 2, 2), 2, "space_to_depth")[0, :4, 0, 0].tolist()
        [0.0, 1.0, 2.0, 3.0]
    """
    if mode not in REORG_MODES:
        raise ConfigError(f"reorg={mode!r}: expected one of {list(REORG_MODES)}")
    batch, channels, height, width = x.shape
    if height % stride or width % stride or (mode == "darknet" and channels % (stride * stride)):
        raise InputShapeError(
            f"reorg: expected H, W divisible by {stride} (and C by {stride * stride}), got {list(x.shape)}"
        )
    if mode == "space_to_depth":
        return F.pixel_unshuffle(x, stride)
    out_c = channels // (stride * stride)
    view = x.reshape(batch, out_c, height, stride, width, stride)  # in' = [C/s², H·s, W·s]
    flat = view.permute(0, 3, 5, 1, 2, 4).reshape(batch, channels, height, width)
    return flat.reshape(batch, channels * stride * stride, height // stride, width // stride)
