"""The ``data.yaml`` a YOLO user already has (the ultralytics layout), read as visionkit datasets.

::

    path: ../datasets/coco128     # dataset root (relative to this file's folder); default: the folder
    train: images/train2017       # a folder of images, a .txt list of image paths, or a list of either
    val: images/train2017
    test:                         # optional
    names: {0: person, 1: bicycle} # or a list: [person, bicycle]
    nc: 2                         # optional; must equal the number of names

Labels are the YOLO ``.txt`` files found by the ultralytics rule (the last ``images`` folder of an image's
path replaced by ``labels``). The class order is the yaml's. Paths inside a list file are relative to that
file's folder. ``download`` (an ultralytics download script) is accepted and ignored; any other key, a
missing folder or file, or names that are not contiguous from 0 are errors naming the yaml and the key.

Example:
    >>> from pathlib import Path
    >>> from visionkit.data.shapes import ShapesDataset, export_shapes
    >>> root = export_shapes(ShapesDataset(3), "shapes", ("yolo",))["yolo"]  # images/ and labels/
    >>> _ = Path("data.yaml").write_text(
    ...     "path: shapes/yolo\\ntrain: images\\nval: images\\nnames: {0: circle, 1: square, 2: triangle}\\n")
    >>> annotations = read_data_yaml("data.yaml", "train")
    >>> annotations.label_map.names[:2], len(annotations.records)
    (('circle', 'square'), 3)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from visionkit.data.datasets.labelmap import LabelMap
from visionkit.data.datasets.records import AnnotationSet, DatasetError
from visionkit.data.datasets.yolo import IMAGE_SUFFIXES, read_yolo_images

__all__ = ["DATA_YAML_KEYS", "data_yaml_names", "is_data_yaml", "read_data_yaml"]

DATA_YAML_KEYS = ("path", "train", "val", "test", "names", "nc", "download")


def is_data_yaml(path: str | Path) -> bool:
    """A ``.yaml`` / ``.yml`` file."""
    return Path(path).suffix.lower() in (".yaml", ".yml")


def _load(path: Path) -> dict[str, Any]:
    import yaml

    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such data.yaml") from None
    except (OSError, yaml.YAMLError) as error:
        raise DatasetError(f"{path}: cannot read this YAML file ({error})") from None
    if not isinstance(content, dict):
        raise DatasetError(
            f"{path}: expected a mapping with path/train/val/names, got {type(content).__name__}"
        )
    unknown = sorted(str(key) for key in content if key not in DATA_YAML_KEYS)
    if unknown:
        raise DatasetError(f"{path}: unknown key(s) {unknown}; known: {list(DATA_YAML_KEYS)}")
    return content


def data_yaml_names(path: str | Path) -> LabelMap:
    """The label map of a data.yaml (``names`` as a list or as an index → name mapping)."""
    path = Path(path)
    content = _load(path)
    names = content.get("names")
    if isinstance(names, dict):
        keys = sorted(names)
        if keys != list(range(len(keys))):
            raise DatasetError(f"{path}: key 'names' must number the classes 0..{len(keys) - 1}, got {keys}")
        names = [names[key] for key in keys]
    if not isinstance(names, list) or not names or not all(isinstance(n, str | int) for n in names):
        raise DatasetError(f"{path}: key 'names' must be a non-empty list or an index → name mapping")
    if "nc" in content and content["nc"] != len(names):
        raise DatasetError(f"{path}: key 'nc' is {content['nc']} but 'names' has {len(names)} classes")
    return LabelMap.from_names([str(n) for n in names])


def _root(path: Path, content: dict[str, Any]) -> Path:
    root = content.get("path")
    if root in (None, ""):
        return path.parent
    resolved = Path(str(root))
    resolved = resolved if resolved.is_absolute() else path.parent / resolved
    if not resolved.is_dir():
        raise DatasetError(f"{path}: key 'path' names a missing folder {resolved}")
    return resolved


def _images_of(source: Path, path: Path, split: str) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if source.is_file() and source.suffix.lower() == ".txt":
        lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
        images = [Path(line) if Path(line).is_absolute() else source.parent / line for line in lines]
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise DatasetError(f"{path}: key {split!r}: {source} lists missing images, e.g. {missing[:3]}")
        return images
    raise DatasetError(f"{path}: key {split!r} names {source}, which is neither a folder nor a .txt list")


def read_data_yaml(path: str | Path, split: str = "train", *, on_corrupt: str = "raise") -> AnnotationSet:
    """The ``split`` (``train``, ``val`` or ``test``) of a data.yaml as an :class:`AnnotationSet`.

    Raises:
        DatasetError: unknown key, missing split, folder or list file, bad names — naming the yaml and key.
    """
    path = Path(path)
    content = _load(path)
    if split not in ("train", "val", "test"):
        raise DatasetError(f"{path}: split must be train, val or test, got {split!r}")
    label_map = data_yaml_names(path)
    entry = content.get(split)
    if entry in (None, "", []):
        raise DatasetError(f"{path}: key {split!r} is missing or empty")
    root = _root(path, content)
    sources = entry if isinstance(entry, list) else [entry]
    images: list[Path] = []
    for source in sources:
        candidate = Path(str(source))
        images += _images_of(candidate if candidate.is_absolute() else root / candidate, path, split)
    if not images:
        raise DatasetError(f"{path}: key {split!r} names no images")
    common = Path(os.path.commonpath([str(p.parent) for p in images]))
    return read_yolo_images(images, label_map, common, on_corrupt=on_corrupt)
