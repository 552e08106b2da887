"""Converting detection datasets between COCO JSON, Pascal VOC XML and YOLO txt.

Every conversion reads into the format-neutral :class:`AnnotationSet` (float64 xyxy pixels) and writes
it out, so any pair of formats works. Output layouts (each with a ``label_map.json``):

* ``coco``: ``OUT/annotations.json`` and ``OUT/images/``
* ``voc``:  ``OUT/Annotations/*.xml``, ``OUT/JPEGImages/``, ``OUT/ImageSets/Main/<image_set>.txt``
* ``yolo``: ``OUT/images/``, ``OUT/labels/*.txt``, ``OUT/classes.txt``

What a format cannot hold is lost, with a warning: YOLO has no crowd regions (left out) and no
``difficult`` flag; VOC has no crowd flag (crowd regions become ordinary objects) and no category ids
(restored from ``label_map.json``). Precision: COCO is exact, VOC within 5e-7 px, YOLO within
5e-7 × image side (6 decimals, normalized).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from visionkit.data.datasets.coco import read_coco, write_coco
from visionkit.data.datasets.labelmap import LabelMap
from visionkit.data.datasets.records import AnnotationSet, DatasetError, apply_bounds
from visionkit.data.datasets.voc import VOC_CLASSES, read_voc, write_voc
from visionkit.data.datasets.yolo import read_yolo, resolve_classes, write_yolo

__all__ = ["FORMATS", "convert_dataset", "read_annotations", "write_annotations"]

FORMATS = ("coco", "voc", "yolo")


def _check_format(name: str, value: str) -> None:
    if value not in FORMATS:
        raise ValueError(f"{name} must be one of {FORMATS}, got {value!r}")


def read_annotations(
    source: str | Path,
    fmt: str,
    *,
    images: str | Path | None = None,
    classes: Sequence[str] | LabelMap | str | Path | None = None,
    image_set: str | None = None,
) -> AnnotationSet:
    """Read a dataset in format ``fmt`` from ``source``.

    Args:
        source: ``coco``: the JSON file; ``voc``: the folder with ``Annotations/``; ``yolo``: the images
            folder, or a folder holding ``images/`` and ``labels/``.
        fmt: ``"coco"``, ``"voc"`` or ``"yolo"``.
        images: COCO image folder (default: ``images/`` beside the JSON file, when present).
        classes: VOC/YOLO class names or label map (default: ``label_map.json`` / ``classes.txt`` found
            beside the data, else the 20 VOC classes for VOC).
        image_set: VOC split name (default: every XML file).
    """
    _check_format("fmt", fmt)
    source = Path(source)
    if fmt == "coco":
        if images is None and (source.parent / "images").is_dir():
            images = source.parent / "images"
        return read_coco(source, images)
    if fmt == "voc":
        if classes is None:
            found = [p for p in (source / "label_map.json", source / "classes.txt") if p.is_file()]
            classes = resolve_classes(found[0], []) if found else VOC_CLASSES
        return read_voc(source, image_set=image_set, classes=resolve_classes(classes, []))
    if (source / "images").is_dir():
        return read_yolo(source / "images", source / "labels", classes=classes)
    return read_yolo(source, classes=classes)


def _flat_names(annotations: AnnotationSet) -> AnnotationSet:
    """VOC and YOLO folders are flat and keyed by file stem: strip sub-folders, refuse stem clashes."""
    records = [replace(record, file_name=Path(record.file_name).name) for record in annotations.records]
    stems: dict[str, str] = {}
    for original, record in zip(annotations.records, records, strict=True):
        stem = Path(record.file_name).stem
        if stem in stems:
            raise DatasetError(
                f"images {stems[stem]!r} and {original.file_name!r} share the file stem {stem!r}"
            )
        stems[stem] = original.file_name
    return replace(annotations, records=records)


def write_annotations(
    annotations: AnnotationSet, out_dir: str | Path, fmt: str, image_set: str = "all"
) -> Path:
    """Write annotations (not images) in format ``fmt`` under ``out_dir``; returns the image folder."""
    _check_format("fmt", fmt)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    annotations.label_map.save(out_dir / "label_map.json")
    if fmt == "coco":
        write_coco(annotations, out_dir / "annotations.json")
        return out_dir / "images"
    if fmt == "voc":
        write_voc(annotations, out_dir, image_set=image_set)
        return out_dir / "JPEGImages"
    write_yolo(annotations, out_dir / "labels")
    return out_dir / "images"


def _place_images(source: AnnotationSet, target: AnnotationSet, image_dir: Path, mode: str) -> None:
    if source.image_root is None:
        raise DatasetError("the source image folder is unknown; pass images=... or images_mode='none'")
    for index, record in enumerate(target.records):
        source_path = source.image_path(index).resolve()
        destination = image_dir / record.file_name
        destination.parent.mkdir(parents=True, exist_ok=True)
        if not source_path.is_file():
            raise DatasetError(f"image {index} {str(source_path)!r} does not exist")
        if destination.exists() or destination.is_symlink():
            destination.unlink()
        if mode == "copy":
            shutil.copy2(source_path, destination)
        else:
            os.symlink(source_path, destination)


def convert_dataset(
    source: str | Path,
    from_format: str,
    to_format: str,
    out_dir: str | Path,
    *,
    images: str | Path | None = None,
    classes: Sequence[str] | LabelMap | str | Path | None = None,
    image_set: str | None = None,
    images_mode: str = "copy",
    out_of_bounds: str = "clip",
) -> AnnotationSet:
    """Convert a dataset between formats; returns the annotations as written.

    Boxes leaving their image are clipped (or rejected with ``out_of_bounds="raise"``) because YOLO
    cannot express them. ``images_mode``: ``"copy"``, ``"symlink"`` or ``"none"`` (annotations only).

    Example:
        >>> from visionkit.data.shapes import ShapesDataset, export_shapes
        >>> instances = export_shapes(ShapesDataset(2), "shapes", ("coco",))["coco"]
        >>> converted = convert_dataset(instances, "coco", "yolo", "out/", images=instances.parent / "images")
        >>> sorted(p.name for p in Path("out/labels").iterdir())
        ['000000.txt', '000001.txt']
    """
    _check_format("from_format", from_format)
    _check_format("to_format", to_format)
    if images_mode not in ("copy", "symlink", "none"):
        raise ValueError(f"images_mode must be 'copy', 'symlink' or 'none', got {images_mode!r}")
    annotations = apply_bounds(
        read_annotations(source, from_format, images=images, classes=classes, image_set=image_set),
        out_of_bounds,
    )
    written = _flat_names(annotations) if to_format in ("voc", "yolo") else annotations
    image_dir = write_annotations(written, out_dir, to_format, image_set=image_set or "all")
    if images_mode != "none":
        _place_images(annotations, written, image_dir, images_mode)
    return replace(written, image_root=image_dir)
