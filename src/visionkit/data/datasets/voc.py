"""Pascal VOC XML folders: reader with validation, writer, and the :class:`VocDetection` dataset.

Layout: ``root/Annotations/<id>.xml``, ``root/JPEGImages/<filename>``, optionally
``root/ImageSets/Main/<image_set>.txt`` listing the ids of a split.

Coordinates: VOC ``xmin..xmax`` are 1-based inclusive pixel indices, so the continuous xyxy box is
``(xmin - 1, ymin - 1, xmax, ymax)`` (the detectron2 convention); the writer applies the inverse.
Non-integer coordinates are written with 6 decimals, so a round trip is exact for integer pixel
boxes and within 5e-7 px otherwise.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

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

__all__ = ["VOC_CLASSES", "VocDetection", "read_voc", "write_voc"]

#: the 20 Pascal VOC classes, in the customary (alphabetical) label order
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def _label_map(classes: Sequence[str] | LabelMap) -> LabelMap:
    return classes if isinstance(classes, LabelMap) else LabelMap.from_names(classes)


def _text(element: ET.Element, tag: str, path: Path, context: str) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(f"{path}: {context} has no <{tag}>")
    return child.text.strip()


def _parse_objects(root: ET.Element, path: Path, label_map: LabelMap) -> tuple[list, list, list]:
    boxes, labels, difficult = [], [], []
    for position, obj in enumerate(root.findall("object")):
        context = f"object {position}"
        name = _text(obj, "name", path, context)
        if name not in label_map.names:
            raise DatasetError(
                f"{path}: {context} has unknown class {name!r}; known: {list(label_map.names)}"
            )
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DatasetError(f"{path}: {context} has no <bndbox>")
        xmin, ymin, xmax, ymax = (
            finite_float(_text(bndbox, tag, path, context), f"{path}: {context} <{tag}>")
            for tag in ("xmin", "ymin", "xmax", "ymax")
        )
        if xmax < xmin - 1.0 or ymax < ymin - 1.0:  # 1-based pixels: the width is xmax - xmin + 1
            raise DatasetError(
                f"{path}: {context} box (xmin {xmin:g}, ymin {ymin:g}, xmax {xmax:g}, ymax {ymax:g}) is "
                "inverted: need xmax >= xmin - 1 and ymax >= ymin - 1"
            )
        boxes.append([xmin - 1.0, ymin - 1.0, xmax, ymax])
        labels.append(label_map.label_of_name(name))
        flag = obj.find("difficult")
        difficult.append(
            int(flag.text.strip()) if flag is not None and flag.text and flag.text.strip() else 0
        )
    return boxes, labels, difficult


def _read_xml(path: Path, label_map: LabelMap, image_id: int) -> ImageRecord:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as error:
        raise DatasetError(f"cannot read VOC annotation {path}: {error}") from error
    size = root.find("size")
    if size is None:
        raise DatasetError(f"{path}: missing <size> (image width and height are required)")
    width = int(finite_float(_text(size, "width", path, "<size>"), f"{path}: <size><width>"))
    height = int(finite_float(_text(size, "height", path, "<size>"), f"{path}: <size><height>"))
    file_element = root.find("filename")
    file_name = (
        file_element.text.strip() if file_element is not None and file_element.text else path.stem + ".jpg"
    )
    boxes, labels, difficult = _parse_objects(root, path, label_map)
    return make_record(
        file_name, image_id, width, height, boxes, labels, difficult=difficult, source=str(path)
    )


def read_voc(
    root: str | Path, *, image_set: str | None = None, classes: Sequence[str] | LabelMap = VOC_CLASSES
) -> AnnotationSet:
    """Read and validate a Pascal VOC folder.

    Args:
        root: folder holding ``Annotations/`` and ``JPEGImages/``.
        image_set: split name read from ``ImageSets/Main/<image_set>.txt``; ``None`` = every XML file.
        classes: class names (label ``i`` = ``classes[i]``) or a :class:`LabelMap`.

    Missing ``<difficult>`` is 0. Image ids are the file stems when all are integers, else positions.

    Raises:
        DatasetError: an XML file that cannot be parsed, lacks ``<size>`` or a coordinate, or names a
            class not in ``classes`` (each names the file); a listed id without its XML file.

    Example:
        >>> from visionkit.data.shapes import ShapesDataset, export_shapes
        >>> root = export_shapes(ShapesDataset(2), "shapes", ("voc",))["voc"]  # Annotations/, JPEGImages/
        >>> annotations = read_voc(root, classes=["circle", "square", "triangle"])
        >>> [record.num_objects for record in annotations.records]
        [2, 4]
    """
    root = Path(root)
    label_map = _label_map(classes)
    folder = root / "Annotations"
    if image_set is not None:
        list_file = root / "ImageSets" / "Main" / f"{image_set}.txt"
        try:
            stems = [
                line.split()[0] for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()
            ]
        except OSError as error:
            raise DatasetError(f"cannot read image set {list_file}: {error}") from error
        paths = [folder / f"{stem}.xml" for stem in stems]
    else:
        paths = sorted(folder.glob("*.xml"))
        if not paths:
            raise DatasetError(f"no VOC annotation files in {folder}")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} listed annotation files do not exist, e.g. {missing[0]}")
    image_ids = image_ids_from_names([p.name for p in paths])
    records = [_read_xml(path, label_map, image_id) for path, image_id in zip(paths, image_ids, strict=True)]
    return AnnotationSet(records, label_map, root / "JPEGImages")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}".rstrip("0").rstrip(".")


def _sub(parent: ET.Element, tag: str, text: str | None = None) -> ET.Element:
    child = ET.SubElement(parent, tag)
    if text is not None:
        child.text = text
    return child


def write_voc(annotations: AnnotationSet, root: str | Path, image_set: str | None = None) -> Path:
    """Write one VOC XML per image to ``root/Annotations`` (and the split list when ``image_set``).

    Crowd regions are written as ordinary objects (VOC has no crowd flag); ``difficult`` is kept.
    Images are not copied (see :func:`visionkit.data.datasets.convert_dataset`).
    """
    root = Path(root)
    folder = root / "Annotations"
    folder.mkdir(parents=True, exist_ok=True)
    label_map = annotations.label_map
    stems = []
    for record in annotations.records:
        xml = ET.Element("annotation")
        _sub(xml, "folder", "JPEGImages")
        _sub(xml, "filename", record.file_name)
        size = _sub(xml, "size")
        for tag, value in (("width", record.width), ("height", record.height), ("depth", 3)):
            _sub(size, tag, str(value))
        _sub(xml, "segmented", "0")
        for row in range(record.num_objects):
            obj = _sub(xml, "object")
            _sub(obj, "name", label_map.name_of(int(record.labels[row])))
            _sub(obj, "pose", "Unspecified")
            _sub(obj, "truncated", "0")
            _sub(obj, "difficult", str(int(record.difficult[row])))
            bndbox = _sub(obj, "bndbox")
            x1, y1, x2, y2 = record.boxes[row].tolist()
            for tag, value in (("xmin", x1 + 1.0), ("ymin", y1 + 1.0), ("xmax", x2), ("ymax", y2)):
                _sub(bndbox, tag, _number(value))
        ET.indent(xml)
        stem = Path(record.file_name).stem
        ET.ElementTree(xml).write(folder / f"{stem}.xml", encoding="utf-8")
        stems.append(stem)
    if image_set is not None:
        list_file = root / "ImageSets" / "Main" / f"{image_set}.txt"
        list_file.parent.mkdir(parents=True, exist_ok=True)
        list_file.write_text("".join(f"{stem}\n" for stem in stems), encoding="utf-8")
    return root


class VocDetection(DetectionDataset):
    """Pascal VOC folder as a detection dataset (see :func:`read_voc`, :class:`DetectionDataset`).

    Example:
        >>> from visionkit.data.shapes import ShapesDataset, export_shapes
        >>> root = export_shapes(ShapesDataset(2), "shapes", ("voc",))["voc"]
        >>> dataset = VocDetection(root, classes=["circle", "square", "triangle"])
        >>> image, target = dataset[0]
        >>> target["difficult"]  # VOC's "difficult" flags, one per object
        tensor([0, 0])
    """

    def __init__(
        self,
        root: str | Path,
        *,
        image_set: str | None = None,
        classes: Sequence[str] | LabelMap = VOC_CLASSES,
        transforms: Transform | None = None,
        out_of_bounds: str = "clip",
        on_corrupt: str = "raise",
    ) -> None:
        super().__init__(
            read_voc(root, image_set=image_set, classes=classes),
            transforms=transforms,
            out_of_bounds=out_of_bounds,
            on_corrupt=on_corrupt,
        )
