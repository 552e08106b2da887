"""Detection inputs as flat arrays: from detector outputs (``list[dict]``) or from COCO JSON files.

Everything the evaluators need is held in two flat structures, one row per box, with integer image and
category positions. Boxes are kept as float64 ``(x, y, w, h)`` because pycocotools computes IoU from
that form (``x + w`` rather than a stored ``x2``); keeping it makes our IoU bit-identical to its IoU.

Checks (CONTRIBUTING.md, "Bad input and faults"): detections for unknown image ids, unknown category ids,
duplicate image or annotation ids, NaN/Inf scores or coordinates and inverted boxes raise ``ValueError``
naming the ids or indices. A missing ground-truth ``area`` is computed from the box (one warning with the
count: COCO's ``area`` is the *segmentation* area, so the computed value can differ); a missing
``iscrowd`` is 0.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.metrics._convert import to_numpy

__all__ = [
    "DetectionSet",
    "GroundTruthSet",
    "from_predictions",
    "load_coco_ground_truth",
    "load_coco_results",
    "to_predictions",
    "to_targets",
]


@dataclass(frozen=True)
class GroundTruthSet:
    """Ground-truth boxes of a whole dataset, one row per box.

    Attributes:
        image_ids: ``[I]`` image ids, in evaluation order (sorted for COCO files).
        category_ids: ``[K]`` category ids (sorted); ``category`` below indexes into it.
        image: ``[G]`` position of each box's image in ``image_ids``.
        category: ``[G]`` position of each box's category in ``category_ids``.
        boxes: ``[G, 4]`` float64 ``(x, y, w, h)`` absolute pixels.
        area: ``[G]`` area used for the COCO area ranges (the annotation's ``area`` when given).
        iscrowd: ``[G]`` bool, crowd regions (matched by overlap / detection area, never counted).
        difficult: ``[G]`` bool, PASCAL VOC difficult flag (ignored by the VOC metric).
        category_names: ``[K]`` names (ids as text when unknown).
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    difficult: np.ndarray
    category_names: tuple[str, ...]


@dataclass(frozen=True)
class DetectionSet:
    """Detections of a whole dataset, one row per box, in input order (which breaks score ties).

    Attributes:
        image: ``[D]`` image position (into ``GroundTruthSet.image_ids``).
        category: ``[D]`` category position (into ``GroundTruthSet.category_ids``).
        boxes: ``[D, 4]`` float64 ``(x, y, w, h)``.
        scores: ``[D]`` float64 confidences.
        area: ``[D]`` box area ``w·h`` (used for the area ranges, as pycocotools).
    """

    image: np.ndarray
    category: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    area: np.ndarray


def _xyxy_to_xywh(boxes: Any, name: str) -> np.ndarray:
    array = to_numpy(boxes, name, finite=True).astype(np.float64)
    if array.size == 0:
        return np.zeros((0, 4))
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4] (xyxy), got {array.shape}")
    inverted = np.flatnonzero((array[:, 2] < array[:, 0]) | (array[:, 3] < array[:, 1]))
    if inverted.size:
        raise ValueError(
            f"{name} has inverted boxes (x2 < x1 or y2 < y1) at rows {inverted[:10].tolist()}; "
            "boxes must be xyxy absolute pixels"
        )
    return np.stack([array[:, 0], array[:, 1], array[:, 2] - array[:, 0], array[:, 3] - array[:, 1]], axis=1)


def _vector(entry: Mapping[str, Any], key: str, name: str, length: int, default: Any = None) -> np.ndarray:
    if key not in entry:
        if default is None:
            raise ValueError(f"{name} has no {key!r}; expected keys boxes, scores, labels")
        return np.full(length, default)
    array = to_numpy(entry[key], f"{name}[{key!r}]", finite=True).reshape(-1)
    if array.shape[0] != length:
        raise ValueError(f"{name}[{key!r}] must have one entry per box ({length}), got {array.shape[0]}")
    return array


def _align_images(
    predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]
) -> list[int]:
    """Position of each prediction's image among the targets: by ``image_id`` when both carry one."""
    ids = [t.get("image_id") for t in targets]
    if all(i is not None for i in ids) and all(p.get("image_id") is not None for p in predictions):
        keys = [int(np.asarray(to_numpy(i, "image_id")).reshape(-1)[0]) for i in ids]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"targets have duplicate image_id values {duplicates[:20]}")
        where = {k: i for i, k in enumerate(keys)}
        pred_keys = [int(np.asarray(to_numpy(p["image_id"], "image_id")).reshape(-1)[0]) for p in predictions]
        unknown = sorted({k for k in pred_keys if k not in where})
        if unknown:
            raise ValueError(f"predictions refer to image ids not in the ground truth: {unknown[:20]}")
        repeated = sorted({k for k in pred_keys if pred_keys.count(k) > 1})
        if repeated:
            raise ValueError(f"predictions have duplicate image_id values {repeated[:20]}")
        return [where[k] for k in pred_keys]
    if len(predictions) != len(targets):
        raise ValueError(
            f"predictions has {len(predictions)} images but targets has {len(targets)}; "
            "give one dict per image in the same order (or image_id in both)"
        )
    return list(range(len(targets)))


def from_predictions(
    predictions: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    num_classes: int | None = None,
    warn_missing_area: bool = True,
) -> tuple[GroundTruthSet, DetectionSet]:
    """Flatten detector outputs and ground truth (the visionkit contract) for the evaluators.

    Args:
        predictions: per image ``dict(boxes=[N, 4] xyxy, scores=[N], labels=[N] int)``.
        targets: per image ``dict(boxes=[M, 4] xyxy, labels=[M], iscrowd?, difficult?, area?, image_id?)``.
        num_classes: categories are ``0…num_classes-1``; default: the labels that occur.
        warn_missing_area: warn when ground truth has no ``area`` (the COCO area ranges need it).

    Returns:
        ``(ground_truth, detections)``; image ``i`` is ``targets[i]``.
    """
    positions = _align_images(predictions, targets)
    parts: dict[str, list[np.ndarray]] = {
        k: [] for k in ("gi", "gl", "gb", "ga", "gc", "gd", "di", "dl", "db", "ds")
    }
    missing_area = 0
    for index, target in enumerate(targets):
        boxes = _xyxy_to_xywh(target.get("boxes", np.zeros((0, 4))), f"targets[{index}]['boxes']")
        count = boxes.shape[0]
        parts["gb"].append(boxes)
        parts["gl"].append(_vector(target, "labels", f"targets[{index}]", count).astype(np.int64))
        if "area" in target:
            parts["ga"].append(_vector(target, "area", f"targets[{index}]", count).astype(np.float64))
        else:
            missing_area += count
            parts["ga"].append(boxes[:, 2] * boxes[:, 3])
        parts["gc"].append(_vector(target, "iscrowd", f"targets[{index}]", count, 0).astype(bool))
        parts["gd"].append(_vector(target, "difficult", f"targets[{index}]", count, 0).astype(bool))
        parts["gi"].append(np.full(count, index, dtype=np.int64))
    for index, (prediction, position) in enumerate(zip(predictions, positions, strict=True)):
        boxes = _xyxy_to_xywh(prediction.get("boxes", np.zeros((0, 4))), f"predictions[{index}]['boxes']")
        count = boxes.shape[0]
        parts["db"].append(boxes)
        parts["ds"].append(_vector(prediction, "scores", f"predictions[{index}]", count).astype(np.float64))
        parts["dl"].append(_vector(prediction, "labels", f"predictions[{index}]", count).astype(np.int64))
        parts["di"].append(np.full(count, position, dtype=np.int64))
    flat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    if missing_area and warn_missing_area:
        warnings.warn(
            f"{missing_area} ground-truth boxes have no 'area'; using the box area w*h", stacklevel=2
        )
    labels = np.union1d(flat["gl"], flat["dl"]).astype(np.int64)
    if num_classes is not None:
        outside = labels[(labels < 0) | (labels >= num_classes)]
        if outside.size:
            raise ValueError(f"labels {outside[:20].tolist()} are outside [0, num_classes={num_classes})")
        labels = np.arange(num_classes)
    gt = GroundTruthSet(
        image_ids=np.arange(len(targets)),
        category_ids=labels,
        image=flat["gi"].astype(np.int64),
        category=np.searchsorted(labels, flat["gl"]).astype(np.int64),
        boxes=flat["gb"].reshape(-1, 4),
        area=flat["ga"].astype(np.float64),
        iscrowd=flat["gc"].astype(bool),
        difficult=flat["gd"].astype(bool),
        category_names=tuple(str(v) for v in labels.tolist()),
    )
    boxes = flat["db"].reshape(-1, 4)
    detections = DetectionSet(
        image=flat["di"].astype(np.int64),
        category=np.searchsorted(labels, flat["dl"]).astype(np.int64),
        boxes=boxes,
        scores=flat["ds"].astype(np.float64),
        area=boxes[:, 2] * boxes[:, 3],
    )
    return gt, detections


def _read_json(source: str | Path | Any, what: str) -> Any:
    if not isinstance(source, (str, Path)):
        return source
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"{what} file {str(path)!r} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{what} file {str(path)!r} is not valid JSON: {error}") from error


def _duplicates(values: Sequence[Any]) -> list[Any]:
    seen: set[Any] = set()
    repeated = {v for v in values if v in seen or seen.add(v)}  # type: ignore[func-returns-value]
    return sorted(repeated)[:20]


def _xywh_array(rows: Sequence[Any], what: str) -> np.ndarray:
    try:
        boxes = np.asarray(rows, dtype=np.float64).reshape(-1, 4) if len(rows) else np.zeros((0, 4))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what}: every 'bbox' must be 4 numbers [x, y, w, h] ({error})") from error
    if boxes.shape[0] != len(rows):
        raise ValueError(f"{what}: every 'bbox' must be 4 numbers [x, y, w, h]")
    bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] < 0) | (boxes[:, 3] < 0))
    if bad.size:
        raise ValueError(f"{what}: non-finite or negative-size 'bbox' at entries {bad[:10].tolist()}")
    return boxes


def _positions(ids: np.ndarray, known: np.ndarray, what: str) -> np.ndarray:
    where = np.searchsorted(known, ids).clip(max=max(len(known) - 1, 0))
    unknown = np.unique(ids[known[where] != ids]) if len(known) else np.unique(ids)
    if unknown.size:
        raise ValueError(f"{what} not in the ground truth: {unknown[:20].tolist()}")
    return where.astype(np.int64)


def load_coco_ground_truth(source: str | Path | Mapping[str, Any]) -> GroundTruthSet:
    """Read a COCO ``instances_*.json`` (path or already-parsed dict) into a :class:`GroundTruthSet`.

    Image and category ids are sorted (pycocotools' evaluation order); annotations keep file order.

    Raises:
        ValueError: missing file, invalid JSON, duplicate image/category/annotation ids, annotations
            naming unknown image or category ids, malformed boxes; messages name the file and ids.
    """
    what = f"ground truth {str(source)!r}" if isinstance(source, (str, Path)) else "ground truth"
    data = _read_json(source, "ground truth")
    if not isinstance(data, Mapping) or not {"images", "annotations", "categories"} <= set(data):
        raise ValueError(f"{what} must be a COCO dict with 'images', 'annotations' and 'categories'")
    image_list = [image["id"] for image in data["images"]]
    category_list = [category["id"] for category in data["categories"]]
    annotations = data["annotations"]
    for name, values in (
        ("image", image_list),
        ("category", category_list),
        ("annotation", [a["id"] for a in annotations if "id" in a]),
    ):
        if _duplicates(values):
            raise ValueError(f"{what} has duplicate {name} ids {_duplicates(values)}")
    image_ids, category_ids = np.array(sorted(image_list)), np.array(sorted(category_list))
    names = {c["id"]: str(c.get("name", c["id"])) for c in data["categories"]}
    boxes = _xywh_array([a.get("bbox") for a in annotations], what)
    no_area = [i for i, a in enumerate(annotations) if "area" not in a]
    no_crowd = sum("iscrowd" not in a for a in annotations)
    if no_area:
        warnings.warn(
            f"{what}: {len(no_area)} annotations have no 'area'; using the box area w*h", stacklevel=2
        )
    if no_crowd:
        warnings.warn(f"{what}: {no_crowd} annotations have no 'iscrowd'; treating them as 0", stacklevel=2)
    area = np.array([a.get("area", 0.0) for a in annotations], dtype=np.float64)
    area[no_area] = boxes[no_area, 2] * boxes[no_area, 3]
    return GroundTruthSet(
        image_ids=image_ids,
        category_ids=category_ids,
        image=_positions(
            np.array([a["image_id"] for a in annotations]), image_ids, f"{what}: annotation image ids"
        ),
        category=_positions(
            np.array([a["category_id"] for a in annotations]),
            category_ids,
            f"{what}: annotation category ids",
        ),
        boxes=boxes,
        area=area,
        iscrowd=np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool),
        difficult=np.array([bool(a.get("difficult", 0)) for a in annotations], dtype=bool),
        category_names=tuple(names[c] for c in category_ids.tolist()),
    )


def load_coco_results(
    source: str | Path | Sequence[Mapping[str, Any]], ground_truth: GroundTruthSet
) -> DetectionSet:
    """Read a COCO results list (``[{image_id, category_id, bbox: [x, y, w, h], score}, ...]``).

    Raises:
        ValueError: missing or invalid file, missing keys, NaN/Inf scores or boxes (naming the entries),
            and image or category ids unknown to ``ground_truth`` (listing them).
    """
    what = f"detections {str(source)!r}" if isinstance(source, (str, Path)) else "detections"
    data = _read_json(source, "detections")
    if isinstance(data, Mapping) and "annotations" in data:
        data = data["annotations"]
    if not isinstance(data, list):
        raise ValueError(f"{what} must be a JSON list of {{image_id, category_id, bbox, score}}")
    try:
        image = np.array([d["image_id"] for d in data])
        category = np.array([d["category_id"] for d in data])
        rows = [d["bbox"] for d in data]
        raw_scores = [d["score"] for d in data]
    except (KeyError, TypeError) as error:
        raise ValueError(
            f"{what}: every entry needs image_id, category_id, bbox and score ({error!r})"
        ) from error
    for index, score in enumerate(raw_scores):
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ValueError(f"{what}: entry {index} has score {score!r}, expected a number")
    scores = np.array(raw_scores, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise ValueError(f"{what}: non-finite score at entries {bad[:10].tolist()}")
    boxes = _xywh_array(rows, what)
    return DetectionSet(
        image=_positions(image, ground_truth.image_ids, f"{what}: image ids"),
        category=_positions(category, ground_truth.category_ids, f"{what}: category ids"),
        boxes=boxes,
        scores=scores,
        area=boxes[:, 2] * boxes[:, 3],
    )


def _split_by_image(image: np.ndarray, num_images: int) -> list[np.ndarray]:
    order = np.argsort(image, kind="stable")
    return np.split(order, np.searchsorted(image[order], np.arange(1, num_images)))


def _xyxy(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def to_targets(ground_truth: GroundTruthSet) -> list[dict[str, Any]]:
    """Ground truth in the visionkit contract: per image ``dict(boxes [M, 4] xyxy float64, labels, ...)``.

    ``labels`` are contiguous positions into ``ground_truth.category_ids`` (the category id mapping);
    ``image_id`` is the original id. Images follow ``ground_truth.image_ids``.
    """
    import torch

    targets = []
    for position, rows in enumerate(_split_by_image(ground_truth.image, len(ground_truth.image_ids))):
        targets.append(
            {
                "boxes": torch.from_numpy(_xyxy(ground_truth.boxes[rows])),
                "labels": torch.from_numpy(ground_truth.category[rows].astype(np.int64)),
                "iscrowd": torch.from_numpy(ground_truth.iscrowd[rows]),
                "difficult": torch.from_numpy(ground_truth.difficult[rows]),
                "area": torch.from_numpy(ground_truth.area[rows]),
                "image_id": int(ground_truth.image_ids[position]),
            }
        )
    return targets


def to_predictions(detections: DetectionSet, ground_truth: GroundTruthSet) -> list[dict[str, Any]]:
    """Detections in the detector contract ``dict(boxes [N, 4] xyxy, scores, labels int64)`` per image."""
    import torch

    predictions = []
    for position, rows in enumerate(_split_by_image(detections.image, len(ground_truth.image_ids))):
        predictions.append(
            {
                "boxes": torch.from_numpy(_xyxy(detections.boxes[rows])),
                "scores": torch.from_numpy(detections.scores[rows]),
                "labels": torch.from_numpy(detections.category[rows].astype(np.int64)),
                "image_id": int(ground_truth.image_ids[position]),
            }
        )
    return predictions
