"""The data of a segmentation run: ``shapes`` (generated) or a VOC / COCO dataset, with the recipe's
training augmentation (scale jitter, random crop padded with void, flips).

Example:
    >>> from visionkit.engine.segment.recipe import SegmentRecipe
    >>> data = build_datasets(SegmentRecipe(num_train=4, num_val=2))
    >>> len(data.train), len(data.val), data.label_map.names
    (4, 2, ('background', 'circle', 'square', 'triangle'))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from visionkit.data.datasets import LabelMap
from visionkit.data.segmentation import (
    CocoSegmentation,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    ShapesSegmentation,
    VocSegmentation,
)
from visionkit.data.shapes import ShapesConfig
from visionkit.data.transforms import Compose
from visionkit.engine.segment.recipe import SegmentRecipe, data_source
from visionkit.errors import ConfigError, DatasetError

__all__ = ["SegmentationData", "build_datasets", "shapes_config"]


@dataclass
class SegmentationData:
    """The training and validation sets of a run, their classes (background first) and what was skipped."""

    train: Dataset
    val: Dataset
    label_map: LabelMap
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """``train 512 images, val 128 images, 4 classes; skipped 0 unreadable``."""
        return (
            f"train {len(self.train)} images, val {len(self.val)} images, "  # type: ignore[arg-type]
            f"{self.label_map.num_classes} classes; skipped {len(self.skipped)} unreadable"
        )


def shapes_config(image_size: int) -> ShapesConfig:
    """The ``shapes`` drawing settings at ``image_size`` (object sizes scale with it, as in detection)."""
    scale = image_size / 128
    return ShapesConfig(image_size=image_size, min_size=max(4, round(16 * scale)), max_size=round(48 * scale))


def _augmentation(recipe: SegmentRecipe) -> Compose:
    steps: list[Any] = []
    if recipe.scale_jitter:
        low, high = recipe.scale_jitter
        steps.append(RandomScale(low, high))
    if recipe.crop_size:
        steps.append(RandomCrop(recipe.crop_size))
    if recipe.hflip > 0:
        steps.append(RandomHorizontalFlip(recipe.hflip))
    return Compose(steps)


def _file_dataset(
    text: str, key: str, recipe: SegmentRecipe, image_set: str
) -> VocSegmentation | CocoSegmentation:
    kind, path = data_source(text, key)
    if kind == "voc":
        if not path.is_dir():
            raise DatasetError(f"{key}={text!r}: no such folder")
        return VocSegmentation(path, image_set or None, on_corrupt=recipe.on_corrupt)
    if not path.is_file():
        raise DatasetError(f"{key}={text!r}: no such file")
    images = Path(recipe.image_root) if recipe.image_root else path.parent / "images"
    dataset = CocoSegmentation(path, images, on_corrupt=recipe.on_corrupt)
    if len(dataset) == 0:
        raise DatasetError(f"{key}={text!r}: no images in this COCO file")
    return dataset


def _label_map(dataset: VocSegmentation | CocoSegmentation) -> LabelMap:
    if isinstance(dataset, CocoSegmentation):
        return dataset.label_map
    return LabelMap(tuple(range(len(dataset.class_names))), dataset.class_names)


def build_datasets(recipe: SegmentRecipe) -> SegmentationData:
    """Training set (augmented per the recipe), validation set and classes of ``recipe``."""
    augment = _augmentation(recipe)
    if recipe.data == "shapes":
        config = shapes_config(recipe.image_size)
        train = ShapesSegmentation(recipe.num_train, recipe.seed, config, transforms=augment)
        names = ShapesSegmentation.class_names
        shapes_val = ShapesSegmentation(recipe.num_val, recipe.seed + 1000, config)
        return SegmentationData(train, shapes_val, LabelMap(tuple(range(len(names))), names))
    base = _file_dataset(recipe.data, "data", recipe, recipe.image_set)
    label_map, skipped = _label_map(base), list(base.skipped)
    if recipe.val_image_set:
        val = _file_dataset(recipe.data, "data", recipe, recipe.val_image_set)
    elif recipe.val_data:
        val = _file_dataset(recipe.val_data, "val_data", recipe, "")
    else:
        val = _file_dataset(recipe.data, "data", recipe, recipe.image_set)  # the training images, unaugmented
    if _label_map(val).names != label_map.names:
        raise ConfigError(
            f"val_data={recipe.val_data!r}: its classes {list(_label_map(val).names)} differ from the "
            f"training set's {list(label_map.names)}"
        )
    skipped += [path for path in val.skipped if path not in skipped]
    base.transforms = augment
    return SegmentationData(base, val, label_map, skipped)
