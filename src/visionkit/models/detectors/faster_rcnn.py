"""Faster R-CNN with FPN (Ren et al., 2015; Lin et al., 2017; handbook §9, §10, §16, §24).

backbone ``c2..c5`` → FPN ``p2..p6`` → RPN proposals (one anchor size per level × 3 ratios) → RoI Align
(or RoI Pool) of ``p2..p5`` → two-FC box head → ``K + 1`` class scores and class-specific box deltas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from visionkit.models.detectors.base import Detector
from visionkit.models.detectors.postprocess import PostProcess
from visionkit.models.detectors.roi_heads import RoIHeads
from visionkit.models.detectors.rpn import RegionProposalNetwork
from visionkit.structures import Detections, Target

__all__ = ["FasterRCNN"]


class FasterRCNN(Detector):
    """Two-stage detector: parts are passed in, defaults live in the builders.

    Args:
        backbone: returns ``{"c2".."c5"}`` (a ``features_only`` backbone).
        neck: FPN with ``extra_blocks="maxpool"`` (``p2..p6``).
        rpn: :class:`~visionkit.models.detectors.rpn.RegionProposalNetwork` over ``rpn_feature_names``.
        roi_heads: :class:`~visionkit.models.detectors.roi_heads.RoIHeads` (its pooler names the levels).
        num_classes: ``K`` object classes (the background class is internal to the box head).
        postprocess: :class:`~visionkit.models.detectors.postprocess.PostProcess` of the final detections.
        **options: ``image_mean``, ``image_std``, ``size_divisible`` (:class:`Detector`).

    Forward:
        See :class:`~visionkit.models.detectors.base.Detector`. Training losses: ``{"rpn_objectness",
        "rpn_box_regression", "classification", "box_regression"}``.

    Example:
        >>> import torch
        >>> from visionkit.models import create_model
        >>> model = create_model("fasterrcnn_plain_fpn", num_classes=3).eval()
        >>> sorted(model([torch.rand(3, 96, 128)])[0])
        ['boxes', 'labels', 'scores']
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
        postprocess: PostProcess | None = None,
        **options: Any,
    ) -> None:
        super().__init__(backbone, neck, num_classes=num_classes, postprocess=postprocess, **options)
        self.rpn, self.roi_heads = rpn, roi_heads
        self.rpn_feature_names = list(rpn_feature_names)

    def proposals(
        self,
        batch: Tensor,
        sizes: list[tuple[int, int]],
        features: dict[str, Tensor],
        targets: Sequence[Target] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        """RPN proposals per image (``Tensor[P_i, 4]``, detached) and, with targets, the RPN losses."""
        levels = [features[name] for name in self.rpn_feature_names]
        return self.rpn(batch, sizes, levels, targets)

    def losses(
        self,
        batch: Tensor,
        sizes: list[tuple[int, int]],
        features: dict[str, Tensor],
        targets: Sequence[Target],
    ) -> dict[str, Tensor]:
        proposals, rpn_losses = self.proposals(batch, sizes, features, targets)
        _, roi_losses = self.roi_heads(features, proposals, sizes, targets)
        return {**rpn_losses, **roi_losses}

    def detect(
        self, batch: Tensor, sizes: list[tuple[int, int]], features: dict[str, Tensor]
    ) -> list[Detections]:
        proposals, _ = self.proposals(batch, sizes, features)
        detections, _ = self.roi_heads(features, proposals, sizes, postprocess=self.postprocess)
        return detections
