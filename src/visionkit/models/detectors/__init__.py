"""Detectors (RetinaNet, Faster R-CNN); importing this package registers their builders."""

from visionkit.models.detectors.builders import (
    build_faster_rcnn,
    build_retinanet,
    fasterrcnn_mobilenet_v2_fpn,
    fasterrcnn_resnet50_fpn,
    retinanet_mobilenet_v2_fpn,
    retinanet_resnet50_fpn,
)
from visionkit.models.detectors.faster_rcnn import FasterRCNN
from visionkit.models.detectors.resize import ResizedInput
from visionkit.models.detectors.retinanet import RetinaNet, retinanet_loss
from visionkit.models.detectors.roi_heads import MultiScaleRoIPooler, RoIHeads
from visionkit.models.detectors.rpn import RegionProposalNetwork, rpn_loss

__all__ = [
    "FasterRCNN",
    "MultiScaleRoIPooler",
    "RegionProposalNetwork",
    "ResizedInput",
    "RetinaNet",
    "RoIHeads",
    "build_faster_rcnn",
    "build_retinanet",
    "fasterrcnn_mobilenet_v2_fpn",
    "fasterrcnn_resnet50_fpn",
    "retinanet_loss",
    "retinanet_mobilenet_v2_fpn",
    "retinanet_resnet50_fpn",
    "rpn_loss",
]
