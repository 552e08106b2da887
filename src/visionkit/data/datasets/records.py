"""Format-neutral annotations: what the COCO, VOC and YOLO readers produce and the writers consume.

Boxes are kept in float64 xyxy absolute pixels (continuous coordinates: a box covering pixel columns
0..9 is ``x1=0, x2=10``) so that conversions between formats lose nothing beyond each format's own
precision; the datasets hand them out as float32.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from visionkit.data.datasets.labelmap import LabelMap
from visionkit.errors import DatasetError

__all__ = [
    "AnnotationSet",
    "DatasetError",
    "ImageRecord",
    "apply_bounds",
    "image_ids_from_names",
    "make_record",
]

#: tolerance (pixels) under which a box coordinate past the image border is float noise, clipped silently
BORDER_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ImageRecord:
    """One image and its objects.

    Attributes:
        file_name: image path relative to the image root (may contain sub-folders).
        image_id: integer image id (COCO id, or derived from the file name).
        width, height: image size in pixels.
        boxes: ``Tensor[N, 4]`` float64 xyxy absolute pixels.
        labels: ``Tensor[N]`` int64 contiguous labels ``0 .. K-1``.
        iscrowd: ``Tensor[N]`` int64, 1 for COCO crowd regions (kept, flagged).
        difficult: ``Tensor[N]`` int64, 1 for VOC difficult objects.
        area: ``Tensor[N]`` float64 (COCO: the file's area, usually the mask's; otherwise the box's).
        source: the annotation file (for error messages).
    """

    file_name: str
    image_id: int
    width: int
    height: int
    boxes: Tensor
    labels: Tensor
    iscrowd: Tensor
    difficult: Tensor
    area: Tensor
    source: str = ""

    @property
    def num_objects(self) -> int:
        return int(self.boxes.shape[0])


def make_record(
    file_name: str,
    image_id: int,
    width: int,
    height: int,
    boxes: Sequence[Sequence[float]] | Tensor,
    labels: Sequence[int] | Tensor,
    *,
    iscrowd: Sequence[int] | Tensor | None = None,
    difficult: Sequence[int] | Tensor | None = None,
    area: Sequence[float] | Tensor | None = None,
    source: str = "",
) -> ImageRecord:
    """Build an :class:`ImageRecord` with the documented dtypes; missing fields default to 0 / box area.

    Example:
        >>> make_record("a.png", 1, 8, 8, [[0, 0, 4, 2]], [0]).area
        tensor([8.], dtype=torch.float64)
    """
    box_tensor = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    count = box_tensor.shape[0]

    def column(values: Sequence[float] | Tensor | None, dtype: torch.dtype) -> Tensor:
        if values is None:
            return torch.zeros(count, dtype=dtype)
        tensor = torch.as_tensor(values, dtype=dtype).reshape(-1)
        if tensor.shape[0] != count:
            raise ValueError(f"{file_name}: {count} boxes but {tensor.shape[0]} values in a per-box column")
        return tensor

    if area is None:
        area = (box_tensor[:, 2] - box_tensor[:, 0]).clamp(min=0) * (
            box_tensor[:, 3] - box_tensor[:, 1]
        ).clamp(min=0)
    return ImageRecord(
        file_name=str(file_name),
        image_id=int(image_id),
        width=int(width),
        height=int(height),
        boxes=box_tensor,
        labels=column(labels, torch.int64),
        iscrowd=column(iscrowd, torch.int64),
        difficult=column(difficult, torch.int64),
        area=column(area, torch.float64),
        source=str(source),
    )


@dataclass
class AnnotationSet:
    """A whole dataset's annotations: records, the label map and where the images live.

    Attributes:
        records: one :class:`ImageRecord` per image, in dataset order.
        label_map: contiguous labels ↔ category ids and names.
        image_root: folder that ``record.file_name`` is relative to (``None`` when unknown).
        skipped: image paths that were skipped as unreadable (only with ``on_corrupt="skip"``).
    """

    records: list[ImageRecord]
    label_map: LabelMap
    image_root: Path | None = None
    skipped: list[str] = field(default_factory=list)

    def image_path(self, index: int) -> Path:
        record = self.records[index]
        return (self.image_root or Path(".")) / record.file_name

    @property
    def num_objects(self) -> int:
        return sum(record.num_objects for record in self.records)


def image_ids_from_names(file_names: Sequence[str]) -> list[int]:
    """Image ids for formats without ids (VOC, YOLO): the file stem when every stem is a distinct
    integer (``000000000009.jpg`` → 9, as in COCO), else the position in the sorted list."""
    stems = [Path(name).stem for name in file_names]
    if stems and all(stem.isdigit() for stem in stems) and len({int(s) for s in stems}) == len(stems):
        return [int(stem) for stem in stems]
    return list(range(len(file_names)))


def _out_of_bounds(record: ImageRecord) -> Tensor:
    boxes, tol = record.boxes, BORDER_TOLERANCE
    return (
        (boxes[:, 0] < -tol)
        | (boxes[:, 1] < -tol)
        | (boxes[:, 2] > record.width + tol)
        | (boxes[:, 3] > record.height + tol)
    )


def _non_finite_check(record: ImageRecord) -> None:
    if not bool(torch.isfinite(record.boxes).all()):
        row = int((~torch.isfinite(record.boxes)).any(dim=1).nonzero()[0])
        raise DatasetError(
            f"{record.source or record.file_name}: image {record.file_name!r} box {row} has a non-finite "
            f"coordinate {record.boxes[row].tolist()}"
        )


def apply_bounds(annotations: AnnotationSet, out_of_bounds: str = "clip") -> AnnotationSet:
    """Clip boxes to their image (``"clip"``, one summary warning) or reject them (``"raise"``).

    Either way, coordinates within :data:`BORDER_TOLERANCE` px of the border are clipped silently, and
    boxes left with zero width or height (degenerate in the file, or wholly outside the image) are
    dropped with a summary warning: a detector cannot learn from them and raises on them.

    Raises:
        DatasetError: ``out_of_bounds="raise"`` and a box leaves its image (names file and values), or a
            coordinate is NaN/Inf.
    """
    if out_of_bounds not in ("clip", "raise"):
        raise ValueError(f"out_of_bounds must be 'clip' or 'raise', got {out_of_bounds!r}")
    clipped = dropped = 0
    records = []
    for record in annotations.records:
        _non_finite_check(record)
        outside = _out_of_bounds(record)
        if bool(outside.any()):
            if out_of_bounds == "raise":
                row = int(outside.nonzero()[0])
                raise DatasetError(
                    f"{record.source or record.file_name}: image {record.file_name!r} "
                    f"({record.width}x{record.height}) box {row} {record.boxes[row].tolist()} "
                    "lies outside the image (use out_of_bounds='clip' to clip it)"
                )
            clipped += int(outside.sum())
        boxes = record.boxes.clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, record.width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, record.height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        dropped += int((~keep).sum())
        if not bool(keep.all()) or not torch.equal(boxes, record.boxes):
            area = torch.where(
                outside, (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), record.area
            )
            record = replace(
                record,
                boxes=boxes[keep],
                labels=record.labels[keep],
                iscrowd=record.iscrowd[keep],
                difficult=record.difficult[keep],
                area=area[keep],
            )
        records.append(record)
    if clipped:
        warnings.warn(f"clipped {clipped} boxes that extended outside their image", stacklevel=2)
    if dropped:
        warnings.warn(
            f"dropped {dropped} boxes with zero width or height (degenerate or outside the image)",
            stacklevel=2,
        )
    return replace(annotations, records=records)


def finite_float(value: object, where: str) -> float:
    """``float(value)`` that must be finite; ``DatasetError`` naming ``where`` otherwise."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise DatasetError(f"{where}: expected a finite number, got {value!r}")
    return number
