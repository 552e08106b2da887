"""COCO instance annotations rasterised to semantic masks: class ``k + 1`` for the contiguous label ``k`` of
each object's category, 0 for background, 255 (ignored) where objects of two classes overlap and over crowd
regions (``iscrowd=1``) — torchvision's COCO segmentation reference also voids overlaps.

Polygons are filled by the even–odd rule tested at pixel centres: pixel ``(x, y)`` is inside when
``(x + 0.5, y + 0.5)`` is (COCO coordinates put pixel ``x`` on ``[x, x + 1]``). Run-length encodings —
``counts`` as a list, or COCO's compressed string — are decoded column-major, as pycocotools does (equal
bit for bit; the tests compare).

Example:
    >>> square = rasterize_polygons([[1, 1, 4, 1, 4, 4, 1, 4]], height=5, width=6)
    >>> square.astype(int)
    array([[0, 0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0, 0],
           [0, 1, 1, 1, 0, 0],
           [0, 1, 1, 1, 0, 0],
           [0, 0, 0, 0, 0, 0]])
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from visionkit.data.datasets import LabelMap, read_coco, read_image
from visionkit.data.segmentation.base import SegmentationDataset
from visionkit.data.segmentation.masks import IGNORE_INDEX
from visionkit.errors import DatasetError

__all__ = ["CocoSegmentation", "decode_rle", "rasterize_polygons", "semantic_mask"]


def rasterize_polygons(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    """Bool ``[height, width]``: the union of the polygons (flat ``[x1, y1, x2, y2, ...]`` lists), each
    filled by the even–odd rule at pixel centres (a horizontal ray from each centre, within the polygon's
    bounding box)."""
    inside = np.zeros((height, width), dtype=bool)
    for polygon in polygons:
        points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
        if len(points) < 3:
            continue
        top, bottom = max(int(np.floor(points[:, 1].min())), 0), min(int(np.ceil(points[:, 1].max())), height)
        left, right = max(int(np.floor(points[:, 0].min())), 0), min(int(np.ceil(points[:, 0].max())), width)
        if top >= bottom or left >= right:
            continue
        centres_y = np.arange(top, bottom, dtype=np.float64)[:, None] + 0.5
        centres_x = np.arange(left, right, dtype=np.float64)[None, :] + 0.5
        odd = np.zeros((bottom - top, right - left), dtype=bool)
        for (x1, y1), (x2, y2) in zip(points, np.roll(points, -1, axis=0), strict=True):
            if y1 == y2:
                continue  # a horizontal edge is crossed by no horizontal ray through a centre off it
            spans = (y1 > centres_y) != (y2 > centres_y)
            crossing = x1 + (centres_y - y1) * (x2 - x1) / (y2 - y1)
            odd ^= spans & (centres_x < crossing)
        inside[top:bottom, left:right] |= odd
    return inside


def _string_counts(text: str) -> list[int]:
    """COCO's compressed RLE string: 5-bit groups in characters ``48 + value`` (bit 5 = more follows, bit
    4 of the last = sign); from the fourth count on, each is stored as the difference to the one two back."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            code = ord(text[position]) - 48
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Bool ``[h, w]`` of a COCO run-length encoding ``{"size": [h, w], "counts": list or str}``: runs of
    0s and 1s alternating, starting with 0s, over the pixels in column-major order."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    counts = _string_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(c < 0 for c in counts) or sum(counts) != height * width:
        raise ValueError(f"RLE counts sum to {sum(counts)} (need {height}×{width}) or are negative")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, counts)
    return flat.reshape(width, height).T


def _object_mask(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    if isinstance(segmentation, list):
        return rasterize_polygons(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if [int(v) for v in segmentation["size"]] != [height, width]:
            raise DatasetError(
                f"{where}: RLE size {segmentation['size']} differs from the image's {[height, width]}"
            )
        try:
            return decode_rle(segmentation)
        except ValueError as error:
            raise DatasetError(f"{where}: {error}") from None
    raise DatasetError(
        f"{where}: 'segmentation' must be polygons or an RLE dict, got {str(segmentation)[:60]}"
    )


def semantic_mask(
    objects: Sequence[dict[str, Any]], label_map: LabelMap, height: int, width: int, where: str
) -> Tensor:
    """The int64 ``[height, width]`` class mask of one image's COCO annotations (see the module docstring);
    ``label_map`` maps mask values to category ids, background (value 0) first."""
    mask = np.zeros((height, width), dtype=np.int64)
    crowd = np.zeros((height, width), dtype=bool)
    for annotation in objects:
        if "segmentation" not in annotation:
            raise DatasetError(f"{where}: annotation id {annotation.get('id')} has no 'segmentation'")
        pixels = _object_mask(
            annotation["segmentation"], height, width, f"{where}: annotation id {annotation['id']}"
        )
        if annotation.get("iscrowd", 0):
            crowd |= pixels
            continue
        value = label_map.label_of(annotation["category_id"])
        conflict = pixels & (mask != 0) & (mask != value)
        mask[pixels & (mask == 0)] = value
        mask[conflict] = IGNORE_INDEX
    mask[crowd & (mask == 0)] = IGNORE_INDEX
    return torch.from_numpy(mask)


class CocoSegmentation(SegmentationDataset):
    """A COCO instances JSON with its images as ``(image, mask)`` (see :func:`semantic_mask`).

    ``class_names`` are ``background`` then the categories in sorted-id order; :attr:`label_map` maps
    mask values to COCO category ids (background: 0).

    Args:
        annotation_file: the instances JSON (validated by :func:`~visionkit.data.datasets.read_coco`).
        image_root: the folder the JSON's ``file_name`` entries are relative to.
        transforms: optional joint ``(image, mask) -> (image, mask)``.
        on_corrupt: ``"raise"`` (default) or ``"skip"``: read every image once now and leave out those
            that fail, listed in :attr:`skipped`.
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_root: str | Path,
        *,
        transforms: Any = None,
        on_corrupt: str = "raise",
    ) -> None:
        self.annotation_file, self.image_root = Path(annotation_file), Path(image_root)
        if not self.image_root.is_dir():
            raise DatasetError(f"{self.annotation_file}: image folder {self.image_root} does not exist")
        annotations = read_coco(self.annotation_file, self.image_root)
        objects: dict[Any, list[dict]] = defaultdict(list)
        for annotation in json.loads(self.annotation_file.read_text(encoding="utf-8"))["annotations"]:
            objects[annotation["image_id"]].append(annotation)
        self.records = annotations.records
        self.objects = [objects.get(record.image_id, []) for record in self.records]
        coco = annotations.label_map
        self.label_map = LabelMap((0, *coco.category_ids), ("background", *coco.names))
        self.class_names = self.label_map.names
        self.transforms = transforms
        kept = self.readable_items(on_corrupt)
        self.records = [self.records[i] for i in kept]
        self.objects = [self.objects[i] for i in kept]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.records)

    def item_name(self, index: int) -> str:
        return str(self.image_root / self.records[index].file_name)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        """Image and rasterised mask of item ``index`` (untransformed)."""
        record = self.records[index]
        path = self.image_root / record.file_name
        image = read_image(path, index)
        if tuple(image.shape[1:]) != (record.height, record.width):
            raise DatasetError(
                f"image {str(path)!r} is {image.shape[2]}x{image.shape[1]} but {self.annotation_file} says "
                f"{record.width}x{record.height}"
            )
        where = f"{self.annotation_file} image id {record.image_id}"
        return image, semantic_mask(self.objects[index], self.label_map, record.height, record.width, where)
