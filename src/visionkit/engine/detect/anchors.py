"""Anchor priors of a run from its training boxes (YOLOv2 §2.2 "dimension clusters", kept by YOLOv3).

When the chosen detector's builder takes ``anchors`` (the YOLO families) and the recipe gives none,
``anchor_kmeans=true`` (the default) clusters the widths and heights of the training boxes — at the
working scale when ``min_size`` is set — with the ``1 − IoU`` k-means of
:func:`visionkit.ops.anchors.kmeans_anchors` into as many anchors as the builder's default has (9 for
YOLOv3, 5 for YOLOv2; ``anchor_count=N`` asks for another number, e.g. 15 = 5 per scale for YOLOv3),
seeded with the run's seed. The result is a builder argument, so it is saved in
``model.pt`` and a resumed run recomputes the same anchors.

Example:
    >>> from visionkit.engine.detect.data import build_datasets
    >>> from visionkit.engine.detect.recipe import DetectRecipe
    >>> recipe = DetectRecipe(model="yolov3_plain", num_train=16)
    >>> anchors = kmeans_anchor_argument(recipe, build_datasets(recipe).train)
    >>> len(anchors), all(w > 0 and h > 0 for w, h in anchors)
    (9, True)
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, Dataset

from visionkit.data.shapes import ShapesDataset
from visionkit.data.transforms import Resize
from visionkit.engine.detect.recipe import DetectRecipe
from visionkit.errors import ConfigError
from visionkit.models import get_model_builder
from visionkit.ops.anchors import anchor_fitness, kmeans_anchors

__all__ = ["anchor_pairs", "kmeans_anchor_argument", "takes_anchors", "training_box_sizes"]


def takes_anchors(model: str) -> int:
    """How many anchors the builder of ``model`` takes (its default's length), 0 if it takes none."""
    parameter = inspect.signature(get_model_builder(model)).parameters.get("anchors")
    return 0 if parameter is None else len(parameter.default)


def anchor_pairs(values: tuple[float, ...]) -> tuple[tuple[float, float], ...]:
    """``anchors=w1,h1,w2,h2,...`` (a recipe value) as ``((w1, h1), (w2, h2), ...)``."""
    if len(values) % 2:
        raise ConfigError(f"anchors={values!r}: expected (width, height) pairs: an even number of values")
    return tuple((float(values[i]), float(values[i + 1])) for i in range(0, len(values), 2))


def _records(dataset: Dataset) -> list[Any]:
    """The annotation records under a training set (concatenations, mosaic and transforms unwrapped)."""
    if isinstance(dataset, ConcatDataset):
        return [record for part in dataset.datasets for record in _records(part)]
    if isinstance(dataset, ShapesDataset):
        return list(dataset.to_annotations().records)
    if hasattr(dataset, "records"):
        return list(dataset.records)  # type: ignore[attr-defined]
    inner = getattr(dataset, "dataset", None)
    if inner is not None:
        return _records(inner)
    raise ConfigError(f"anchor_kmeans: cannot read the boxes of a {type(dataset).__name__} training set")


def training_box_sizes(dataset: Dataset, recipe: DetectRecipe) -> Tensor:
    """``Tensor[N, 2]`` float64 widths and heights of the training boxes (crowd regions left out), scaled
    to the working scale when ``recipe.min_size`` is set."""
    resize = Resize(recipe.min_size, recipe.max_size or None) if recipe.min_size else None
    sizes = []
    for record in _records(dataset):
        boxes = record.boxes[record.iscrowd == 0].double()
        wh = boxes[:, 2:] - boxes[:, :2]
        if resize is not None:
            height, width = resize.output_size(record.height, record.width)
            wh = wh * torch.tensor([width / record.width, height / record.height], dtype=torch.float64)
        sizes.append(wh[(wh > 0).all(dim=1)])
    return torch.cat(sizes) if sizes else torch.zeros(0, 2, dtype=torch.float64)


def kmeans_anchor_argument(
    recipe: DetectRecipe, dataset: Dataset, log: Any = None
) -> tuple[tuple[float, float], ...]:
    """k-means (1 − IoU) anchors for ``recipe.model`` from ``dataset``'s boxes, sorted by area, rounded
    to 1/100 pixel (plain numbers in ``model.pt`` and ``config.json``).

    Raises:
        ConfigError: fewer distinct box sizes than anchors (set ``anchors=`` or ``anchor_kmeans=false``).
    """
    count = recipe.anchor_count or takes_anchors(recipe.model)
    wh = training_box_sizes(dataset, recipe)
    distinct = int(torch.unique(wh, dim=0).shape[0]) if wh.numel() else 0
    if distinct < count:
        raise ConfigError(
            f"anchor_kmeans=true: {recipe.model} needs {count} anchors but the training set has "
            f"{distinct} distinct box sizes; give anchors=w1,h1,... or set anchor_kmeans=false"
        )
    centres = kmeans_anchors(wh, count, seed=recipe.seed)
    if log is not None:
        fitness = anchor_fitness(wh, centres)
        log(f"anchors: k-means (1-IoU) of {wh.shape[0]} boxes, mean best IoU {fitness:.3f}")
    return tuple((round(float(w), 2), round(float(h), 2)) for w, h in centres.tolist())
