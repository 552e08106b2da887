"""``shapes`` for semantic segmentation: the detection generator's images with a per-pixel class mask
(0 background, 1 circle, 2 square, 3 triangle) in which a shape drawn later hides the ones below it —
the mask is built from the *visible* pixels of each shape, so occlusion order is respected exactly.

Example:
    >>> dataset = ShapesSegmentation(4, seed=0)
    >>> image, mask = dataset[0]
    >>> image.shape, mask.shape, mask.dtype
    (torch.Size([3, 128, 128]), torch.Size([128, 128]), torch.int64)
    >>> dataset.class_names
    ('background', 'circle', 'square', 'triangle')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from visionkit.data.segmentation.base import SegmentationDataset
from visionkit.data.segmentation.masks import write_mask_png
from visionkit.data.shapes import SHAPE_CLASSES, ShapesConfig, render_shapes

__all__ = ["SEGMENTATION_CLASSES", "ShapesSegmentation", "export_shapes_segmentation", "shapes_mask"]

SEGMENTATION_CLASSES = ("background", *SHAPE_CLASSES)


def shapes_mask(sample: dict[str, Any]) -> np.ndarray:
    """The class mask ``[H, W]`` int64 of one :func:`~visionkit.data.shapes.render_shapes` sample: its visible
    masks are disjoint (each shape loses the pixels of the shapes drawn after it), so each pixel gets the
    class of the shape seen there, or 0."""
    masks, labels = sample["masks"], sample["labels"]
    mask = np.zeros(sample["image"].shape[:2], dtype=np.int64)
    for visible, label in zip(masks, labels, strict=True):
        mask[visible] = int(label) + 1
    return mask


class ShapesSegmentation(SegmentationDataset):
    """``num_images`` ``shapes`` images drawn from ``seed`` as ``(image, mask)``: image float32 ``[3, H, W]``
    in ``[0, 1]``, mask int64 ``[H, W]`` (classes of :data:`SEGMENTATION_CLASSES`).

    Args:
        num_images: dataset length.
        seed: one per split (independent images).
        config: the drawing settings of :class:`~visionkit.data.shapes.ShapesConfig`.
        transforms: optional joint ``(image, mask) -> (image, mask)``.
    """

    class_names = SEGMENTATION_CLASSES

    def __init__(
        self, num_images: int = 512, seed: int = 0, config: ShapesConfig | None = None, transforms: Any = None
    ) -> None:
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        self.num_images, self.seed = num_images, seed
        self.config = config or ShapesConfig()
        self.transforms = transforms
        self.skipped = []

    def __len__(self) -> int:
        return self.num_images

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The uint8 image ``[H, W, 3]`` and the int64 mask ``[H, W]`` of item ``index`` (untransformed)."""
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        drawn = render_shapes(index, self.seed, self.config)
        return drawn["image"], shapes_mask(drawn)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        image, mask = self.sample(index)
        return torch.from_numpy(image).permute(2, 0, 1).float().div(255.0), torch.from_numpy(mask)


def export_shapes_segmentation(
    dataset: ShapesSegmentation, out_dir: str | Path, image_set: str = "all"
) -> Path:
    """Write ``dataset`` in the VOC segmentation layout that
    :class:`~visionkit.data.segmentation.VocSegmentation` reads: ``JPEGImages/<id>.png`` (lossless),
    ``SegmentationClass/<id>.png`` (VOC palette PNGs), ``ImageSets/Segmentation/<image_set>.txt`` and
    ``classes.txt``. Returns ``out_dir``.

    Example:
        >>> root = export_shapes_segmentation(ShapesSegmentation(4), "shapes-voc")
        >>> sorted(p.name for p in (root / "SegmentationClass").iterdir())[:2]
        ['000000.png', '000001.png']
    """
    root = Path(out_dir)
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(len(dataset)):
        image, mask = dataset.sample(index)
        name = f"{index:06d}"
        Image.fromarray(image).save(root / "JPEGImages" / f"{name}.png")
        write_mask_png(mask, root / "SegmentationClass" / f"{name}.png")
        names.append(name)
    (root / "ImageSets" / "Segmentation" / f"{image_set}.txt").write_text("\n".join(names) + "\n", "utf-8")
    (root / "classes.txt").write_text("\n".join(dataset.class_names) + "\n", "utf-8")
    return root
