"""YOLO txt folders: reader with validation, writer, and the :class:`YoloDetection` dataset.

Layout (ultralytics): ``.../images/<split>/<name>.jpg`` with ``.../labels/<split>/<name>.txt`` holding one
``class cx cy w h`` row per object, coordinates normalized to ``[0, 1]`` by the image size. A missing or
empty label file is an image without objects. The writer prints 6 decimals (the usual convention), so a
round trip is within 5e-7 × the image side in pixels (plus float rounding).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from visionkit.data.datasets.base import DetectionDataset, Transform
from visionkit.data.datasets.labelmap import LabelMap
from visionkit.data.datasets.records import (
    AnnotationSet,
    DatasetError,
    ImageRecord,
    finite_float,
    image_ids_from_names,
    make_record,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "YoloDetection",
    "read_yolo",
    "read_yolo_images",
    "resolve_classes",
    "write_yolo",
]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def resolve_classes(
    classes: Sequence[str] | LabelMap | str | Path | None, search: Sequence[Path]
) -> LabelMap:
    """A label map from names, a ``LabelMap``, a ``label_map.json`` / ``classes.txt`` path, or ``None``:
    then the first ``label_map.json`` or ``classes.txt`` found in ``search`` folders."""
    if isinstance(classes, LabelMap):
        return classes
    if classes is None:
        candidates = [folder / name for folder in search for name in ("label_map.json", "classes.txt")]
        found = [path for path in candidates if path.is_file()]
        if not found:
            raise DatasetError(
                f"no class names given and no label_map.json or classes.txt in {[str(p) for p in search]}; "
                "pass classes=[...]"
            )
        classes = found[0]
    if isinstance(classes, str | Path):
        path = Path(classes)
        if path.suffix == ".json":
            return LabelMap.load(path)
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as error:
            raise DatasetError(f"cannot read class names from {path}: {error}") from error
        return LabelMap.from_names(names)
    return LabelMap.from_names(classes)


def _labels_dir_for(images_dir: Path) -> Path:
    parts = list(images_dir.parts)
    if "images" not in parts:
        raise DatasetError(f"{images_dir} has no 'images' folder in its path; pass labels_dir explicitly")
    position = len(parts) - 1 - parts[::-1].index("images")
    parts[position] = "labels"
    return Path(*parts)


def _parse_rows(path: Path, num_classes: int) -> tuple[list[tuple[float, ...]], int]:
    """Rows ``(label, cx, cy, w, h)`` of one label file, exact duplicates removed (returned as a count)."""
    if not path.is_file():
        return [], 0
    rows: list[tuple[float, ...]] = []
    seen: set[tuple[float, ...]] = set()
    duplicates = 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        fields = line.split()
        if len(fields) != 5:
            raise DatasetError(f"{where}: expected 5 values 'class cx cy w h', got {len(fields)}: {line!r}")
        label = finite_float(fields[0], f"{where} class")
        if not label.is_integer() or not 0 <= label < num_classes:
            raise DatasetError(f"{where}: class must be an integer in [0, {num_classes}), got {fields[0]!r}")
        values = tuple(finite_float(field, f"{where}") for field in fields[1:])
        if any(not 0.0 <= value <= 1.0 for value in values):
            raise DatasetError(f"{where}: normalized coordinates must lie in [0, 1], got {fields[1:]}")
        row = (label, *values)
        if row in seen:
            duplicates += 1
            continue
        seen.add(row)
        rows.append(row)
    return rows, duplicates


def _image_size(path: Path, index: int) -> tuple[int, int] | None:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError):
        return None


def read_yolo(
    images_dir: str | Path,
    labels_dir: str | Path | None = None,
    *,
    classes: Sequence[str] | LabelMap | str | Path | None = None,
    on_corrupt: str = "raise",
) -> AnnotationSet:
    """Read and validate a YOLO txt folder.

    Args:
        images_dir: folder of images (not recursive).
        labels_dir: folder of ``.txt`` files; default: ``images_dir`` with its last ``images`` part
            replaced by ``labels``.
        classes: names, a :class:`LabelMap`, or a ``classes.txt`` / ``label_map.json`` path; default: found
            in ``labels_dir/..``, ``images_dir/..`` or two levels up.
        on_corrupt: ``"raise"`` or ``"skip"`` images whose header cannot be read (the size is needed).

    Exact duplicate rows are removed with one summary warning.

    Raises:
        DatasetError: a row without 5 values, a class out of range or coordinates outside ``[0, 1]``
            (names file and line); an unreadable image with ``on_corrupt="raise"`` (names path, index).

    Example:
        >>> from visionkit.data.shapes import ShapesDataset, export_shapes
        >>> root = export_shapes(ShapesDataset(2), "shapes", ("yolo",))["yolo"]  # images/, labels/, classes
        >>> annotations = read_yolo(root / "images", classes=root / "classes.txt")
        >>> annotations.label_map.names, [record.num_objects for record in annotations.records]
        (('circle', 'square', 'triangle'), [2, 4])
    """
    if on_corrupt not in ("raise", "skip"):
        raise ValueError(f"on_corrupt must be 'raise' or 'skip', got {on_corrupt!r}")
    images_dir = Path(images_dir)
    labels_dir = Path(labels_dir) if labels_dir is not None else _labels_dir_for(images_dir)
    search = [labels_dir.parent, images_dir.parent, images_dir.parent.parent, labels_dir]
    label_map = resolve_classes(classes, search)
    image_paths = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not image_paths:
        folders = sorted(p.name for p in images_dir.iterdir() if p.is_dir())
        hint = f"; it has the folders {folders[:5]}: pass the one holding the images" if folders else ""
        raise DatasetError(
            f"{images_dir}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder (YOLO reads the "
            f"images folder, e.g. dataset/images/train2017, not recursively){hint}"
        )
    return read_yolo_images(image_paths, label_map, images_dir, labels_dir=labels_dir, on_corrupt=on_corrupt)


def read_yolo_images(
    image_paths: Sequence[Path],
    label_map: LabelMap,
    image_root: Path,
    *,
    labels_dir: Path | None = None,
    on_corrupt: str = "raise",
) -> AnnotationSet:
    """Read the YOLO labels of an explicit list of images (what a ``data.yaml`` list file names).

    Args:
        image_paths: image files, in dataset order.
        label_map: the classes.
        image_root: folder the records' file names are relative to (every image must lie under it).
        labels_dir: folder of the ``.txt`` files; default: per image, its path with the last ``images``
            part replaced by ``labels`` (the ultralytics rule).
        on_corrupt: ``"raise"`` or ``"skip"`` images whose header cannot be read.
    """
    image_ids = image_ids_from_names([str(p.relative_to(image_root)) for p in image_paths])
    records: list[ImageRecord] = []
    skipped: list[str] = []
    duplicates: dict[str, int] = {}
    for index, (image_path, image_id) in enumerate(zip(image_paths, image_ids, strict=True)):
        size = _image_size(image_path, index)
        if size is None:
            if on_corrupt == "raise":
                raise DatasetError(f"cannot read image {index} {str(image_path)!r} (needed for its size)")
            skipped.append(str(image_path))
            continue
        width, height = size
        folder = labels_dir if labels_dir is not None else _labels_dir_for(image_path.parent)
        label_path = folder / f"{image_path.stem}.txt"
        rows, duplicates[str(label_path)] = _parse_rows(label_path, label_map.num_classes)
        boxes = [
            [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
            for _, cx, cy, w, h in rows
        ]
        labels = [int(row[0]) for row in rows]
        name = str(image_path.relative_to(image_root))
        records.append(make_record(name, image_id, width, height, boxes, labels, source=str(label_path)))
    removed = {path: count for path, count in duplicates.items() if count}
    if removed:
        example = next(iter(removed))
        warnings.warn(
            f"removed {sum(removed.values())} duplicate YOLO rows in {len(removed)} files, e.g. {example}",
            stacklevel=2,
        )
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable images, e.g. {skipped[0]}", stacklevel=2)
    return AnnotationSet(records, label_map, image_root, skipped)


def write_yolo(annotations: AnnotationSet, labels_dir: str | Path) -> Path:
    """Write one ``<stem>.txt`` per image (empty for images without objects) plus ``classes.txt`` beside.

    Crowd regions cannot be expressed in YOLO txt and are left out (one warning with the count);
    ``difficult`` flags are lost. Images are not copied.
    """
    labels_dir = Path(labels_dir)
    labels_dir.mkdir(parents=True, exist_ok=True)
    crowd = 0
    for record in annotations.records:
        lines = []
        for row in range(record.num_objects):
            if int(record.iscrowd[row]):
                crowd += 1
                continue
            x1, y1, x2, y2 = record.boxes[row].tolist()
            values = ((x1 + x2) / 2 / record.width, (y1 + y2) / 2 / record.height,
                      (x2 - x1) / record.width, (y2 - y1) / record.height)  # fmt: skip
            lines.append(f"{int(record.labels[row])} " + " ".join(f"{v:.6f}" for v in values) + "\n")
        (labels_dir / f"{Path(record.file_name).stem}.txt").write_text("".join(lines), encoding="utf-8")
    names = "".join(f"{name}\n" for name in annotations.label_map.names)
    (labels_dir.parent / "classes.txt").write_text(names, encoding="utf-8")
    if crowd:
        warnings.warn(f"left out {crowd} crowd regions: YOLO txt cannot express them", stacklevel=2)
    return labels_dir


class YoloDetection(DetectionDataset):
    """YOLO txt folder as a detection dataset (see :func:`read_yolo`, :class:`DetectionDataset`).

    Example:
        >>> from visionkit.data.shapes import ShapesDataset, export_shapes
        >>> root = export_shapes(ShapesDataset(2), "shapes", ("yolo",))["yolo"]
        >>> dataset = YoloDetection(root / "images", classes=root / "classes.txt")
        >>> len(dataset)
        2
    """

    def __init__(
        self,
        images_dir: str | Path,
        labels_dir: str | Path | None = None,
        *,
        classes: Sequence[str] | LabelMap | str | Path | None = None,
        transforms: Transform | None = None,
        out_of_bounds: str = "clip",
        on_corrupt: str = "raise",
    ) -> None:
        super().__init__(
            read_yolo(images_dir, labels_dir, classes=classes, on_corrupt=on_corrupt),
            transforms=transforms,
            out_of_bounds=out_of_bounds,
            on_corrupt=on_corrupt,
        )
