"""Detection metrics: COCO AP/AR (equal to pycocotools) and PASCAL VOC AP (11-point and all-point)."""

from visionkit.metrics.detection.coco import CocoResult, evaluate_coco, evaluate_coco_sets
from visionkit.metrics.detection.io import (
    DetectionSet,
    GroundTruthSet,
    from_predictions,
    load_coco_ground_truth,
    load_coco_results,
    to_predictions,
    to_targets,
)
from visionkit.metrics.detection.meter import DetectionMeter
from visionkit.metrics.detection.voc import VocResult, evaluate_voc, evaluate_voc_sets

__all__ = [
    "CocoResult",
    "DetectionMeter",
    "DetectionSet",
    "GroundTruthSet",
    "VocResult",
    "evaluate_coco",
    "evaluate_coco_sets",
    "evaluate_voc",
    "evaluate_voc_sets",
    "from_predictions",
    "load_coco_ground_truth",
    "load_coco_results",
    "to_predictions",
    "to_targets",
]
