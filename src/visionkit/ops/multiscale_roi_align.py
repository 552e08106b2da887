"""Multi-scale RoI Align over FPN levels (Lin et al., "Feature Pyramid Networks", CVPR 2017, eq. 1).

A RoI of size ``w × h`` (input pixels) is pooled from level
``k = floor(k0 + log2(sqrt(w·h) / 224) + eps)``, clamped to the levels present: a 224² RoI goes to
``k0 = 4`` (P4), half that size one level finer. The level of each feature map is inferred from its
size relative to the (padded) image size, so the pooler needs no strides. Same semantics as
``torchvision.ops.MultiScaleRoIAlign`` (k0 = 4, canonical size 224, eps = 1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from visionkit.ops.roi import check_features, convert_rois, pair_size
from visionkit.ops.roi_align import roi_align
from visionkit.ops.roi_pool import roi_pool

__all__ = ["MultiScaleRoIAlign", "infer_scale", "map_levels"]


def map_levels(
    boxes: Tensor,
    min_level: int,
    max_level: int,
    canonical_size: float = 224.0,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """FPN level offset ``k - min_level`` (int64 ``Tensor[K]``) for xyxy ``boxes`` ``Tensor[K, 4]``.

    Zero-area (or inverted) boxes get the finest level.

    Example:
        >>> map_levels(torch.tensor([[0.0, 0, 224, 224], [0, 0, 50, 50], [0, 0, 900, 900]]), 2, 5)
        tensor([2, 0, 3])
    """
    sides = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    scale = (sides[:, 0] * sides[:, 1]).sqrt()
    level = torch.floor(canonical_level + torch.log2(scale / canonical_size) + eps)
    level = torch.nan_to_num(level, nan=min_level, neginf=min_level)
    return (level.clamp(min=min_level, max=max_level) - min_level).long()


def infer_scale(feature_size: Sequence[int], image_size: Sequence[int], name: str = "feature") -> float:
    """Scale ``2^round(log2(feature / image))`` of a feature map; both sides must agree.

    Example:
        >>> infer_scale((50, 68), (800, 1088))
        0.0625
    """
    scales = [2.0 ** round(math.log2(f / i)) for f, i in zip(feature_size, image_size, strict=True)]
    if scales[0] != scales[1]:
        raise ValueError(
            f"{name} of size {list(feature_size)} has different scales {scales} along height and width "
            f"relative to the images {list(image_size)}"
        )
    return scales[0]


class MultiScaleRoIAlign(nn.Module):
    """Pool RoIs from the FPN level that matches their size (module docstring): the one multi-scale pooler
    of visionkit (Faster R-CNN's and Cascade R-CNN's RoI heads use it).

    Args:
        featmap_names: keys of the feature dict to use, finest first (e.g. ``["p2", "p3", "p4", "p5"]``).
        output_size: ``(PH, PW)`` or one int.
        sampling_ratio: as in :func:`~visionkit.ops.roi_align.roi_align`; ignored by RoI Pool.
        canonical_size, canonical_level: the FPN heuristic's 224 and k0 = 4.
        aligned: as in :func:`~visionkit.ops.roi_align.roi_align` (torchvision's pooler uses False).
        op: ``"align"`` (RoI Align, bilinear) or ``"pool"`` (RoI Pool, quantized; handbook §24).
        strides: each level's stride (e.g. from the neck's ``ShapeSpec``); ``None``: inferred from the
            feature sizes against the largest image (torchvision's behaviour).

    Example:
        >>> pooler = MultiScaleRoIAlign(["p2", "p3"], output_size=7, sampling_ratio=2)
        >>> features = {"p2": torch.rand(1, 8, 64, 64), "p3": torch.rand(1, 8, 32, 32)}
        >>> pooler(features, [torch.tensor([[0.0, 0.0, 100.0, 100.0]])], [(256, 256)]).shape
        torch.Size([1, 8, 7, 7])
    """

    def __init__(
        self,
        featmap_names: Sequence[str],
        output_size: int | Sequence[int],
        sampling_ratio: int = 2,
        *,
        canonical_size: float = 224.0,
        canonical_level: int = 4,
        aligned: bool = False,
        op: str = "align",
        strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(featmap_names, str) or not featmap_names:
            raise ValueError(f"featmap_names must be a non-empty list of names, got {featmap_names!r}")
        if op not in ("align", "pool"):
            raise ValueError(f"op must be 'align' or 'pool', got {op!r}")
        if strides is not None and (
            len(strides) != len(featmap_names) or any(s < 1 or s & (s - 1) for s in strides)
        ):
            raise ValueError(f"strides must give one power of two per feature map, got {strides!r}")
        self.featmap_names = list(featmap_names)
        self.op = op
        self.strides = list(strides) if strides is not None else None
        self.output_size = pair_size(output_size)
        self.sampling_ratio, self.aligned = sampling_ratio, aligned
        self.canonical_size, self.canonical_level = canonical_size, canonical_level

    def forward(
        self, features: Mapping[str, Tensor], boxes: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]]
    ) -> Tensor:
        """Pool ``boxes`` (list of per-image xyxy ``Tensor[K_i, 4]``) → ``Tensor[sum K_i, C, PH, PW]``.

        ``image_sizes`` are the ``(height, width)`` of the images before batching/padding; the largest
        defines the reference size against which each level's scale is inferred. The output rows are in
        the order of the concatenated ``boxes``.
        """
        missing = [name for name in self.featmap_names if name not in features]
        if missing:
            raise ValueError(f"features has no maps named {missing}; it has {list(features)}")
        maps = [features[name] for name in self.featmap_names]
        for name, level_map in zip(self.featmap_names, maps, strict=True):
            check_features(level_map, f"features[{name!r}]")
        if self.strides is not None:
            scales = [1.0 / stride for stride in self.strides]
        else:
            if not image_sizes:
                raise ValueError("image_sizes must list the (height, width) of every image, got none")
            reference = (max(size[0] for size in image_sizes), max(size[1] for size in image_sizes))
            scales = [
                infer_scale(m.shape[-2:], reference, f"features[{n!r}]")
                for n, m in zip(self.featmap_names, maps, strict=True)
            ]
        rois = convert_rois(boxes, maps[0])
        channels = maps[0].shape[1]
        if len(maps) == 1:
            return self._pool(maps[0], rois, scales[0])
        min_level, max_level = -math.log2(scales[0]), -math.log2(scales[-1])
        levels = map_levels(
            rois[:, 1:], int(min_level), int(max_level), self.canonical_size, self.canonical_level
        )
        output = maps[0].new_zeros(rois.shape[0], channels, *self.output_size)
        for level, (level_map, scale) in enumerate(zip(maps, scales, strict=True)):
            selected = (levels == level).nonzero().flatten()
            if selected.numel():
                output[selected] = self._pool(level_map, rois[selected], scale).to(output.dtype)
        return output

    def _pool(self, level_map: Tensor, rois: Tensor, scale: float) -> Tensor:
        if self.op == "pool":
            return roi_pool(level_map, rois, self.output_size, scale)
        return roi_align(level_map, rois, self.output_size, scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (
            f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio}, op={self.op!r}, aligned={self.aligned}"
        )
