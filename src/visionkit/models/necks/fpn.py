"""Feature Pyramid Network (Lin et al., 2017, "Feature Pyramid Networks for Object Detection"; handbook §9).

Bottom-up: the backbone's ``c2..c5`` (strides 4..32). Top-down: each level's 1×1 *lateral* projection
of ``c_k`` is added to the nearest-neighbour 2× upsampling of the merged map above it; a 3×3 conv then
*smooths* every merged map (reducing the aliasing of upsampling) into ``p_k``. Optional extra levels:
``"maxpool"`` adds ``p6 = maxpool(p5, 1, stride 2)`` (Faster R-CNN with FPN), ``"p6p7"`` adds
``p6 = conv3×3/2(c5 or p5)`` and ``p7 = conv3×3/2(relu(p6))`` (RetinaNet, P3–P7).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from visionkit.structures import ShapeSpec

__all__ = ["FeaturePyramidNetwork", "top_down_merge"]


def top_down_merge(laterals: Sequence[Tensor]) -> list[Tensor]:
    """The FPN top-down pathway: ``merged[-1] = laterals[-1]``; going up in resolution,
    ``merged[i] = laterals[i] + upsample_nearest(merged[i + 1], size of laterals[i])``.

    Args:
        laterals: lateral maps ``Tensor[B, C, H_i, W_i]``, finest first (``c2`` side), one channel count.

    Returns:
        The merged maps, finest first (before the 3×3 smoothing).

    Example:
        >>> import torch
        >>> merged = top_down_merge([torch.zeros(1, 1, 4, 4), torch.ones(1, 1, 2, 2)])
        >>> merged[0].sum().item(), merged[1].sum().item()
        (16.0, 4.0)
    """
    if not laterals:
        raise ValueError("laterals must hold at least one feature map")
    merged = [laterals[-1]]
    for lateral in reversed(laterals[:-1]):
        # sizes are given explicitly: odd input sizes make a coarse map not exactly half the finer one
        merged.insert(0, lateral + F.interpolate(merged[0], size=lateral.shape[-2:], mode="nearest"))
    return merged


class FeaturePyramidNetwork(nn.Module):
    """FPN neck: ``{"c2".."c5"} -> {"p2".."p5"[, "p6"[, "p7"]]}``, all with ``out_channels`` channels.

    Args:
        in_channels: the backbone levels used, each with its :class:`~visionkit.structures.ShapeSpec`
            (``backbone.output_shape()``) or just its channel count (stride then ``2^k`` for ``c<k>``),
            e.g. ``{"c3": 32, "c4": 96, "c5": 320}`` (consecutive levels; outputs are named ``p<k>``).
        out_channels: channels of every output level (256 in the paper).
        extra_blocks: ``None``, ``"maxpool"`` (adds ``p6``) or ``"p6p7"`` (adds ``p6`` and ``p7``).
        extra_source: input of ``p6`` for ``"p6p7"``: ``"c5"`` (RetinaNet paper) or ``"p5"``.

    Shapes:
        input ``c_k``: ``Tensor[B, in_channels[c_k], H / 2^k, W / 2^k]``; output ``p_k``:
        ``Tensor[B, out_channels, H / 2^k, W / 2^k]``.

    Example:
        >>> import torch
        >>> fpn = FeaturePyramidNetwork({"c3": 8, "c4": 16, "c5": 32}, 16, extra_blocks="p6p7")
        >>> features = {f"c{k}": torch.zeros(1, 8 * 2 ** (k - 3), 64 // 2**k, 64 // 2**k) for k in (3, 4, 5)}
        >>> {name: tuple(p.shape[-2:]) for name, p in fpn(features).items()}
        {'p3': (8, 8), 'p4': (4, 4), 'p5': (2, 2), 'p6': (1, 1), 'p7': (1, 1)}
    """

    def __init__(
        self,
        in_channels: Mapping[str, int | ShapeSpec],
        out_channels: int = 256,
        *,
        extra_blocks: str | None = None,
        extra_source: str = "c5",
    ) -> None:
        super().__init__()
        names = sorted(in_channels, key=lambda name: int(name[1:]) if name[1:].isdigit() else -1)
        levels = [int(name[1:]) for name in names]
        if (
            not names
            or any(not n.startswith("c") for n in names)
            or levels != list(range(levels[0], levels[-1] + 1))
        ):
            raise ValueError(f"in_channels must name consecutive levels 'c2'..'c5', got {list(in_channels)}")
        if extra_blocks not in (None, "maxpool", "p6p7"):
            raise ValueError(f"extra_blocks must be None, 'maxpool' or 'p6p7', got {extra_blocks!r}")
        if extra_source not in ("c5", "p5"):
            raise ValueError(f"extra_source must be 'c5' or 'p5', got {extra_source!r}")
        self.in_names = names
        self.out_channels = out_channels
        specs = {n: _as_spec(n, in_channels[n]) for n in names}
        in_channels = {n: spec.channels for n, spec in specs.items()}
        self.extra_blocks, self.extra_source = extra_blocks, extra_source
        self.lateral_convs = nn.ModuleList(nn.Conv2d(in_channels[n], out_channels, 1) for n in names)
        self.output_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in names)
        last = levels[-1]
        self.out_names = [f"p{k}" for k in levels]
        self._strides = [specs[n].stride for n in names]
        if extra_blocks == "maxpool":
            self.out_names.append(f"p{last + 1}")
            self._strides.append(2 * self._strides[-1])
        elif extra_blocks == "p6p7":
            source_channels = in_channels[names[-1]] if extra_source == "c5" else out_channels
            self.p6 = nn.Conv2d(source_channels, out_channels, 3, stride=2, padding=1)
            self.p7 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
            self.out_names += [f"p{last + 1}", f"p{last + 2}"]
            self._strides += [2 * self._strides[-1], 4 * self._strides[-1]]
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_uniform_(module.weight, a=1)
                nn.init.zeros_(module.bias)  # type: ignore[arg-type]

    @property
    def strides(self) -> dict[str, int]:
        """Stride of every output level relative to the input image (from the inputs' strides)."""
        return dict(zip(self.out_names, self._strides, strict=True))

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride of every output level."""
        return {name: ShapeSpec(self.out_channels, stride) for name, stride in self.strides.items()}

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        missing = [name for name in self.in_names if name not in features]
        if missing:
            raise ValueError(
                f"FPN expects features {self.in_names}, missing {missing} (got {list(features)})"
            )
        inputs = [features[name] for name in self.in_names]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, inputs, strict=True)]
        outputs = [conv(x) for conv, x in zip(self.output_convs, top_down_merge(laterals), strict=True)]
        if self.extra_blocks == "maxpool":
            outputs.append(F.max_pool2d(outputs[-1], kernel_size=1, stride=2))
        elif self.extra_blocks == "p6p7":
            p6 = self.p6(inputs[-1] if self.extra_source == "c5" else outputs[-1])
            outputs += [p6, self.p7(F.relu(p6))]
        return dict(zip(self.out_names, outputs, strict=True))


def _as_spec(name: str, value: int | ShapeSpec) -> ShapeSpec:
    """A level's :class:`ShapeSpec`; a bare channel count takes the stride ``2^k`` of ``c<k>``."""
    return value if isinstance(value, ShapeSpec) else ShapeSpec(int(value), 2 ** int(name[1:]))
