"""visionkit.ops: pure functions on tensors (torch only), with thin modules on top."""

from visionkit.ops.anchors import (
    AnchorGenerator,
    anchor_fitness,
    fpn_anchor_generator,
    generate_anchors,
    generate_base_anchors,
    grid_anchors,
    kmeans_anchors,
    wh_iou,
)
from visionkit.ops.box_coder import BoxCoder, decode_boxes, encode_boxes
from visionkit.ops.boxes import (
    box_area,
    box_convert,
    box_ioa,
    box_iou,
    clip_boxes_to_image,
    complete_box_iou,
    distance_box_iou,
    elementwise_box_iou,
    elementwise_complete_box_iou,
    elementwise_distance_box_iou,
    elementwise_generalized_box_iou,
    generalized_box_iou,
    remove_small_boxes,
    validate_boxes,
)
from visionkit.ops.matcher import Matcher, match_by_quality
from visionkit.ops.multiscale_roi_align import MultiScaleRoIAlign
from visionkit.ops.nms import NMS, batched_nms, nms
from visionkit.ops.pooling import AvgPool2d, MaxPool2d, avg_pool2d, max_pool2d
from visionkit.ops.roi_align import RoIAlign, roi_align
from visionkit.ops.roi_pool import RoIPool, roi_pool
from visionkit.ops.sampler import BalancedPositiveNegativeSampler, sample_balanced
from visionkit.ops.soft_nms import SoftNMS, batched_soft_nms, soft_nms

__all__ = [
    "NMS",
    "AnchorGenerator",
    "AvgPool2d",
    "BalancedPositiveNegativeSampler",
    "BoxCoder",
    "Matcher",
    "MaxPool2d",
    "MultiScaleRoIAlign",
    "RoIAlign",
    "RoIPool",
    "SoftNMS",
    "anchor_fitness",
    "avg_pool2d",
    "batched_nms",
    "batched_soft_nms",
    "box_area",
    "box_convert",
    "box_ioa",
    "box_iou",
    "clip_boxes_to_image",
    "complete_box_iou",
    "decode_boxes",
    "distance_box_iou",
    "elementwise_box_iou",
    "elementwise_complete_box_iou",
    "elementwise_distance_box_iou",
    "elementwise_generalized_box_iou",
    "encode_boxes",
    "fpn_anchor_generator",
    "generalized_box_iou",
    "generate_anchors",
    "generate_base_anchors",
    "grid_anchors",
    "kmeans_anchors",
    "match_by_quality",
    "max_pool2d",
    "nms",
    "remove_small_boxes",
    "roi_align",
    "roi_pool",
    "sample_balanced",
    "soft_nms",
    "validate_boxes",
    "wh_iou",
]
