"""Faster R-CNN with FPN (Ren et al., 2015; Lin et al., 2017; handbook §9, §10, §16, §24).

backbone ``c2..c5`` → FPN ``p2..p6`` → RPN proposals (one anchor size per level × 3 ratios) → RoI Align
(or RoI Pool) of ``p2..p5`` → two-FC box head → ``K + 1`` class scores and class-specific box deltas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from visionkit.models.detectors._common import IMAGENET_MEAN, IMAGENET_STD, batch_images, check_targets
from visionkit.models.detectors.roi_heads import RoIHeads
from visionkit.models.detectors.rpn import RegionProposalNetwork

__all__ = ["FasterRCNN"]


class FasterRCNN(nn.Module):
    """Two-stage detector: parts are passed in, defaults live in the builders.

    Args:
        backbone: returns ``{"c2".."c5"}`` (a ``features_only`` backbone).
        neck: FPN with ``extra_blocks="maxpool"`` (``p2..p6``).
        rpn: :class:`~visionkit.models.detectors.rpn.RegionProposalNetwork` over ``rpn_feature_names``.
        roi_heads: :class:`~visionkit.models.detectors.roi_heads.RoIHeads` pooling ``roi_feature_names``.
        num_classes: ``K`` object classes (the background class is internal to the box head).

    Forward:
        ``images``: list of ``Tensor[3, H_i, W_i]`` float in [0, 1]. Training: ``targets`` (``boxes`` float
        ``[M, 4]`` xyxy, ``labels`` int64 in ``[0, K)``, optional ``iscrowd``) → ``{"rpn_objectness",
        "rpn_box_regression", "classification", "box_regression"}``. Evaluation → list of
        ``dict(boxes [D, 4], scores [D], labels [D])``.

    Example:
        >>> from visionkit.models import create_model
        >>> model = create_model("fasterrcnn_mobilenet_v2_fpn", num_classes=3).eval()  # doctest: +SKIP
        >>> detections = model([torch.rand(3, 128, 128)])  # doctest: +SKIP
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: RoIHeads,
        *,
        num_classes: int,
        rpn_feature_names: Sequence[str] = ("p2", "p3", "p4", "p5", "p6"),
        roi_feature_names: Sequence[str] = ("p2", "p3", "p4", "p5"),
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        size_divisible: int = 32,
    ) -> None:
        super().__init__()
        self.backbone, self.neck, self.rpn, self.roi_heads = backbone, neck, rpn, roi_heads
        self.num_classes = num_classes
        self.rpn_feature_names, self.roi_feature_names = list(rpn_feature_names), list(roi_feature_names)
        self.image_mean, self.image_std, self.size_divisible = (
            tuple(image_mean),
            tuple(image_std),
            size_divisible,
        )

    def forward(self, images: Sequence[Tensor], targets: Sequence[dict[str, Any]] | None = None) -> Any:
        if self.training:
            check_targets(targets, len(images), self.num_classes)
        batch, sizes = batch_images(images, self.image_mean, self.image_std, self.size_divisible)
        backbone_features = self.backbone(batch)
        if not isinstance(backbone_features, dict):
            raise TypeError(
                "the backbone must return a dict of feature maps: build it with features_only=True"
            )
        pyramid = self.neck(backbone_features)
        proposals, rpn_losses = self.rpn(batch, sizes, [pyramid[n] for n in self.rpn_feature_names], targets)
        roi_features = [pyramid[name] for name in self.roi_feature_names]
        detections, roi_losses = self.roi_heads(roi_features, proposals, sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}
        return detections
