"""Detectors (RetinaNet, Faster R-CNN, Cascade R-CNN, RefineDet, ...) on one base class; importing this
package registers their builders (``<family>_<backbone>_fpn``, see
:mod:`visionkit.models.detectors.builders`)."""

from visionkit.models.detectors.base import Detector, batch_images, check_targets, training_boxes
from visionkit.models.detectors.builders import (
    BACKBONES,
    build_faster_rcnn,
    build_retinanet,
    make_detector_builder,
    register_detector_family,
)
from visionkit.models.detectors.cascade_rcnn import CascadeRCNN, CascadeRoIHeads, build_cascade_rcnn
from visionkit.models.detectors.faster_rcnn import FasterRCNN
from visionkit.models.detectors.postprocess import NMS_METHODS, PostProcess, postprocess_detections, suppress
from visionkit.models.detectors.refinedet import RefineDet, build_refinedet, refinedet_loss
from visionkit.models.detectors.resize import ResizedInput
from visionkit.models.detectors.retinanet import RetinaNet, retinanet_loss
from visionkit.models.detectors.roi_heads import RoIHeads
from visionkit.models.detectors.rpn import RegionProposalNetwork, rpn_loss
from visionkit.models.detectors.yolo import YOLOv2, YOLOv3, build_yolov2, build_yolov3

__all__ = [
    "BACKBONES",
    "NMS_METHODS",
    "CascadeRCNN",
    "CascadeRoIHeads",
    "Detector",
    "FasterRCNN",
    "PostProcess",
    "RefineDet",
    "RegionProposalNetwork",
    "ResizedInput",
    "RetinaNet",
    "RoIHeads",
    "YOLOv2",
    "YOLOv3",
    "batch_images",
    "build_cascade_rcnn",
    "build_faster_rcnn",
    "build_refinedet",
    "build_retinanet",
    "build_yolov2",
    "build_yolov3",
    "check_targets",
    "make_detector_builder",
    "postprocess_detections",
    "refinedet_loss",
    "register_detector_family",
    "retinanet_loss",
    "rpn_loss",
    "suppress",
    "training_boxes",
]
