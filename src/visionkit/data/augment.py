"""Training augmentations for detection that change scale and context: scale jitter and mosaic.

* :class:`RandomScale` — resize by a random factor (both sides alike), then crop a random window when
  the result is larger than ``max_size``: objects are seen at other sizes, the compute per image stays
  bounded (the "large scale jitter" of Ghiasi et al., 2021, "Simple Copy-Paste").
* :class:`Mosaic` — a dataset wrapper that, with probability ``p``, tiles four training images around a
  random centre on a 2S × 2S canvas and crops the S × S window around that centre (YOLOv4, Bochkovskiy et
  al., 2020): objects appear cut at new borders, in new company and positions.

Both keep the box contract of :mod:`visionkit.data.transforms` (``boxes`` xyxy pixels; objects whose
visible part is below ``min_visibility`` of their area are dropped with all their fields). Randomness comes
from ``torch`` (seeded runs are reproducible).

Example:
    >>> import torch
    >>> image, target = RandomScale((2.0, 2.0), max_size=64)(torch.rand(3, 48, 48),
    ...     {"boxes": torch.tensor([[4.0, 4.0, 12.0, 12.0]]), "labels": torch.tensor([0])})
    >>> tuple(image.shape)
    (3, 64, 64)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

from visionkit.data.transforms import RandomCrop, copy_target

__all__ = ["Mosaic", "RandomScale"]

Target = dict[str, Any]
PER_OBJECT = ("boxes", "labels", "iscrowd", "area", "difficult")


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


class RandomScale:
    """Resize by a factor drawn uniformly from ``scale``; crop a random ``max_size`` window if larger.

    Args:
        scale: ``(low, high)`` range of the factor, ``0 < low <= high``.
        max_size: largest output side in pixels (``None``: never crop).
        min_visibility: as :class:`~visionkit.data.transforms.RandomCrop`.
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.5, 1.5),
        max_size: int | None = None,
        min_visibility: float = 0.3,
    ) -> None:
        if not 0.0 < scale[0] <= scale[1]:
            raise ValueError(f"RandomScale: need 0 < scale[0] <= scale[1], got {scale}")
        if max_size is not None and max_size < 1:
            raise ValueError(f"RandomScale: max_size must be >= 1 or None, got {max_size}")
        self.scale, self.max_size = scale, max_size
        self.cropper = RandomCrop(min_visibility=min_visibility)

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        factor = _uniform(*self.scale)
        height, width = image.shape[1:]
        new_height, new_width = max(1, round(height * factor)), max(1, round(width * factor))
        image = F.interpolate(
            image[None],
            size=(new_height, new_width),
            mode="bilinear",
            align_corners=False,
            antialias=factor < 1,
        )[0]
        target = copy_target(target)
        sx, sy = new_width / width, new_height / height
        if "boxes" in target:
            target["boxes"] = target["boxes"] * torch.tensor([sx, sy, sx, sy], dtype=target["boxes"].dtype)
        if "area" in target:
            target["area"] = target["area"] * (sx * sy)
        limit = self.max_size
        if limit is None or (new_height <= limit and new_width <= limit):
            return image, target
        crop_height, crop_width = min(new_height, limit), min(new_width, limit)
        left = int(_uniform(0, new_width - crop_width + 1 - 1e-9))
        top = int(_uniform(0, new_height - crop_height + 1 - 1e-9))
        return self.cropper.crop(image, target, (left, top, left + crop_width, top + crop_height))

    def __repr__(self) -> str:
        return f"RandomScale(scale={self.scale}, max_size={self.max_size})"


class Mosaic(Dataset[tuple[Tensor, Target]]):
    """With probability ``p``, item ``i`` is a mosaic of images ``i`` and three random others.

    Args:
        dataset: yields ``(Tensor[3, H, W] in [0, 1], target)``; tiles may differ in size.
        p: probability of a mosaic (else the item unchanged).
        size: output side ``S`` (default: the side of item ``i``'s image, its larger one).
        min_visibility: objects cut below this fraction of their area are dropped.
        transforms: applied to the result (mosaic or not), e.g. flips.
        fill: canvas value where no tile reaches.
    """

    def __init__(
        self,
        dataset: Dataset,
        p: float = 0.5,
        size: int | None = None,
        min_visibility: float = 0.3,
        transforms: Callable[[Tensor, Target], tuple[Tensor, Target]] | None = None,
        fill: float = 0.5,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Mosaic: p must be in [0, 1], got {p}")
        self.dataset, self.p, self.size, self.fill = dataset, p, size, fill
        self.cropper = RandomCrop(min_visibility=min_visibility)
        self.transforms = transforms
        self.label_map = getattr(dataset, "label_map", None)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        image, target = self.dataset[index]
        if float(torch.rand(())) < self.p and len(self) > 1:
            image, target = self.mosaic(index, image, target)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def mosaic(self, index: int, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        """Tile item ``index`` (already loaded) with three random others and crop around the centre."""
        size = self.size or int(max(image.shape[1:]))
        others = torch.randint(len(self), (3,)).tolist()
        tiles = [(image, target)] + [self.dataset[i] for i in others]
        canvas = image.new_full((image.shape[0], 2 * size, 2 * size), self.fill)
        xc, yc = int(_uniform(size / 2, 3 * size / 2)), int(_uniform(size / 2, 3 * size / 2))
        parts: list[Target] = []
        for corner, (tile, tile_target) in enumerate(tiles):
            h, w = int(tile.shape[1]), int(tile.shape[2])
            left = (
                xc - w if corner in (0, 2) else xc
            )  # 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right
            top = yc - h if corner in (0, 1) else yc
            x1, y1, x2, y2 = max(left, 0), max(top, 0), min(left + w, 2 * size), min(top + h, 2 * size)
            canvas[:, y1:y2, x1:x2] = tile[:, y1 - top : y2 - top, x1 - left : x2 - left]
            moved = copy_target(tile_target)
            moved["boxes"] = tile_target["boxes"] + torch.tensor([left, top, left, top], dtype=torch.float32)
            parts.append(moved)
        merged = {key: torch.cat([part[key] for part in parts]) for key in PER_OBJECT if key in parts[0]}
        merged.update({key: value for key, value in target.items() if key not in PER_OBJECT})
        window = (xc - size // 2, yc - size // 2, xc - size // 2 + size, yc - size // 2 + size)
        return self.cropper.crop(canvas, merged, window)
