"""Box-aware transforms for detection: ``(image, target) -> (image, target)`` callables.

``image`` is ``Tensor[C, H, W]`` float in ``[0, 1]`` (before :class:`Normalize`); ``target`` is a dataset
target dict (``boxes`` float32 ``[N, 4]`` xyxy absolute pixels, ``labels``, ``iscrowd``, ``difficult``,
``area``, ``image_id``). Every transform returns a *new* dict with new tensors: the caller's target and
image are never modified. Geometric transforms move the boxes with the pixels; per-object fields are
filtered together when a crop removes objects. A ``uint8`` image given to a transform that needs float
raises ``TypeError`` (use :class:`ToTensor` first).

Randomness comes from ``torch`` (seed with ``torch.manual_seed`` or pass a ``torch.Generator``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "Compose",
    "Normalize",
    "PhotometricJitter",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Resize",
    "ToTensor",
    "collate_detection",
    "copy_target",
]

Target = dict[str, Any]
#: per-object fields filtered together when objects are removed
OBJECT_FIELDS = ("boxes", "labels", "iscrowd", "difficult", "area", "masks")


def copy_target(target: Target) -> Target:
    """A copy of ``target`` whose tensors are new (cloned), so changing it leaves the original intact."""
    return {key: value.clone() if isinstance(value, Tensor) else value for key, value in target.items()}


def _check_float_image(image: Tensor, who: str) -> None:
    if not isinstance(image, Tensor):
        raise TypeError(f"{who}: image must be a torch.Tensor [C, H, W], got {type(image).__name__}")
    if not image.is_floating_point():
        raise TypeError(
            f"{who}: image must be a float tensor in [0, 1], got {image.dtype} (apply ToTensor first)"
        )
    if image.dim() != 3:
        raise ValueError(f"{who}: image must have shape [C, H, W], got {list(image.shape)}")


def _keep_objects(target: Target, keep: Tensor) -> Target:
    return {
        key: value[keep] if key in OBJECT_FIELDS and isinstance(value, Tensor) else value
        for key, value in target.items()
    }


class Compose:
    """Apply transforms in order.

    Example:
        >>> transform = Compose([RandomHorizontalFlip(0.5), Resize(64, 96)])
    """

    def __init__(self, transforms: Sequence[Callable[[Any, Target], tuple[Any, Target]]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: Any, target: Target) -> tuple[Any, Target]:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


class ToTensor:
    """PIL image, ``uint8`` H×W×C array or ``uint8`` C×H×W tensor → float32 ``[C, H, W]`` in ``[0, 1]``.

    A float tensor passes through (copied).
    """

    def __call__(self, image: Any, target: Target) -> tuple[Tensor, Target]:
        if isinstance(image, Tensor):
            tensor = image.float().div(255.0) if image.dtype == torch.uint8 else image.clone()
        else:
            array = np.asarray(image)
            if array.dtype != np.uint8:
                raise TypeError(f"ToTensor: expected a uint8 image, got {array.dtype}")
            array = array[:, :, None] if array.ndim == 2 else array
            tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div(255.0)
        return tensor, copy_target(target)

    def __repr__(self) -> str:
        return "ToTensor()"


class Resize:
    """Resize keeping the aspect ratio: the shorter side to ``min_size``, unless the longer side would
    exceed ``max_size`` (then the longer side to ``max_size``); boxes and ``area`` are scaled to match.

    Args:
        min_size: target shorter side in pixels.
        max_size: cap for the longer side (default: none).

    Example:
        >>> target = {"boxes": torch.tensor([[0.0, 0, 200, 100]])}
        >>> image, target = Resize(64, 80)(torch.rand(3, 100, 200), target)
        >>> tuple(image.shape), target["boxes"]
        ((3, 40, 80), tensor([[ 0.,  0., 80., 40.]]))
    """

    def __init__(self, min_size: int, max_size: int | None = None) -> None:
        if min_size <= 0 or (max_size is not None and max_size < min_size):
            raise ValueError(f"Resize: need 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size, self.max_size = min_size, max_size

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        scale = self.min_size / min(height, width)
        if self.max_size is not None and max(height, width) * scale > self.max_size:
            scale = self.max_size / max(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        _check_float_image(image, "Resize")
        height, width = image.shape[1:]
        new_height, new_width = self.output_size(height, width)
        resized = F.interpolate(
            image[None], size=(new_height, new_width), mode="bilinear", align_corners=False, antialias=True
        )[0]
        target = copy_target(target)
        scale_x, scale_y = new_width / width, new_height / height
        if "boxes" in target:
            target["boxes"] = target["boxes"] * torch.tensor([scale_x, scale_y, scale_x, scale_y])
        if "area" in target:
            target["area"] = target["area"] * (scale_x * scale_y)
        if "masks" in target:
            target["masks"] = (
                F.interpolate(target["masks"][None].float(), size=(new_height, new_width))[0] > 0.5
            )
        return resized, target

    def __repr__(self) -> str:
        return f"Resize(min_size={self.min_size}, max_size={self.max_size})"


class RandomHorizontalFlip:
    """Mirror the image left–right with probability ``p``; box ``x1, x2`` become ``W - x2, W - x1``."""

    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p, self.generator = p, generator

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        _check_float_image(image, "RandomHorizontalFlip")
        target = copy_target(target)
        if float(torch.rand((), generator=self.generator)) >= self.p:
            return image.clone(), target
        width = image.shape[-1]
        if "boxes" in target:
            boxes = target["boxes"]
            target["boxes"] = torch.stack(
                (width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]), 1
            )
        if "masks" in target:
            target["masks"] = target["masks"].flip(-1)
        return image.flip(-1), target

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomCrop:
    """Crop a random window; boxes are cut to it, and objects whose visible part is less than
    ``min_visibility`` of their area are removed (all per-object fields together).

    Args:
        scale: range of the window's side as a fraction of the image side (both sides drawn separately).
        min_visibility: minimum kept fraction of a box's area (0 keeps every box that still overlaps).
        p: probability of cropping at all.
        max_attempts: windows drawn until one keeps at least one object (if the image had any);
            after that the image is returned uncropped.

    Example:
        >>> crop = RandomCrop(scale=(0.5, 1.0), min_visibility=0.3)
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.5, 1.0),
        min_visibility: float = 0.3,
        p: float = 1.0,
        max_attempts: int = 10,
        generator: torch.Generator | None = None,
    ) -> None:
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"RandomCrop: need 0 < scale[0] <= scale[1] <= 1, got {scale}")
        if not 0.0 <= min_visibility <= 1.0:
            raise ValueError(f"RandomCrop: min_visibility must be in [0, 1], got {min_visibility}")
        self.scale, self.min_visibility, self.p = scale, min_visibility, p
        self.max_attempts, self.generator = max_attempts, generator

    def _uniform(self, low: float, high: float) -> float:
        return low + (high - low) * float(torch.rand((), generator=self.generator))

    def crop(self, image: Tensor, target: Target, window: tuple[int, int, int, int]) -> tuple[Tensor, Target]:
        """Apply the crop ``window = (left, top, right, bottom)`` deterministically."""
        left, top, right, bottom = window
        target = copy_target(target)
        if "boxes" in target:
            boxes = target["boxes"]
            offset = torch.tensor([left, top, left, top], dtype=boxes.dtype)
            cut = boxes - offset
            cut[:, 0::2] = cut[:, 0::2].clamp(0, right - left)
            cut[:, 1::2] = cut[:, 1::2].clamp(0, bottom - top)
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            visible = (cut[:, 2] - cut[:, 0]) * (cut[:, 3] - cut[:, 1])
            keep = (visible > 0) & (visible >= self.min_visibility * area)
            fraction = torch.where(area > 0, visible / area.clamp(min=1e-12), torch.ones_like(area))
            target["boxes"] = cut
            if "area" in target:
                target["area"] = target["area"] * fraction.to(target["area"].dtype)
            if "masks" in target:
                target["masks"] = target["masks"][:, top:bottom, left:right]
            target = _keep_objects(target, keep)
        return image[:, top:bottom, left:right].clone(), target

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        _check_float_image(image, "RandomCrop")
        if float(torch.rand((), generator=self.generator)) >= self.p:
            return image.clone(), copy_target(target)
        height, width = image.shape[1:]
        had_objects = "boxes" in target and target["boxes"].shape[0] > 0
        for _ in range(self.max_attempts):
            crop_width = max(1, round(width * self._uniform(*self.scale)))
            crop_height = max(1, round(height * self._uniform(*self.scale)))
            left = int(self._uniform(0, width - crop_width + 1 - 1e-9))
            top = int(self._uniform(0, height - crop_height + 1 - 1e-9))
            cropped = self.crop(image, target, (left, top, left + crop_width, top + crop_height))
            if not had_objects or cropped[1]["boxes"].shape[0] > 0:
                return cropped
        return image.clone(), copy_target(target)

    def __repr__(self) -> str:
        return f"RandomCrop(scale={self.scale}, min_visibility={self.min_visibility}, p={self.p})"


class PhotometricJitter:
    """Random brightness, contrast and saturation changes (boxes untouched), each factor drawn from
    ``[1 - s, 1 + s]``, applied in a random order, result clamped to ``[0, 1]``. RGB images only for
    saturation (other channel counts skip it)."""

    def __init__(
        self,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        generator: torch.Generator | None = None,
    ) -> None:
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"PhotometricJitter: {name} must be in [0, 1), got {value}")
        self.strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
        self.generator = generator

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        _check_float_image(image, "PhotometricJitter")
        result = image.clone()
        order = torch.randperm(3, generator=self.generator).tolist()
        names = list(self.strengths)
        for position in order:
            name = names[position]
            strength = self.strengths[name]
            factor = 1.0 + strength * (2 * float(torch.rand((), generator=self.generator)) - 1)
            if name == "brightness":
                result = result * factor
            elif name == "contrast":
                grey = _grey(result).mean() if result.shape[0] == 3 else result.mean()
                result = (result - grey) * factor + grey
            elif result.shape[0] == 3:
                grey = _grey(result)[None]
                result = (result - grey) * factor + grey
        return result.clamp(0.0, 1.0), copy_target(target)

    def __repr__(self) -> str:
        return "PhotometricJitter({})".format(", ".join(f"{k}={v}" for k, v in self.strengths.items()))


def _grey(image: Tensor) -> Tensor:
    return 0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]


class Normalize:
    """``(image - mean) / std`` per channel (defaults: the ImageNet statistics); boxes untouched."""

    def __init__(
        self, mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225)
    ) -> None:
        if any(s <= 0 or not math.isfinite(s) for s in std):
            raise ValueError(f"Normalize: std must be positive and finite, got {list(std)}")
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, image: Tensor, target: Target) -> tuple[Tensor, Target]:
        _check_float_image(image, "Normalize")
        if image.shape[0] != len(self.mean):
            raise ValueError(
                f"Normalize: image has {image.shape[0]} channels, mean/std have {len(self.mean)}"
            )
        mean = torch.tensor(self.mean, dtype=image.dtype)[:, None, None]
        std = torch.tensor(self.std, dtype=image.dtype)[:, None, None]
        return (image - mean) / std, copy_target(target)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean}, std={self.std})"


def collate_detection(batch: Sequence[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """``DataLoader`` collate for images of different sizes: ``(list of images, list of targets)``.

    Example:
        >>> images, targets = collate_detection([(torch.rand(3, 4, 5), {}), (torch.rand(3, 6, 2), {})])
        >>> [tuple(i.shape) for i in images]
        [(3, 4, 5), (3, 6, 2)]
    """
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    return images, targets
