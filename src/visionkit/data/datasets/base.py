"""The dataset class shared by the COCO, VOC and YOLO loaders: lazy image reading, targets, transforms."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from visionkit.data.datasets.labelmap import LabelMap
from visionkit.data.datasets.records import AnnotationSet, DatasetError, ImageRecord, apply_bounds

__all__ = ["DetectionDataset", "read_image", "record_to_target"]

Target = dict[str, Any]
Transform = Callable[[Tensor, Target], tuple[Tensor, Target]]


def read_image(path: str | Path, index: int | None = None) -> Tensor:
    """Read an image file as an RGB ``Tensor[3, H, W]`` float32 in ``[0, 1]`` (Pillow).

    Grey and palette images are converted to RGB; the EXIF orientation is *not* applied, because
    COCO/VOC/YOLO boxes are given in the stored pixel grid.

    Raises:
        DatasetError: the file is missing, not an image, or truncated; names the path (and index).

    Example:
        >>> from PIL import Image
        >>> Image.new("RGB", (640, 480), (255, 51, 0)).save("photo.png")
        >>> image = read_image("photo.png")
        >>> image.shape, image.dtype, image[:, 0, 0].tolist()
        (torch.Size([3, 480, 640]), torch.float32, [1.0, 0.20000000298023224, 0.0])
    """
    try:
        with Image.open(path) as image:
            image.load()  # decodes now, so a truncated file fails here and not later
            rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        where = f"image {index} " if index is not None else "image "
        raise DatasetError(f"cannot read {where}{str(path)!r}: {error}") from error
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def record_to_target(record: ImageRecord) -> Target:
    """A fresh target dict (new tensors) for ``record``: boxes float32 [N, 4] xyxy, labels int64 [N],
    iscrowd int64 [N], difficult int64 [N], area float32 [N], image_id int."""
    return {
        "boxes": record.boxes.to(torch.float32),
        "labels": record.labels.clone(),
        "iscrowd": record.iscrowd.clone(),
        "difficult": record.difficult.clone(),
        "area": record.area.to(torch.float32),
        "image_id": record.image_id,
    }


class DetectionDataset(Dataset[tuple[Tensor, Target]]):
    """Images read lazily from disk with their annotations, as ``(image, target)`` pairs.

    ``image`` is ``Tensor[3, H, W]`` float32 in ``[0, 1]``; ``target`` is the dict of
    :func:`record_to_target` (an image without objects gives boxes ``(0, 4)`` and labels ``(0,)``,
    a valid negative sample). Every call returns new tensors, so a transform or a caller can never
    change the dataset.

    Args:
        annotations: what a reader returned (:func:`read_coco`, :func:`read_voc`, :func:`read_yolo`).
        transforms: optional ``(image, target) -> (image, target)`` callable.
        out_of_bounds: ``"clip"`` boxes leaving the image (one summary warning) or ``"raise"``.
        on_corrupt: ``"raise"`` a :class:`DatasetError` naming path and index when an image cannot be
            read, or ``"skip"``: read every image once now and leave out the unreadable ones, counting
            them in :attr:`skipped` (one warning).

    Example:
        >>> from visionkit.data.datasets import CocoDetection
        >>> from visionkit.data.shapes import ShapesDataset, export_shapes
        >>> instances = export_shapes(ShapesDataset(2), "shapes", ("coco",))["coco"]  # + images/ beside it
        >>> dataset = CocoDetection(instances.parent / "images", instances)
        >>> image, target = dataset[0]
        >>> image.shape, target["boxes"].shape[1], target["labels"].dtype
        (torch.Size([3, 128, 128]), 4, torch.int64)
    """

    def __init__(
        self,
        annotations: AnnotationSet,
        *,
        transforms: Transform | None = None,
        out_of_bounds: str = "clip",
        on_corrupt: str = "raise",
    ) -> None:
        if on_corrupt not in ("raise", "skip"):
            raise ValueError(f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}")
        if annotations.image_root is None:
            raise ValueError("annotations.image_root is None: the dataset needs to know where images are")
        annotations = apply_bounds(annotations, out_of_bounds)
        if on_corrupt == "skip":
            annotations = self._without_unreadable(annotations)
        self.annotations = annotations
        self.transforms = transforms

    @staticmethod
    def _without_unreadable(annotations: AnnotationSet) -> AnnotationSet:
        kept, skipped = [], list(annotations.skipped)
        for index, record in enumerate(annotations.records):
            try:
                read_image(annotations.image_path(index), index)
                kept.append(record)
            except DatasetError:
                skipped.append(str(annotations.image_path(index)))
        if len(skipped) > len(annotations.skipped):
            warnings.warn(
                f"skipped {len(skipped) - len(annotations.skipped)} unreadable images, e.g. {skipped[-1]}",
                stacklevel=3,
            )
        return replace(annotations, records=kept, skipped=skipped)

    @property
    def label_map(self) -> LabelMap:
        return self.annotations.label_map

    @property
    def skipped(self) -> list[str]:
        """Paths of images left out as unreadable (``on_corrupt="skip"``)."""
        return self.annotations.skipped

    @property
    def records(self) -> list[ImageRecord]:
        return self.annotations.records

    def __len__(self) -> int:
        return len(self.annotations.records)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        index = index % len(self)
        record = self.annotations.records[index]
        path = self.annotations.image_path(index)
        image = read_image(path, index)
        if tuple(image.shape[1:]) != (record.height, record.width):
            raise DatasetError(
                f"image {index} {str(path)!r} is {image.shape[2]}x{image.shape[1]} but its annotation "
                f"({record.source}) says {record.width}x{record.height}"
            )
        target = record_to_target(record)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
