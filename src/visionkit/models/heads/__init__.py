"""Detection heads: RetinaNet subnets, the RPN head and the Fast R-CNN box head."""

from visionkit.models.heads.box_head import FastRCNNPredictor, TwoMLPHead
from visionkit.models.heads.retinanet_head import (
    RetinaNetClassificationHead,
    RetinaNetHead,
    RetinaNetRegressionHead,
    flatten_level_outputs,
)
from visionkit.models.heads.rpn_head import RPNHead

__all__ = [
    "FastRCNNPredictor",
    "RPNHead",
    "RetinaNetClassificationHead",
    "RetinaNetHead",
    "RetinaNetRegressionHead",
    "TwoMLPHead",
    "flatten_level_outputs",
]
