"""``shapes``: the embedded, procedurally generated detection dataset (no download).

Each image shows circles, squares and triangles of several colours and sizes on a noisy background,
overlapping and partly hidden by one another. Everything is a pure function of ``(seed, index)``, so a
dataset is reproducible on any machine and items can be made in any order (and in DataLoader workers).

Boxes are exact: the pixel bounding box of each shape's own raster (the whole shape, also where a later
shape hides part of it: ``x2 = last column + 1``). Masks (optional) are the *visible* pixels. The
``class_weights`` knob makes classes imbalanced; ``crowded=True`` puts many overlapping objects of one
class in a cluster, the case where hard NMS removes true positives and Soft-NMS should not.

Example:
    >>> dataset = ShapesDataset(num_images=8, seed=0)
    >>> image, target = dataset[0]
    >>> image.shape, target["boxes"].dtype, dataset.label_map.names
    (torch.Size([3, 128, 128]), torch.float32, ('circle', 'square', 'triangle'))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from visionkit.data.datasets.convert import write_annotations
from visionkit.data.datasets.labelmap import LabelMap
from visionkit.data.datasets.records import AnnotationSet, make_record

__all__ = ["SHAPE_CLASSES", "ShapesConfig", "ShapesDataset", "export_shapes", "render_shapes"]

SHAPE_CLASSES = ("circle", "square", "triangle")
#: object colours (RGB); a shape's colour says nothing about its class
COLOURS = ((220, 40, 40), (40, 180, 60), (50, 80, 220), (230, 200, 40), (200, 60, 200), (40, 200, 210),
           (240, 140, 30), (245, 245, 245))  # fmt: skip


@dataclass(frozen=True)
class ShapesConfig:
    """How ``shapes`` images are drawn.

    Attributes:
        image_size: square image side in pixels.
        min_objects, max_objects: objects per image (uniform); ``min_objects=0`` allows negatives.
        min_size, max_size: shape side / diameter in pixels (uniform).
        class_weights: relative frequency of circle, square, triangle (the class-imbalance knob).
        max_occlusion: largest fraction of a shape that later shapes may hide.
        negative_fraction: fraction of images drawn with no objects at all.
        crowded: one class per image, ``min_objects..max_objects`` shapes clustered around one point.
        noise: standard deviation of the background and object pixel noise (0..1 scale).
    """

    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 4
    min_size: int = 16
    max_size: int = 48
    class_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    max_occlusion: float = 0.5
    negative_fraction: float = 0.0
    crowded: bool = False
    noise: float = 0.03

    def __post_init__(self) -> None:
        if not 0 <= self.min_objects <= self.max_objects:
            raise ValueError(
                f"need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        if not 4 <= self.min_size <= self.max_size <= self.image_size:
            raise ValueError(
                f"need 4 <= min_size <= max_size <= image_size, got {self.min_size}, {self.max_size}, "
                f"{self.image_size}"
            )
        weights = self.class_weights
        if len(weights) != len(SHAPE_CLASSES) or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"class_weights must be {len(SHAPE_CLASSES)} non-negative weights, got {weights}"
            )
        for name in ("max_occlusion", "negative_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @classmethod
    def crowded_preset(cls, image_size: int = 128) -> ShapesConfig:
        """Many overlapping same-class shapes per image: the Soft-NMS evaluation split."""
        return cls(image_size=image_size, min_objects=6, max_objects=12, min_size=18, max_size=30,
                   max_occlusion=0.7, crowded=True)  # fmt: skip


def _shape_mask(kind: int, left: int, top: int, size: int, image_size: int) -> np.ndarray:
    """Raster of one shape with its ``size``×``size`` frame at ``(left, top)``, tested at pixel centres."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    u, v = xs / size, ys / size  # frame coordinates in (0, 1)
    if kind == 0:  # circle
        local = (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    elif kind == 1:  # square
        local = np.ones((size, size), dtype=bool)
    else:  # triangle, apex up
        local = v >= 2 * np.abs(u - 0.5)
    mask = np.zeros((image_size, image_size), dtype=bool)
    mask[top : top + size, left : left + size] = local
    return mask


def _place(
    rng: np.random.Generator, config: ShapesConfig, cluster: tuple[float, float] | None
) -> tuple[int, int, int]:
    size = int(rng.integers(config.min_size, config.max_size + 1))
    limit = config.image_size - size
    if cluster is None:
        return int(rng.integers(0, limit + 1)), int(rng.integers(0, limit + 1)), size
    left, top = (np.asarray(cluster) - size / 2 + rng.normal(0.0, 0.45 * size, 2)).round()
    return int(np.clip(left, 0, limit)), int(np.clip(top, 0, limit)), size


def _layout(rng: np.random.Generator, config: ShapesConfig) -> tuple[list[int], list[np.ndarray]]:
    """Classes and full masks of the shapes, in drawing order, meeting the ``max_occlusion`` limit."""
    if rng.random() < config.negative_fraction:
        return [], []
    count = int(rng.integers(config.min_objects, config.max_objects + 1))
    probabilities = np.asarray(config.class_weights, dtype=np.float64) / sum(config.class_weights)
    cluster, crowd_class = None, None
    if config.crowded:
        margin = config.max_size
        cluster = tuple(rng.uniform(margin, config.image_size - margin, 2).tolist())
        crowd_class = int(rng.choice(len(SHAPE_CLASSES), p=probabilities))
    classes: list[int] = []
    masks: list[np.ndarray] = []
    for _ in range(count):
        for _attempt in range(20):
            kind = (
                crowd_class
                if crowd_class is not None
                else int(rng.choice(len(SHAPE_CLASSES), p=probabilities))
            )
            mask = _shape_mask(kind, *_place(rng, config, cluster), config.image_size)
            if _occlusion_ok([*masks, mask], config.max_occlusion):
                classes.append(kind)
                masks.append(mask)
                break
    return classes, masks


def _occlusion_ok(masks: list[np.ndarray], max_occlusion: float) -> bool:
    """Whether every shape keeps at least ``1 - max_occlusion`` of its pixels under the shapes drawn later."""
    union_after = np.zeros_like(masks[-1])
    for mask in reversed(masks):
        area = mask.sum()
        if area == 0 or (mask & union_after).sum() > max_occlusion * area:
            return False
        union_after |= mask
    return True


def render_shapes(index: int, seed: int = 0, config: ShapesConfig | None = None) -> dict[str, Any]:
    """Draw image ``index`` of the ``shapes`` dataset with ``seed``.

    Returns:
        dict with ``image`` uint8 ``[H, W, 3]`` array, ``boxes`` float64 ``[N, 4]`` xyxy pixels,
        ``labels`` int64 ``[N]`` (0 circle, 1 square, 2 triangle), ``masks`` bool ``[N, H, W]`` (visible).

    Example:
        >>> sample = render_shapes(3, seed=0)
        >>> sample["image"].shape, sample["image"].dtype
        ((128, 128, 3), dtype('uint8'))
    """
    config = config or ShapesConfig()
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    rng = np.random.default_rng([seed, index])
    size = config.image_size
    background = rng.uniform(0.2, 0.7) + rng.uniform(-0.08, 0.08, 3)  # a tinted grey: objects stand out
    image = background[None, None, :] + rng.normal(0.0, config.noise, (size, size, 3))
    classes, masks = _layout(rng, config)
    visible = [mask.copy() for mask in masks]
    boxes = []
    for position, mask in enumerate(masks):
        colour = np.asarray(COLOURS[int(rng.integers(len(COLOURS)))]) / 255.0
        image[mask] = colour + rng.normal(0.0, config.noise, (int(mask.sum()), 3))
        for earlier in visible[:position]:
            earlier &= ~mask
        rows, columns = np.nonzero(mask)
        boxes.append([columns.min(), rows.min(), columns.max() + 1, rows.max() + 1])
    return {
        "image": (image.clip(0.0, 1.0) * 255.0).round().astype(np.uint8),
        "boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        "labels": np.asarray(classes, dtype=np.int64),
        "masks": np.asarray(visible, dtype=bool).reshape(-1, size, size),
    }


class ShapesDataset(Dataset[tuple[Tensor, dict[str, Any]]]):
    """``num_images`` images of ``shapes`` drawn from ``seed``, as ``(image, target)`` pairs like the file
    datasets (image float32 ``[3, H, W]`` in ``[0, 1]``; target boxes/labels/iscrowd/difficult/area/image_id,
    plus ``masks`` bool ``[N, H, W]`` with ``with_masks=True``). ``image_id`` is the index.

    Args:
        num_images: dataset length.
        seed: different seeds give independent datasets (use one per split).
        config: drawing settings; :meth:`ShapesConfig.crowded_preset` for the crowded split.
        transforms: optional ``(image, target) -> (image, target)``.
        with_masks: include visible-pixel masks.
    """

    def __init__(
        self,
        num_images: int = 512,
        seed: int = 0,
        config: ShapesConfig | None = None,
        transforms: Any = None,
        with_masks: bool = False,
    ) -> None:
        if num_images < 0:
            raise ValueError(f"num_images must be >= 0, got {num_images}")
        self.num_images, self.seed = num_images, seed
        self.config = config or ShapesConfig()
        self.transforms, self.with_masks = transforms, with_masks
        self.label_map = LabelMap.from_names(SHAPE_CLASSES)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        sample = render_shapes(index, self.seed, self.config)
        image = torch.from_numpy(sample["image"]).permute(2, 0, 1).float().div(255.0)
        boxes = torch.from_numpy(sample["boxes"]).float()
        count = boxes.shape[0]
        target: dict[str, Any] = {
            "boxes": boxes,
            "labels": torch.from_numpy(sample["labels"]),
            "iscrowd": torch.zeros(count, dtype=torch.int64),
            "difficult": torch.zeros(count, dtype=torch.int64),
            "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
            "image_id": index,
        }
        if self.with_masks:
            target["masks"] = torch.from_numpy(sample["masks"])
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    @staticmethod
    def file_name(index: int) -> str:
        return f"{index:06d}.png"

    def to_annotations(self, image_root: str | Path | None = None) -> AnnotationSet:
        """The dataset's annotations as an :class:`AnnotationSet` (file names ``000000.png``, ...)."""
        size = self.config.image_size
        records = []
        for index in range(self.num_images):
            sample = render_shapes(index, self.seed, self.config)
            records.append(
                make_record(self.file_name(index), index, size, size, sample["boxes"], sample["labels"])
            )
        return AnnotationSet(records, self.label_map, Path(image_root) if image_root is not None else None)


def export_shapes(
    dataset: ShapesDataset, out_dir: str | Path, formats: tuple[str, ...] = ("coco",)
) -> dict[str, Path]:
    """Write ``dataset`` as PNG images plus annotations in each of ``formats`` under ``out_dir/<format>``.

    Returns:
        format → the folder written (what :func:`visionkit.data.datasets.read_annotations` takes, e.g.
        ``out/coco/annotations.json`` for COCO).

    Example:
        >>> paths = export_shapes(ShapesDataset(4), "shapes", ("coco", "voc", "yolo"))
        >>> paths["coco"].as_posix(), sorted(p.name for p in paths["yolo"].iterdir())
        ('shapes/coco/annotations.json', ['classes.txt', 'images', 'label_map.json', 'labels'])
    """
    annotations = dataset.to_annotations()
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    image_dirs = []
    for fmt in formats:
        image_dirs.append(write_annotations(annotations, out_dir / fmt, fmt, image_set="all"))
        written[fmt] = out_dir / fmt / "annotations.json" if fmt == "coco" else out_dir / fmt
    for folder in image_dirs:
        folder.mkdir(parents=True, exist_ok=True)
    for index in range(len(dataset)):
        image = Image.fromarray(render_shapes(index, dataset.seed, dataset.config)["image"])
        for folder in image_dirs:
            image.save(folder / dataset.file_name(index))
    return written
