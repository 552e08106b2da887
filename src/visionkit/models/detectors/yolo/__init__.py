"""YOLOv3 and YOLOv2 as the papers describe them (handbook §18); importing this package registers
``yolov3_darknet53``, ``yolov3_mobilenet_v2``, ``yolov3_plain``, ``yolov2_darknet19`` and ``yolov2_plain``."""

from visionkit.models.detectors.yolo.builders import YOLO_MODELS, build_yolov2, build_yolov3
from visionkit.models.detectors.yolo.common import (
    Assignment,
    GridPriors,
    assign_targets,
    check_anchors,
    decode_predictions,
    flatten_levels,
    grid_priors,
    ignore_mask,
)
from visionkit.models.detectors.yolo.darknet_weights import (
    darknet_layers,
    load_darknet_weights,
    save_darknet_weights,
)
from visionkit.models.detectors.yolo.neck import REORG_MODES, YOLOv3Head, YOLOv3Neck, reorg
from visionkit.models.detectors.yolo.yolov2 import VOC_ANCHORS, YOLOv2, YOLOv2Neck, yolov2_loss
from visionkit.models.detectors.yolo.yolov3 import COCO_ANCHORS, YOLOv3, yolov3_loss

__all__ = [
    "COCO_ANCHORS",
    "REORG_MODES",
    "VOC_ANCHORS",
    "YOLO_MODELS",
    "Assignment",
    "GridPriors",
    "YOLOv2",
    "YOLOv2Neck",
    "YOLOv3",
    "YOLOv3Head",
    "YOLOv3Neck",
    "assign_targets",
    "build_yolov2",
    "build_yolov3",
    "check_anchors",
    "darknet_layers",
    "decode_predictions",
    "flatten_levels",
    "grid_priors",
    "ignore_mask",
    "load_darknet_weights",
    "reorg",
    "save_darknet_weights",
    "yolov2_loss",
    "yolov3_loss",
]
