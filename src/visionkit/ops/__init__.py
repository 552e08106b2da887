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
from visionkit.ops.sampler import BalancedPositiveNegativeSampler, sample_balanced

__all__ = [
    "AnchorGenerator",
    "BalancedPositiveNegativeSampler",
    "BoxCoder",
    "Matcher",
    "anchor_fitness",
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
    "remove_small_boxes",
    "sample_balanced",
    "validate_boxes",
    "wh_iou",
]
