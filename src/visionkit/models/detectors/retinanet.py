"""RetinaNet (Lin et al., 2017, "Focal Loss for Dense Object Detection"; handbook §11, §17).

backbone ``c3..c5`` → FPN ``p3..p7`` → class and box subnets over 9 anchors per location (3 scales per
octave × 3 ratios) → focal loss for classes and L1 for boxes in training; in evaluation, per level the
``topk_candidates`` best (anchor, class) scores above ``score_threshold`` are decoded, then all levels go
through class-aware NMS or Soft-NMS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from visionkit.errors import ConfigError
from visionkit.losses.focal import sigmoid_focal_loss
from visionkit.losses.iou import giou_loss
from visionkit.losses.regression import l1_loss, smooth_l1_loss
from visionkit.models.detectors.base import Detector, training_boxes
from visionkit.models.detectors.postprocess import PostProcess, postprocess_detections
from visionkit.ops.anchors import AnchorGenerator
from visionkit.ops.box_coder import decode_boxes, encode_boxes
from visionkit.ops.boxes import box_iou
from visionkit.ops.matcher import Matcher
from visionkit.structures import Detections, Target

__all__ = ["RetinaNet", "retinanet_loss"]


def retinanet_loss(
    class_logits: Tensor,
    box_deltas: Tensor,
    anchors: Sequence[Tensor],
    targets: Sequence[Target],
    matcher: Matcher,
    *,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    box_loss: str = "l1",
) -> dict[str, Tensor]:
    """RetinaNet losses averaged over images, each normalized by the image's number of foreground anchors.

    Args:
        class_logits: ``Tensor[B, N, K]``; box_deltas: ``Tensor[B, N, 4]``; anchors: ``B`` × ``Tensor[N, 4]``.
        targets: dicts with ``boxes`` ``[M, 4]`` xyxy and ``labels`` ``[M]`` (crowd regions left out).
        matcher: anchors with IoU ``>= high`` are foreground, ``< low`` background, between ignored.

    Returns:
        ``{"classification": focal loss, "box_regression": L1 (or smooth L1) of (tx, ty, tw, th), or
        ``box_loss="giou"``: 1 − GIoU of the decoded boxes with their ground truth (Rezatofighi et al.,
        2019)}``. An image without objects contributes only background to the focal loss and exactly 0 to
        box regression.
    """
    classification, regression = [], []
    for logits, deltas, image_anchors, target in zip(class_logits, box_deltas, anchors, targets, strict=True):
        gt_boxes, gt_labels = training_boxes(target)
        matches = matcher(box_iou(gt_boxes, image_anchors))
        foreground = matches >= 0
        valid = matches != Matcher.BETWEEN_THRESHOLDS
        normalizer = max(1, int(foreground.sum()))
        class_targets = torch.zeros_like(logits)
        class_targets[foreground, gt_labels[matches[foreground]]] = 1.0
        focal = sigmoid_focal_loss(
            logits[valid], class_targets[valid], focal_alpha, focal_gamma, reduction="sum"
        )
        classification.append(focal / normalizer)
        matched_boxes = gt_boxes[matches[foreground]]
        box_targets = encode_boxes(matched_boxes.to(image_anchors.dtype), image_anchors[foreground])
        if box_loss == "giou":
            predicted = decode_boxes(deltas[foreground].float(), image_anchors[foreground].float())
            loss = giou_loss(predicted, matched_boxes.float(), reduction="sum")
        elif box_loss == "l1":
            loss = l1_loss(deltas[foreground], box_targets.to(deltas.dtype), reduction="sum")
        else:
            loss = smooth_l1_loss(
                deltas[foreground], box_targets.to(deltas.dtype), beta=1 / 9, reduction="sum"
            )
        regression.append(loss / normalizer)
    return {
        "classification": torch.stack(classification).mean(),
        "box_regression": torch.stack(regression).mean(),
    }


class RetinaNet(Detector):
    """One-stage dense detector: parts are passed in, defaults live in the builders.

    Args:
        backbone: returns ``{"c2".."c5"}`` (a ``features_only`` backbone).
        neck: e.g. :class:`~visionkit.models.necks.FeaturePyramidNetwork` with ``extra_blocks="p6p7"``.
        head: :class:`~visionkit.models.heads.RetinaNetHead`.
        anchor_generator: one entry per level of ``feature_names``.
        num_classes: ``K`` (no background class: sigmoid per class).
        feature_names: neck outputs used, finest first (default: all of ``neck.out_names``).
        fg_iou_threshold, bg_iou_threshold: anchor matching (0.5 / 0.4); focal_alpha, focal_gamma: the
        focal loss; box_loss: ``"l1"`` or ``"smooth_l1"`` of the deltas, or ``"giou"`` of the boxes.
        postprocess: :class:`~visionkit.models.detectors.postprocess.PostProcess` (``topk_candidates`` per
            level before suppression).
        **options: ``image_mean``, ``image_std``, ``size_divisible`` (:class:`Detector`).

    Forward:
        See :class:`~visionkit.models.detectors.base.Detector`. Training losses: ``{"classification",
        "box_regression"}``.

    Example:
        >>> from visionkit.models import create_model
        >>> model = create_model("retinanet_plain_fpn", num_classes=3).eval()
        >>> detections = model([torch.rand(3, 128, 96)])
        >>> detections[0]["boxes"].shape[1]
        4
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        head: nn.Module,
        anchor_generator: AnchorGenerator,
        *,
        num_classes: int,
        feature_names: Sequence[str] | None = None,
        fg_iou_threshold: float = 0.5,
        bg_iou_threshold: float = 0.4,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_loss: str = "l1",
        postprocess: PostProcess | None = None,
        **options: Any,
    ) -> None:
        super().__init__(backbone, neck, num_classes=num_classes, postprocess=postprocess, **options)
        if box_loss not in ("l1", "smooth_l1", "giou"):
            raise ConfigError(
                f"box_loss={box_loss!r}: expected one of ['l1', 'smooth_l1', 'giou'] for RetinaNet"
            )
        self.head, self.anchor_generator = head, anchor_generator
        self.feature_names = list(feature_names or neck.out_names)  # type: ignore[arg-type]
        self.matcher = Matcher(fg_iou_threshold, bg_iou_threshold, allow_low_quality_matches=True)
        self.focal_alpha, self.focal_gamma, self.box_loss = focal_alpha, focal_gamma, box_loss

    def levels(self, batch: Tensor) -> list[Tensor]:
        """The detection levels (neck outputs in ``feature_names`` order) of a normalized, padded batch."""
        features = self.extract_features(batch)
        return [features[name] for name in self.feature_names]

    def _outputs(
        self, batch: Tensor, features: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
        levels = [features[name] for name in self.feature_names]
        class_logits, box_deltas = self.head(levels)
        return class_logits, box_deltas, self.anchor_generator(batch, levels), levels

    def losses(
        self,
        batch: Tensor,
        sizes: list[tuple[int, int]],
        features: dict[str, Tensor],
        targets: Sequence[Target],
    ) -> dict[str, Tensor]:
        class_logits, box_deltas, anchors, _ = self._outputs(batch, features)
        return retinanet_loss(
            class_logits,
            box_deltas,
            anchors,
            targets,
            self.matcher,
            focal_alpha=self.focal_alpha,
            focal_gamma=self.focal_gamma,
            box_loss=self.box_loss,
        )

    def detect(
        self, batch: Tensor, sizes: list[tuple[int, int]], features: dict[str, Tensor]
    ) -> list[Detections]:
        class_logits, box_deltas, anchors, levels = self._outputs(batch, features)
        per_level = [
            f.shape[-2] * f.shape[-1] * a
            for f, a in zip(levels, self.anchor_generator.num_anchors_per_location(), strict=True)
        ]
        return [
            self.detect_image(logits, deltas, image_anchors, size, per_level)
            for logits, deltas, image_anchors, size in zip(
                class_logits, box_deltas, anchors, sizes, strict=True
            )
        ]

    @torch.no_grad()
    def detect_image(
        self,
        logits: Tensor,
        deltas: Tensor,
        anchors: Tensor,
        image_size: tuple[int, int],
        per_level: list[int],
    ) -> Detections:
        """Detections of one image from its ``[N, K]`` logits, ``[N, 4]`` deltas and ``[N, 4]`` anchors."""
        settings = self.postprocess
        boxes_all, scores_all, labels_all = [], [], []
        for level_logits, level_deltas, level_anchors in zip(
            logits.split(per_level), deltas.split(per_level), anchors.split(per_level), strict=True
        ):
            scores = torch.sigmoid(level_logits.float()).flatten()
            candidates = torch.nonzero(scores > settings.score_threshold).flatten()
            top = scores[candidates].topk(min(settings.topk_candidates, candidates.numel()))
            candidates = candidates[top.indices]
            anchor_index = torch.div(candidates, self.num_classes, rounding_mode="floor")
            boxes_all.append(decode_boxes(level_deltas[anchor_index].float(), level_anchors[anchor_index]))
            scores_all.append(top.values)
            labels_all.append(candidates % self.num_classes)
        return postprocess_detections(
            torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all), image_size, settings
        )
