"""Registered YOLO builders: ``yolov3_<backbone>`` and ``yolov2_<backbone>`` (generated per backbone by
:func:`~visionkit.models.detectors.builders.register_detector_family`, so each lists the backbone, family
and post-processing options in its signature).

* ``yolov3_darknet53``: the paper's model (neck widths 128 / 256 / 512, darknet's COCO anchors).
* ``yolov3_plain``, ``yolov3_mobilenet_v2``: small variants for a 2-core CPU (``plain``: the demo backbone
  on 128-pixel images, neck widths 32 / 48 / 64, anchors for 16–48 pixel objects).
* ``yolov2_darknet19``: the paper's model (1024-wide head, 64-wide passthrough, darknet's VOC anchors);
  ``yolov2_plain`` its CPU-size counterpart for the comparison.

``train detect`` replaces the default anchors by k-means (1 − IoU) clusters of the training boxes
(``anchor_kmeans=true``, the default) and saves them among the builder arguments in ``model.pt``.

Example:
    >>> from visionkit.models import create_model
    >>> model = create_model("yolov3_plain", num_classes=3, fusion="sum")
    >>> [s.stride for s in model.feature_shapes.values()], model.anchors.shape
    ([8, 16, 32], torch.Size([9, 2]))
"""

from __future__ import annotations

from collections.abc import Sequence

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import Backbone
from visionkit.models.backbones.darknet import darknet19, darknet53
from visionkit.models.detectors.builders import BACKBONES, register_detector_family
from visionkit.models.detectors.postprocess import PostProcess
from visionkit.models.detectors.yolo.common import check_anchors
from visionkit.models.detectors.yolo.neck import YOLOv3Head, YOLOv3Neck
from visionkit.models.detectors.yolo.yolov2 import VOC_ANCHORS, YOLOv2, YOLOv2Neck
from visionkit.models.detectors.yolo.yolov3 import COCO_ANCHORS, YOLOv3

__all__ = ["YOLO_MODELS", "build_yolov2", "build_yolov3"]

#: darknet feeds images in [0, 1] without mean / std normalization
_NO_NORMALIZATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def build_yolov3(
    backbone: Backbone,
    *,
    num_classes: int,
    anchors: Sequence[Sequence[float]] = COCO_ANCHORS,
    neck_widths: Sequence[int] = (128, 256, 512),
    scales: int = 3,
    fusion: str = "concat",
    ignore_threshold: float = 0.5,
    xy_loss: str = "sse",
    class_activation: str = "sigmoid",
    objectness_prior: float = 0.0,
    assign_threshold: float = 1.0,
    box_loss: str = "sse",
    image_mean: Sequence[float] = _NO_NORMALIZATION[0],
    image_std: Sequence[float] = _NO_NORMALIZATION[1],
    postprocess: PostProcess | None = None,
) -> YOLOv3:
    """YOLOv3 on the ``c3, c4, c5`` maps of any ``features_only`` backbone: the neck of ``neck_widths``
    (``fusion="concat"`` as the paper, or ``"sum"``), a head per scale (``scales=1``: the stride-32 map
    alone carries every anchor, YOLOv2's single scale, for the §18 comparison), 9 anchors ``(w, h)`` in pixels
    sorted by area (3 per scale, smallest on stride 8; ``3·n`` anchors give ``n`` per scale);
    ``xy_loss``: ``"sse"`` (the paper) or ``"bce"`` (darknet's gradient,
    :mod:`~visionkit.models.detectors.yolo.yolov3`); ``class_activation``:
    ``"sigmoid"`` (the paper) or ``"softmax"`` (YOLOv2's, for the comparison); ``objectness_prior`` > 0: see
    :class:`~visionkit.models.detectors.yolo.neck.YOLOv3Head` (0: the paper); ``assign_threshold`` < 1:
    several anchors per ground truth (darknet's later ``iou_thresh``; 1: the paper's one); ``box_loss``:
    ``"sse"`` (the paper) or ``"giou"`` / ``"diou"`` / ``"ciou"`` (darknet's later ``iou_loss``)."""
    if scales not in (1, 3):
        raise ConfigError(
            f"scales={scales!r}: expected 3 (the paper: strides 8, 16, 32) or 1 (stride 32 only)"
        )
    if len(neck_widths) != 3:
        raise ConfigError(
            f"neck_widths={tuple(neck_widths)!r}: expected 3 positive widths (strides 8, 16, 32)"
        )
    shapes = backbone.output_shape()
    names = ("c3", "c4", "c5")[3 - scales :]
    neck = YOLOv3Neck({name: shapes[name] for name in names}, tuple(neck_widths)[3 - scales :], fusion)
    count = len(anchors) if isinstance(anchors, Sequence) else 0
    if count == 0 or count % scales:
        raise ConfigError(
            f"anchors: expected the same number of (width, height) pairs on each of the {scales} scales "
            f"(9 in the paper), got {count}"
        )
    per_scale = count // scales
    head = YOLOv3Head(
        tuple(neck_widths)[3 - scales :],
        (per_scale,) * scales,
        num_classes,
        objectness_prior=objectness_prior,
    )
    table = check_anchors(anchors, count)
    ordered = table[(table[:, 0] * table[:, 1]).argsort(stable=True)].tolist()
    return YOLOv3(
        backbone,
        neck,
        head,
        ordered,
        num_classes=num_classes,
        anchors_per_level=(per_scale,) * scales,
        ignore_threshold=ignore_threshold,
        xy_loss=xy_loss,
        class_activation=class_activation,
        assign_threshold=assign_threshold,
        box_loss=box_loss,
        image_mean=image_mean,
        image_std=image_std,
        postprocess=postprocess,
    )


def build_yolov2(
    backbone: Backbone,
    *,
    num_classes: int,
    anchors: Sequence[Sequence[float]] = VOC_ANCHORS,
    head_width: int = 1024,
    passthrough_width: int = 64,
    reorg: str = "darknet",
    ignore_threshold: float = 0.6,
    object_scale: float = 5.0,
    noobject_scale: float = 1.0,
    coord_scale: float = 1.0,
    class_scale: float = 1.0,
    rescore: bool = True,
    objectness_prior: float = 0.0,
    image_mean: Sequence[float] = _NO_NORMALIZATION[0],
    image_std: Sequence[float] = _NO_NORMALIZATION[1],
    postprocess: PostProcess | None = None,
) -> YOLOv2:
    """YOLOv2 on the ``c4, c5`` maps of any ``features_only`` backbone: passthrough (``reorg="darknet"``
    or ``"space_to_depth"``), ``head_width`` 3×3 convolutions, one 1×1 output over the anchors (pixels)."""
    shapes = backbone.output_shape()
    neck = YOLOv2Neck({"c4": shapes["c4"], "c5": shapes["c5"]}, head_width, passthrough_width, reorg)
    head = YOLOv3Head(
        (head_width,), (len(anchors),), num_classes, hidden=False, objectness_prior=objectness_prior
    )
    return YOLOv2(
        backbone,
        neck,
        head,
        anchors,
        num_classes=num_classes,
        ignore_threshold=ignore_threshold,
        object_scale=object_scale,
        noobject_scale=noobject_scale,
        coord_scale=coord_scale,
        class_scale=class_scale,
        rescore=rescore,
        image_mean=image_mean,
        image_std=image_std,
        postprocess=postprocess,
    )


def _darknet53(*, width_multiplier: float = 1.0) -> Backbone:
    return darknet53(width_multiplier=width_multiplier, features_only=True)  # type: ignore[return-value]


def _darknet19(*, width_multiplier: float = 1.0) -> Backbone:
    return darknet19(width_multiplier=width_multiplier, features_only=True)  # type: ignore[return-value]


#: anchors for the ``plain`` backbone's 128-pixel shapes images (objects of 16–48 pixels)
_SMALL_ANCHORS = ((12, 12), (16, 20), (20, 16), (24, 24), (28, 34), (34, 28), (38, 38), (44, 44), (52, 52))
_SMALL_V2_ANCHORS = ((14, 14), (22, 22), (28, 34), (34, 28), (44, 44))

YOLO_MODELS = [
    *register_detector_family(
        "yolov3",
        build_yolov3,
        {
            "plain": {"neck_widths": (32, 48, 64), "anchors": _SMALL_ANCHORS},
            "mobilenet_v2": {"neck_widths": (32, 64, 96), "anchors": _SMALL_ANCHORS},
        },
        backbones={
            "darknet53": _darknet53,
            "darknet19": _darknet19,
            "mobilenet_v2": BACKBONES["mobilenet_v2"],
            "plain": BACKBONES["plain"],
        },
        suffix="",
    ),
    *register_detector_family(
        "yolov2",
        build_yolov2,
        {"plain": {"head_width": 128, "passthrough_width": 16, "anchors": _SMALL_V2_ANCHORS}},
        backbones={"darknet19": _darknet19, "plain": BACKBONES["plain"]},
        suffix="",
    ),
]
