"""visionkit.ops: pure functions on tensors (torch only), with thin modules on top."""

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

__all__ = [
    "box_area",
    "box_convert",
    "box_ioa",
    "box_iou",
    "clip_boxes_to_image",
    "complete_box_iou",
    "distance_box_iou",
    "elementwise_box_iou",
    "elementwise_complete_box_iou",
    "elementwise_distance_box_iou",
    "elementwise_generalized_box_iou",
    "generalized_box_iou",
    "remove_small_boxes",
    "validate_boxes",
]
