"""COCO instances JSON: reader with validation, writer, and the :class:`CocoDetection` dataset."""

from __future__ import annotations

import json
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from visionkit.data.datasets.base import DetectionDataset, Transform
from visionkit.data.datasets.labelmap import LabelMap
from visionkit.data.datasets.records import AnnotationSet, DatasetError, finite_float, make_record

__all__ = ["CocoDetection", "read_coco", "write_coco"]


def _repeated(values: list[Any]) -> list[Any]:
    return sorted(value for value, count in Counter(values).items() if count > 1)


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"cannot read COCO file {path}: {error}") from error
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DatasetError(f"{path}: missing the {key!r} list")
    return data


def _check_ids(path: Path, images: list[dict], annotations: list[dict], label_map: LabelMap) -> None:
    for what, items in (("image", images), ("annotation", annotations)):
        for position, item in enumerate(items):
            if "id" not in item:
                raise DatasetError(f"{path}: {what} at position {position} has no 'id'")
        repeated = _repeated([item["id"] for item in items])
        if repeated:
            raise DatasetError(f"{path}: duplicate {what} ids {repeated[:20]}")
    image_ids = {image["id"] for image in images}
    unknown_images = sorted({a.get("image_id") for a in annotations} - image_ids, key=str)
    if unknown_images:
        raise DatasetError(f"{path}: annotations refer to unknown image ids {unknown_images[:20]}")
    known = set(label_map.category_ids)
    unknown = sorted({a.get("category_id") for a in annotations} - known, key=str)
    if unknown:
        raise DatasetError(f"{path}: annotations use unknown category ids {unknown[:20]}")


def read_coco(annotation_file: str | Path, image_root: str | Path | None = None) -> AnnotationSet:
    """Read and validate a COCO instances JSON file.

    Category ids may be sparse (COCO's 1..90): labels are ``0 .. K-1`` in sorted-id order, through the
    returned :class:`LabelMap`. Crowd regions (``iscrowd=1``) are kept and flagged. A missing ``area``
    is computed from the box and a missing ``iscrowd`` taken as 0, with one summary warning. A
    ``difficult`` key (written by :func:`write_coco` for VOC data) is read when present.

    Raises:
        DatasetError: unreadable file; duplicate image, annotation or category ids; annotations naming
            unknown image or category ids; a missing or malformed ``bbox`` (each names the ids).

    Example:
        >>> from visionkit.data.shapes import ShapesDataset, export_shapes
        >>> instances = export_shapes(ShapesDataset(3), "shapes", ("coco",))["coco"]  # a small COCO file
        >>> annotations = read_coco(instances, instances.parent / "images")
        >>> annotations.label_map.names, len(annotations.records)
        (('circle', 'square', 'triangle'), 3)
    """
    path = Path(annotation_file)
    data = _load_json(path)
    categories = data["categories"]
    repeated = _repeated([category.get("id") for category in categories])
    if repeated:
        raise DatasetError(f"{path}: duplicate category ids {repeated}")
    try:
        label_map = LabelMap.from_coco_categories(categories)
    except (KeyError, ValueError) as error:
        raise DatasetError(f"{path}: bad 'categories': {error}") from error
    images, annotations = data["images"], data["annotations"]
    _check_ids(path, images, annotations, label_map)
    by_image: dict[Any, list[dict]] = defaultdict(list)
    for annotation in annotations:
        by_image[annotation["image_id"]].append(annotation)
    missing: Counter[str] = Counter()
    records = []
    for image in images:
        try:
            file_name, width, height = image["file_name"], int(image["width"]), int(image["height"])
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(
                f"{path}: image id {image['id']} lacks file_name/width/height ({error})"
            ) from None
        boxes, labels, iscrowd, difficult, area = [], [], [], [], []
        for annotation in by_image.get(image["id"], []):
            bbox = annotation.get("bbox")
            where = f"{path}: annotation id {annotation['id']}"
            if not isinstance(bbox, list | tuple) or len(bbox) != 4:
                raise DatasetError(f"{where}: 'bbox' must be [x, y, w, h], got {bbox!r}")
            x, y, w, h = (finite_float(value, f"{where} bbox") for value in bbox)
            if w < 0 or h < 0:
                raise DatasetError(f"{where}: bbox {bbox} is inverted (negative width or height)")
            boxes.append([x, y, x + w, y + h])
            labels.append(label_map.label_of(annotation["category_id"]))
            missing["iscrowd"] += "iscrowd" not in annotation
            missing["area"] += "area" not in annotation
            iscrowd.append(int(annotation.get("iscrowd", 0)))
            difficult.append(int(annotation.get("difficult", 0)))
            area.append(finite_float(annotation["area"], f"{where} area") if "area" in annotation else w * h)
        records.append(
            make_record(file_name, image["id"], width, height, boxes, labels, iscrowd=iscrowd,
                        difficult=difficult, area=area, source=str(path))
        )  # fmt: skip
    if missing["iscrowd"] or missing["area"]:
        warnings.warn(
            f"{path}: {missing['iscrowd']} annotations had no 'iscrowd' (taken as 0), "
            f"{missing['area']} had no 'area' (computed from the box)",
            stacklevel=2,
        )
    return AnnotationSet(records, label_map, Path(image_root) if image_root is not None else None)


def write_coco(annotations: AnnotationSet, annotation_file: str | Path) -> Path:
    """Write ``annotations`` as a COCO instances JSON file (boxes as exact float ``[x, y, w, h]``).

    Category ids and names come from the label map; annotation ids count from 1 in image order; a
    ``difficult`` key is added to every annotation when any object is difficult (VOC data).

    Example:
        >>> from visionkit.data.datasets import read_voc
        >>> from visionkit.data.shapes import ShapesDataset, export_shapes
        >>> voc = export_shapes(ShapesDataset(2), "shapes", ("voc",))["voc"]  # a small VOC folder
        >>> write_coco(read_voc(voc, classes=["circle", "square", "triangle"]), "val.json")
        PosixPath('val.json')
    """
    label_map = annotations.label_map
    any_difficult = any(bool(r.difficult.any()) for r in annotations.records)
    images: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []
    for record in annotations.records:
        images.append({"id": record.image_id, "file_name": record.file_name, "width": record.width,
                       "height": record.height})  # fmt: skip
        for row in range(record.num_objects):
            x1, y1, x2, y2 = record.boxes[row].tolist()
            annotation = {
                "id": len(objects) + 1,
                "image_id": record.image_id,
                "category_id": label_map.category_of(int(record.labels[row])),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(record.area[row]),
                "iscrowd": int(record.iscrowd[row]),
            }
            if any_difficult:
                annotation["difficult"] = int(record.difficult[row])
            objects.append(annotation)
    categories = [
        {"id": c, "name": n, "supercategory": ""}
        for c, n in zip(label_map.category_ids, label_map.names, strict=True)
    ]
    path = Path(annotation_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": objects, "categories": categories}), "utf-8")
    return path


class CocoDetection(DetectionDataset):
    """COCO instances JSON + image folder as a detection dataset (see :class:`DetectionDataset`).

    Args:
        image_root: folder the JSON's ``file_name`` entries are relative to.
        annotation_file: the instances JSON.
        transforms, out_of_bounds, on_corrupt: as in :class:`DetectionDataset`.

    Example:
        >>> from visionkit.data.shapes import ShapesDataset, export_shapes
        >>> instances = export_shapes(ShapesDataset(2), "shapes", ("coco",))["coco"]
        >>> dataset = CocoDetection(instances.parent / "images", instances)
        >>> image, target = dataset[0]
        >>> target["boxes"].shape, target["labels"].dtype
        (torch.Size([2, 4]), torch.int64)
    """

    def __init__(
        self,
        image_root: str | Path,
        annotation_file: str | Path,
        *,
        transforms: Transform | None = None,
        out_of_bounds: str = "clip",
        on_corrupt: str = "raise",
    ) -> None:
        super().__init__(
            read_coco(annotation_file, image_root),
            transforms=transforms,
            out_of_bounds=out_of_bounds,
            on_corrupt=on_corrupt,
        )
