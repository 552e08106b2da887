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

from visionkit.losses.focal import sigmoid_focal_loss
from visionkit.losses.regression import l1_loss, smooth_l1_loss
from visionkit.models.detectors._common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NMS_METHODS,
    batch_images,
    check_targets,
    postprocess,
    training_boxes,
)
from visionkit.ops.anchors import AnchorGenerator
from visionkit.ops.box_coder import decode_boxes, encode_boxes
from visionkit.ops.boxes import box_iou
from visionkit.ops.matcher import Matcher

__all__ = ["RetinaNet", "retinanet_loss"]


def retinanet_loss(
    class_logits: Tensor,
    box_deltas: Tensor,
    anchors: Sequence[Tensor],
    targets: Sequence[dict[str, Any]],
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
        ``{"classification": focal loss, "box_regression": L1 (or smooth L1) of (tx, ty, tw, th)}``. An image
        without objects contributes only background to the focal loss and exactly 0 to box regression.
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
        if box_loss == "l1":
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


class RetinaNet(nn.Module):
    """One-stage dense detector: parts are passed in, defaults live in the builders.

    Args:
        backbone: returns ``{"c2".."c5"}`` (a ``features_only`` backbone).
        neck: e.g. :class:`~visionkit.models.necks.FeaturePyramidNetwork` with ``extra_blocks="p6p7"``.
        head: :class:`~visionkit.models.heads.RetinaNetHead`.
        anchor_generator: one entry per level of ``feature_names``.
        num_classes: ``K`` (no background class: sigmoid per class).
        feature_names: neck outputs used, finest first (default: all of ``neck.out_names``).
        score_threshold, nms_method (``"hard"``, ``"soft_linear"``, ``"soft_gaussian"``), nms_threshold,
        soft_nms_sigma, topk_candidates, detections_per_image: post-processing.

    Forward:
        ``images``: list of ``Tensor[3, H_i, W_i]`` float in [0, 1]. Training: ``targets`` list of dicts
        (``boxes`` float ``[M, 4]`` xyxy pixels, ``labels`` int64 ``[M]`` in ``[0, K)``, optional
        ``iscrowd``) → ``{"classification", "box_regression"}``. Evaluation → list of
        ``dict(boxes [D, 4], scores [D], labels [D])`` in each image's pixels.

    Example:
        >>> from visionkit.models import create_model
        >>> model = create_model("retinanet_mobilenet_v2_fpn", num_classes=3).eval()  # doctest: +SKIP
        >>> detections = model([torch.rand(3, 128, 128)])  # doctest: +SKIP
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
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        size_divisible: int = 32,
        fg_iou_threshold: float = 0.5,
        bg_iou_threshold: float = 0.4,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        box_loss: str = "l1",
        score_threshold: float = 0.05,
        nms_method: str = "hard",
        nms_threshold: float = 0.5,
        soft_nms_sigma: float = 0.5,
        topk_candidates: int = 1000,
        detections_per_image: int = 100,
    ) -> None:
        super().__init__()
        if nms_method not in NMS_METHODS:
            raise ValueError(f"nms_method must be one of {NMS_METHODS}, got {nms_method!r}")
        if box_loss not in ("l1", "smooth_l1"):
            raise ValueError(f"box_loss must be 'l1' or 'smooth_l1', got {box_loss!r}")
        self.backbone, self.neck, self.head, self.anchor_generator = backbone, neck, head, anchor_generator
        self.num_classes = num_classes
        self.feature_names = list(feature_names or neck.out_names)  # type: ignore[arg-type]
        self.image_mean, self.image_std, self.size_divisible = (
            tuple(image_mean),
            tuple(image_std),
            size_divisible,
        )
        self.matcher = Matcher(fg_iou_threshold, bg_iou_threshold, allow_low_quality_matches=True)
        self.focal_alpha, self.focal_gamma, self.box_loss = focal_alpha, focal_gamma, box_loss
        self.score_threshold, self.nms_method, self.nms_threshold = score_threshold, nms_method, nms_threshold
        self.soft_nms_sigma, self.topk_candidates = soft_nms_sigma, topk_candidates
        self.detections_per_image = detections_per_image

    def features(self, batch: Tensor) -> list[Tensor]:
        """Neck feature maps (finest first) of a normalized, padded batch."""
        backbone_features = self.backbone(batch)
        if not isinstance(backbone_features, dict):
            raise TypeError(
                "the backbone must return a dict of feature maps: build it with features_only=True"
            )
        pyramid = self.neck(backbone_features)
        return [pyramid[name] for name in self.feature_names]

    def forward(self, images: Sequence[Tensor], targets: Sequence[dict[str, Any]] | None = None) -> Any:
        if self.training:
            check_targets(targets, len(images), self.num_classes)
        batch, sizes = batch_images(images, self.image_mean, self.image_std, self.size_divisible)
        levels = self.features(batch)
        class_logits, box_deltas = self.head(levels)
        anchors = self.anchor_generator(batch, levels)
        if self.training:
            assert targets is not None
            return retinanet_loss(
                class_logits, box_deltas, anchors, targets, self.matcher, focal_alpha=self.focal_alpha,
                focal_gamma=self.focal_gamma, box_loss=self.box_loss,
            )  # fmt: skip
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
    ) -> dict[str, Tensor]:
        """Detections of one image from its ``[N, K]`` logits, ``[N, 4]`` deltas and ``[N, 4]`` anchors."""
        boxes_all, scores_all, labels_all = [], [], []
        for level_logits, level_deltas, level_anchors in zip(
            logits.split(per_level), deltas.split(per_level), anchors.split(per_level), strict=True
        ):
            scores = torch.sigmoid(level_logits.float()).flatten()
            candidates = torch.nonzero(scores > self.score_threshold).flatten()
            top = scores[candidates].topk(min(self.topk_candidates, candidates.numel()))
            candidates = candidates[top.indices]
            anchor_index = torch.div(candidates, self.num_classes, rounding_mode="floor")
            boxes_all.append(decode_boxes(level_deltas[anchor_index].float(), level_anchors[anchor_index]))
            scores_all.append(top.values)
            labels_all.append(candidates % self.num_classes)
        return postprocess(
            torch.cat(boxes_all), torch.cat(scores_all), torch.cat(labels_all), image_size,
            nms_method=self.nms_method, nms_threshold=self.nms_threshold, soft_nms_sigma=self.soft_nms_sigma,
            score_threshold=self.score_threshold, detections_per_image=self.detections_per_image,
        )  # fmt: skip
