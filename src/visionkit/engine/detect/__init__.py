"""Object detection as one task: recipe, data, model, training, evaluation, prediction, saving and loading.

``visionkit train detect``, ``visionkit eval detect``, ``visionkit predict`` and the demo (``make demo``) call
this module; nothing else trains detectors. A new detector family plugs in by registering a builder
(:func:`visionkit.models.detectors.register_detector_family`) whose models meet the **detector contract**,
the only thing this module knows about them:

* ``detector(images, targets)`` in training mode returns a ``dict[str, Tensor]`` of named scalar losses
  (their sum is minimized); ``images`` is a list of ``Tensor[3, H_i, W_i]`` float in ``[0, 1]``, ``targets``
  a list of :class:`~visionkit.structures.Target` (boxes xyxy pixels, labels ``0..K-1``).
* ``detector(images)`` in evaluation mode returns one :class:`~visionkit.structures.Detections` per image
  (``boxes`` xyxy in that image's pixels, ``scores``, ``labels``).
* ``detector.num_classes``, ``detector.postprocess`` (a
  :class:`~visionkit.models.detectors.postprocess.PostProcess`) and ``detector.backbone`` (``stages()`` for
  ``freeze_at``, torchvision parameter names for ``backbone_weights``).

A run folder holds ``config.json`` (the recipe; a valid ``resume=`` base), ``label_map.json``, ``log.csv``
(losses and validation AP per epoch), ``checkpoints/`` (resumable, atomic), ``last.pt`` and ``best.pt``
(weights after the last step and at the best validation COCO AP; the EMA weights when ``ema_decay`` is
set), ``model.pt`` (= ``best.pt``: what ``predict`` and ``eval detect`` load), ``metrics.json``,
``tensorboard/`` (when TensorBoard is installed) and ``skipped.txt`` (images left out with
``on_corrupt=skip``).

Example:
    >>> recipe = DetectRecipe(epochs=1, num_train=8, num_val=4, batch_size=4, progress=False)
    >>> metrics = train_detector(recipe, "runs/doc-detect", log=lambda line: None)  # a few seconds
    >>> detector, label_map = load_detector("runs/doc-detect/model.pt")
    >>> type(detector).__name__, label_map.names
    ('RetinaNet', ('circle', 'square', 'triangle'))
"""

from visionkit.engine.detect.data import DetectionData, build_datasets, detect_format
from visionkit.engine.detect.evaluate import (
    DetectionEvaluation,
    evaluate_detector,
    evaluate_predictions,
    predict,
)
from visionkit.engine.detect.model import (
    build_detector,
    detector_arguments,
    load_detector,
    resolve_device,
    run_recipe,
    save_detector,
)
from visionkit.engine.detect.recipe import RESUME_FREE_KEYS, DetectRecipe
from visionkit.engine.detect.train import train_detector

__all__ = [
    "RESUME_FREE_KEYS",
    "DetectRecipe",
    "DetectionData",
    "DetectionEvaluation",
    "build_datasets",
    "build_detector",
    "detect_format",
    "detector_arguments",
    "evaluate_detector",
    "evaluate_predictions",
    "load_detector",
    "predict",
    "resolve_device",
    "run_recipe",
    "save_detector",
    "train_detector",
]
