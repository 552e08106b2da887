"""Joint image + mask transforms: ``(image, mask) -> (image, mask)`` with image float ``[3, H, W]`` in
``[0, 1]`` and mask int64 ``[H, W]``. Images resize bilinearly, masks by nearest neighbour with the same
pixel-centre mapping (source pixel ``⌊(y + ½)·H_in / H_out⌋``, torch's ``nearest-exact``), so a class
boundary stays where the image's edge is; padding gives the image 0 and the mask the ignore index. Inputs
are never modified.

Example:
    >>> image, mask = torch.rand(3, 4, 6), torch.arange(24).reshape(4, 6) % 3
    >>> image2, mask2 = crop_pair(image, mask, top=2, left=-1, height=4, width=4)
    >>> mask2
    tensor([[255,   0,   1,   2],
            [255,   0,   1,   2],
            [255, 255, 255, 255],
            [255, 255, 255, 255]])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from visionkit.data.segmentation.masks import IGNORE_INDEX

__all__ = [
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomScale",
    "collate_segmentation",
    "crop_pair",
    "resize_pair",
]


def _check_pair(image: Tensor, mask: Tensor, who: str) -> None:
    if not isinstance(image, Tensor) or not image.is_floating_point() or image.dim() != 3:
        raise TypeError(
            f"{who}: image must be a float Tensor[C, H, W] in [0, 1], "
            f"got {getattr(image, 'dtype', type(image))}"
        )
    if not isinstance(mask, Tensor) or mask.dim() != 2 or mask.is_floating_point():
        raise TypeError(
            f"{who}: mask must be an integer Tensor[H, W], got {getattr(mask, 'dtype', type(mask))}"
        )
    if tuple(mask.shape) != tuple(image.shape[1:]):
        raise ValueError(f"{who}: mask {list(mask.shape)} and image {list(image.shape[1:])} differ in size")


def resize_pair(image: Tensor, mask: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Image bilinear (``align_corners=False``), mask nearest with the same pixel-centre mapping."""
    _check_pair(image, mask, "resize_pair")
    if height < 1 or width < 1:
        raise ValueError(f"resize_pair: size must be >= 1, got {height}x{width}")
    resized = F.interpolate(image[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    labels = F.interpolate(mask[None, None].float(), size=(height, width), mode="nearest-exact")[0, 0]
    return resized.clamp_(0.0, 1.0), labels.to(mask.dtype)


def crop_pair(
    image: Tensor,
    mask: Tensor,
    top: int,
    left: int,
    height: int,
    width: int,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor]:
    """The ``height × width`` window at ``(top, left)``; where it leaves the image: image 0, mask
    ``ignore_index``."""
    _check_pair(image, mask, "crop_pair")
    out_image = image.new_zeros(image.shape[0], height, width)
    out_mask = mask.new_full((height, width), ignore_index)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + height, image.shape[1]), min(left + width, image.shape[2])
    if y1 > y0 and x1 > x0:
        out_image[:, y0 - top : y1 - top, x0 - left : x1 - left] = image[:, y0:y1, x0:x1]
        out_mask[y0 - top : y1 - top, x0 - left : x1 - left] = mask[y0:y1, x0:x1]
    return out_image, out_mask


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


class RandomHorizontalFlip:
    """Mirror image and mask together with probability ``p``."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p, self.generator = p, generator

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        _check_pair(image, mask, "RandomHorizontalFlip")
        if float(torch.rand((), generator=self.generator)) < self.p:
            return image.flip(-1), mask.flip(-1)
        return image.clone(), mask.clone()

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomScale:
    """Resize both by one factor drawn uniformly from ``[low, high]`` (:func:`resize_pair`)."""

    def __init__(self, low: float, high: float, generator: torch.Generator | None = None) -> None:
        if not 0 < low <= high:
            raise ValueError(f"need 0 < low <= high, got {low}, {high}")
        self.low, self.high, self.generator = low, high, generator

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        factor = _uniform(self.generator, self.low, self.high)
        height, width = (max(1, round(side * factor)) for side in image.shape[1:])
        return resize_pair(image, mask, height, width)

    def __repr__(self) -> str:
        return f"RandomScale({self.low}, {self.high})"


class RandomCrop:
    """A random ``size × size`` window; smaller images are padded (image 0, mask ``ignore_index``) first, at
    the bottom and right, so every crop has the same size."""

    def __init__(
        self, size: int, ignore_index: int = IGNORE_INDEX, generator: torch.Generator | None = None
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.size, self.ignore_index, self.generator = size, ignore_index, generator

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        _check_pair(image, mask, "RandomCrop")
        height, width = image.shape[1:]
        top = int(torch.randint(0, max(height - self.size, 0) + 1, (), generator=self.generator))
        left = int(torch.randint(0, max(width - self.size, 0) + 1, (), generator=self.generator))
        return crop_pair(image, mask, top, left, self.size, self.size, self.ignore_index)

    def __repr__(self) -> str:
        return f"RandomCrop({self.size}, ignore_index={self.ignore_index})"


def collate_segmentation(
    batch: Sequence[tuple[Tensor, Tensor]], ignore_index: int = IGNORE_INDEX
) -> tuple[Tensor, Tensor]:
    """Stack ``(image, mask)`` pairs into ``Tensor[B, 3, H, W]`` and ``Tensor[B, H, W]``, padding smaller ones
    at the bottom and right (image 0, mask ``ignore_index``: padded pixels count nowhere)."""
    if not batch:
        raise ValueError("collate_segmentation: empty batch")
    height = max(int(image.shape[1]) for image, _ in batch)
    width = max(int(image.shape[2]) for image, _ in batch)
    pairs = [crop_pair(image, mask, 0, 0, height, width, ignore_index) for image, mask in batch]
    return torch.stack([image for image, _ in pairs]), torch.stack([mask for _, mask in pairs])
