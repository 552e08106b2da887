"""visionkit.losses: focal, smooth-L1/L1, IoU-based and class-imbalance losses (function + module each)."""

from visionkit.losses.focal import SigmoidFocalLoss, SoftmaxFocalLoss, sigmoid_focal_loss, softmax_focal_loss
from visionkit.losses.iou import CIoULoss, DIoULoss, GIoULoss, ciou_loss, diou_loss, giou_loss
from visionkit.losses.regression import L1Loss, SmoothL1Loss, l1_loss, smooth_l1_loss
from visionkit.losses.weighted import (
    BCEWithPosWeightLoss,
    WeightedCrossEntropyLoss,
    bce_with_pos_weight,
    class_weights,
    class_weights_from_labels,
    weighted_cross_entropy,
)

__all__ = [
    "BCEWithPosWeightLoss",
    "CIoULoss",
    "DIoULoss",
    "GIoULoss",
    "L1Loss",
    "SigmoidFocalLoss",
    "SmoothL1Loss",
    "SoftmaxFocalLoss",
    "WeightedCrossEntropyLoss",
    "bce_with_pos_weight",
    "ciou_loss",
    "class_weights",
    "class_weights_from_labels",
    "diou_loss",
    "giou_loss",
    "l1_loss",
    "sigmoid_focal_loss",
    "smooth_l1_loss",
    "softmax_focal_loss",
    "weighted_cross_entropy",
]
