"""Semantic segmentation as one task: recipe, data, model, training, evaluation, prediction, saving and
loading (handbook §22, FCN).

``visionkit train segment``, ``visionkit eval segment`` and ``visionkit predict`` (on a segmenter's
``model.pt``) call this module; nothing else trains segmenters. A model family plugs in by registering a
builder with :func:`visionkit.models.segmentation.register_segmenter` whose models meet the **segmentation
contract**, the only thing this module knows about them:

* ``model(images)`` with ``images`` a ``Tensor[N, 3, H, W]`` float in ``[0, 1]`` returns logits
  ``Tensor[N, num_classes, H, W]`` aligned with the input pixels (training and evaluation alike);
* ``model.num_classes`` (background is class 0; void pixels are labelled 255 and count nowhere);
* ``model.encoder.load_pretrained(path)`` for ``backbone_weights``.

A run folder holds ``config.json`` (the recipe; a valid ``resume=`` base), ``label_map.json`` (the classes),
``log.csv`` (loss and validation mIoU, pixel / mean accuracy, FW-IoU, boundary mIoU and accuracy, per-class
IoU per epoch), ``steps.csv``, ``checkpoints/`` (resumable, atomic), ``last.pt`` and ``best.pt`` (the EMA
weights when ``ema_decay`` is set), ``model.pt`` (= ``best.pt``: what ``predict`` and ``eval segment``
load), ``metrics.json``, ``tensorboard/`` (when installed, with prediction overlays) and ``skipped.txt``.

Example:
    >>> recipe = SegmentRecipe(epochs=1, num_train=8, num_val=4, batch_size=4, progress=False)
    >>> metrics = train_segmenter(recipe, "runs/doc-segment", log=lambda line: None)
    >>> model, label_map = load_segmenter("runs/doc-segment/model.pt")
    >>> label_map.names
    ('background', 'circle', 'square', 'triangle')
"""

from visionkit.engine.segment.data import SegmentationData, build_datasets
from visionkit.engine.segment.evaluate import (
    SegmentationEvaluation,
    evaluate_segmenter,
    predict,
    predict_logits,
)
from visionkit.engine.segment.model import (
    FORMAT,
    build_segmenter,
    load_segmenter,
    model_format,
    save_segmenter,
    segmenter_arguments,
)
from visionkit.engine.segment.recipe import RESUME_FREE_KEYS, SegmentRecipe, recipe_from_overrides
from visionkit.engine.segment.train import pixel_cross_entropy, train_segmenter

__all__ = [
    "FORMAT",
    "RESUME_FREE_KEYS",
    "SegmentRecipe",
    "SegmentationData",
    "SegmentationEvaluation",
    "build_datasets",
    "build_segmenter",
    "evaluate_segmenter",
    "load_segmenter",
    "model_format",
    "pixel_cross_entropy",
    "predict",
    "predict_logits",
    "recipe_from_overrides",
    "save_segmenter",
    "segmenter_arguments",
    "train_segmenter",
]
