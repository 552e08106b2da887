"""The data of a detection run: ``shapes`` (generated, no download) or a COCO / VOC / YOLO dataset, with
the recipe's training augmentation (scale jitter, mosaic, flips) and a one-line scan summary.

Example:
    >>> from visionkit.engine.detect.recipe import DetectRecipe
    >>> data = build_datasets(DetectRecipe(num_train=4, num_val=2))
    >>> len(data.train), len(data.val), data.label_map.names
    (4, 2, ('circle', 'square', 'triangle'))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from visionkit.data.augment import Mosaic, RandomScale
from visionkit.data.datasets import LabelMap, is_data_yaml, read_annotations, read_data_yaml
from visionkit.data.datasets.base import DetectionDataset
from visionkit.data.shapes import ShapesConfig, ShapesDataset
from visionkit.data.transforms import Compose, RandomHorizontalFlip
from visionkit.engine.detect.recipe import DetectRecipe
from visionkit.errors import ConfigError, DatasetError

__all__ = ["DetectionData", "build_datasets", "detect_format", "shapes_config"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class DetectionData:
    """The training and validation sets of a run, their label map, and what a scan found."""

    train: Dataset
    val: Dataset
    label_map: LabelMap
    skipped: list[str] = field(default_factory=list)
    scan: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """``train 1280 images (3212 objects, 0 empty), val 128 images; skipped 0 unreadable``."""
        parts = [f"train {len(self.train)} images", f"val {len(self.val)} images"]  # type: ignore[arg-type]
        if self.scan:
            parts[0] += f" ({self.scan['objects']} objects, {self.scan['empty']} empty)"
        return ", ".join(parts) + f"; skipped {len(self.skipped)} unreadable"


def shapes_config(recipe: DetectRecipe) -> ShapesConfig:
    """The ``shapes`` drawing settings of a recipe (object sizes scale with ``image_size``)."""
    if recipe.crowded:
        return ShapesConfig.crowded_preset(recipe.image_size)
    scale = recipe.image_size / 128
    return ShapesConfig(
        image_size=recipe.image_size, min_size=max(4, round(16 * scale)), max_size=round(48 * scale)
    )


def detect_format(path: str | Path) -> str:
    """``coco`` (a ``.json`` file), ``yaml`` (an ultralytics ``data.yaml``), ``voc`` (a folder with
    ``Annotations/``) or ``yolo`` (a folder with ``images/`` + ``labels/``, or of images with ``.txt``
    labels beside them)."""
    source = Path(path)
    if source.is_file() and source.suffix.lower() == ".json":
        return "coco"
    if source.is_file() and is_data_yaml(source):
        return "yaml"
    if source.is_dir():
        if (source / "Annotations").is_dir():
            return "voc"
        if (source / "images").is_dir() or any(p.suffix.lower() in _IMAGE_SUFFIXES for p in source.iterdir()):
            return "yolo"
    if not source.exists():
        raise DatasetError(f"data={str(path)!r}: no such file or folder")
    raise DatasetError(
        f"data={str(path)!r}: cannot tell its format (a COCO .json file, a VOC folder with Annotations/, or "
        "a YOLO folder with images/ and labels/); give data_format=coco|voc|yolo"
    )


def _augmentation(recipe: DetectRecipe) -> Compose:
    steps: list[Any] = []
    if recipe.scale_jitter:
        low, high = recipe.scale_jitter
        steps.append(
            RandomScale((low, high), max_size=recipe.image_size if recipe.data == "shapes" else None)
        )
    if recipe.hflip > 0:
        steps.append(RandomHorizontalFlip(recipe.hflip))
    return Compose(steps)


def _file_dataset(
    path: str, data_format: str, recipe: DetectRecipe, transforms: Any = None, split: str = "train"
) -> DetectionDataset:
    """A COCO/VOC/YOLO dataset (or a data.yaml's ``split``) with images; a :class:`DatasetError` naming
    ``path`` when it has none."""
    kind = detect_format(path) if data_format == "auto" else data_format
    if kind == "yaml":
        annotations = read_data_yaml(path, split, on_corrupt=recipe.on_corrupt)
    else:
        annotations = read_annotations(path, kind)
    if annotations.image_root is None:
        raise DatasetError(f"{path}: no image folder found (for COCO put the images in 'images/' beside it)")
    dataset = DetectionDataset(annotations, transforms=transforms, on_corrupt=recipe.on_corrupt)
    if len(dataset) == 0:
        raise DatasetError(f"{path}: no images in this {kind} dataset")
    return dataset


def build_datasets(recipe: DetectRecipe) -> DetectionData:
    """Training set (augmented per the recipe), validation set and label map of ``recipe``."""
    augment = _augmentation(recipe)
    parts: list[Any]
    if recipe.data == "shapes":
        config = shapes_config(recipe)
        parts = [ShapesDataset(recipe.num_train, seed=recipe.seed, config=config)]
        if recipe.num_crowded:
            crowded = ShapesConfig.crowded_preset(recipe.image_size)
            parts.append(ShapesDataset(recipe.num_crowded, seed=recipe.seed + 1, config=crowded))
        val: Dataset = ShapesDataset(recipe.num_val, seed=recipe.seed + 1000, config=config)
        label_map = parts[0].label_map
        skipped: list[str] = []
        scan: dict[str, int] = {}
    else:
        base = _file_dataset(recipe.data, recipe.data_format, recipe)
        parts = [base]
        label_map, skipped = base.label_map, list(base.skipped)
        records = base.records
        scan = {
            "objects": sum(r.num_objects for r in records),
            "empty": sum(r.num_objects == 0 for r in records),
        }
        yaml_val = not recipe.val_data and detect_format(recipe.data) == "yaml"
        if recipe.val_data or yaml_val:
            source = recipe.val_data or recipe.data
            val = _file_dataset(source, recipe.data_format, recipe, split="val")
            if val.label_map.names != label_map.names:
                raise ConfigError(
                    f"val_data={recipe.val_data!r}: its classes {val.label_map.names} differ from "
                    f"the training set's {label_map.names}"
                )
            skipped += val.skipped
        else:
            val = DetectionDataset(base.annotations)
    train: Dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    if recipe.mosaic > 0:
        train = Mosaic(train, recipe.mosaic, transforms=augment)
    else:
        for part in parts:
            part.transforms = augment
    return DetectionData(train, val, label_map, skipped, scan)
