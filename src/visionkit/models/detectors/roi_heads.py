"""The second stage of Faster R-CNN: RoI pooling over FPN levels and the Fast R-CNN box head (§9, §24).

A proposal of area ``w·h`` is pooled from level ``k = floor(k0 + log2(sqrt(w·h) / 224))`` with ``k0 = 4``,
clamped to the available levels (FPN paper, eq. 1), by RoI Align (bilinear, no quantization; He et al.,
2017) or RoI Pool (two quantizations; Girshick, 2015) — the §24 comparison is one switch (``op``).
Training samples 512 proposals per image (ground-truth boxes added, IoU ``>= 0.5`` positive, 25 % at most)
and trains softmax classification over ``K + 1`` classes plus class-specific smooth-L1 box regression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from visionkit.losses.regression import smooth_l1_loss
from visionkit.models.detectors._common import NMS_METHODS, postprocess, training_boxes
from visionkit.ops.box_coder import decode_boxes, encode_boxes
from visionkit.ops.boxes import box_iou
from visionkit.ops.matcher import Matcher
from visionkit.ops.multiscale_roi_align import map_levels
from visionkit.ops.roi_align import roi_align
from visionkit.ops.roi_pool import roi_pool
from visionkit.ops.sampler import sample_balanced

__all__ = ["MultiScaleRoIPooler", "RoIHeads"]


class MultiScaleRoIPooler(nn.Module):
    """Pool proposals from the FPN level that matches their size (level rule: ``ops.map_levels``), by RoI
    Align (``aligned=True``: half-pixel centres, the detectron2 "ROIAlignV2" choice) or RoI Pool.

    Args:
        feature_names: levels to pool from, e.g. ``("p2", "p3", "p4", "p5")`` (stride ``2^k`` for ``p<k>``).
        output_size: pooled side ``S`` (7).
        sampling_ratio: RoI Align points per bin side (2); ignored by RoI Pool.
        op: ``"align"`` or ``"pool"``.

    Forward:
        ``(features: list of Tensor[B, C, H_l, W_l] in feature_names order, proposals: B × Tensor[P_i, 4])`` →
        ``Tensor[sum P_i, C, S, S]`` in proposal order.
    """

    def __init__(
        self, feature_names: Sequence[str], output_size: int = 7, sampling_ratio: int = 2, op: str = "align"
    ) -> None:
        super().__init__()
        if op not in ("align", "pool"):
            raise ValueError(f"op must be 'align' or 'pool', got {op!r}")
        self.feature_names = list(feature_names)
        self.levels = [int(name[1:]) for name in self.feature_names]
        self.output_size, self.sampling_ratio, self.op = output_size, sampling_ratio, op

    def extra_repr(self) -> str:
        return f"feature_names={self.feature_names}, output_size={self.output_size}, op={self.op!r}"

    def forward(self, features: Sequence[Tensor], proposals: Sequence[Tensor]) -> Tensor:
        rois = torch.cat(
            [torch.cat((torch.full_like(p[:, :1], i), p), dim=1) for i, p in enumerate(proposals)]
        )
        levels = map_levels(rois[:, 1:], self.levels[0], self.levels[-1]) + self.levels[0]
        first = features[0]
        pooled = first.new_zeros(rois.shape[0], first.shape[1], self.output_size, self.output_size)
        for level, feature in zip(self.levels, features, strict=True):
            index = torch.nonzero(levels == level).flatten()
            if index.numel() == 0:
                continue
            scale = 1.0 / 2**level
            if self.op == "align":
                out = roi_align(
                    feature, rois[index], self.output_size, scale, self.sampling_ratio, aligned=True
                )
            else:
                out = roi_pool(feature, rois[index], self.output_size, scale)
            pooled[index] = out.to(pooled.dtype)
        return pooled


class RoIHeads(nn.Module):
    """Sampling, box head, losses and post-processing of the second stage.

    Forward:
        ``(features, proposals, image_sizes, targets or None)`` → training: ``({}, {"classification",
        "box_regression"})``; evaluation: ``(list of dict(boxes, scores, labels), {})``. Labels returned to
        the user are ``0 .. K-1`` (the head's background class 0 is internal).
    """

    def __init__(
        self,
        pooler: MultiScaleRoIPooler,
        box_head: nn.Module,
        box_predictor: nn.Module,
        *,
        num_classes: int,
        fg_iou_threshold: float = 0.5,
        bg_iou_threshold: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
        score_threshold: float = 0.05,
        nms_method: str = "hard",
        nms_threshold: float = 0.5,
        soft_nms_sigma: float = 0.5,
        detections_per_image: int = 100,
    ) -> None:
        super().__init__()
        if nms_method not in NMS_METHODS:
            raise ValueError(f"nms_method must be one of {NMS_METHODS}, got {nms_method!r}")
        self.pooler, self.box_head, self.box_predictor = pooler, box_head, box_predictor
        self.num_classes = num_classes
        self.matcher = Matcher(fg_iou_threshold, bg_iou_threshold, allow_low_quality_matches=False)
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.box_coder_weights = box_coder_weights
        self.score_threshold, self.nms_method, self.nms_threshold = score_threshold, nms_method, nms_threshold
        self.soft_nms_sigma, self.detections_per_image = soft_nms_sigma, detections_per_image

    def sample(
        self, proposals: Sequence[Tensor], targets: Sequence[dict[str, Any]]
    ) -> tuple[list[Tensor], Tensor, Tensor, Tensor]:
        """Per image: add the ground truth to the proposals, match, sample.

        Returns:
            sampled proposals per image, their class labels ``[R]`` (0 = background, ``k + 1`` = class k),
            regression targets ``[R, 4]`` and a positive mask ``[R]``.
        """
        kept, labels, box_targets, positives = [], [], [], []
        for image_proposals, target in zip(proposals, targets, strict=True):
            gt_boxes, gt_labels = training_boxes(target)
            candidates = torch.cat((image_proposals, gt_boxes.to(image_proposals.dtype)))
            matches = self.matcher(box_iou(gt_boxes, candidates))
            positive, negative = sample_balanced(matches, self.batch_size_per_image, self.positive_fraction)
            chosen = torch.nonzero(positive | negative).flatten()
            chosen_matches = matches[chosen]
            is_positive = chosen_matches >= 0
            image_labels = torch.zeros_like(chosen_matches)
            image_labels[is_positive] = gt_labels[chosen_matches[is_positive]] + 1
            matched = gt_boxes[chosen_matches.clamp(min=0)] if gt_boxes.numel() else candidates[chosen]
            targets_rows = torch.zeros(chosen.numel(), 4, dtype=candidates.dtype, device=candidates.device)
            if bool(is_positive.any()):
                targets_rows[is_positive] = encode_boxes(
                    matched[is_positive].to(candidates.dtype),
                    candidates[chosen][is_positive],
                    self.box_coder_weights,
                )
            kept.append(candidates[chosen])
            labels.append(image_labels)
            box_targets.append(targets_rows)
            positives.append(is_positive)
        return kept, torch.cat(labels), torch.cat(box_targets), torch.cat(positives)

    def forward(
        self,
        features: Sequence[Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[dict[str, Any]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("RoIHeads needs targets in training mode")
            proposals, labels, box_targets, positive = self.sample(proposals, targets)
        class_logits, box_deltas = self.box_predictor(self.box_head(self.pooler(features, proposals)))
        if self.training:
            return [], self.loss(class_logits, box_deltas, labels, box_targets, positive)
        counts = [p.shape[0] for p in proposals]
        return [
            self.detect_image(logits, deltas, boxes, size)
            for logits, deltas, boxes, size in zip(
                class_logits.split(counts), box_deltas.split(counts), proposals, image_sizes, strict=True
            )
        ], {}

    @staticmethod
    def loss(
        class_logits: Tensor, box_deltas: Tensor, labels: Tensor, box_targets: Tensor, positive: Tensor
    ) -> dict[str, Tensor]:
        """Cross-entropy over the sample; smooth L1 (β = 1/9) of the true class's deltas on positives,
        summed and divided by the sample size. No positives (negative images) → box loss exactly 0."""
        classification = F.cross_entropy(class_logits, labels) if labels.numel() else class_logits.sum() * 0.0
        rows = torch.nonzero(positive).flatten()
        deltas = box_deltas.view(box_deltas.shape[0], -1, 4)[rows, labels[rows]]
        regression = smooth_l1_loss(deltas, box_targets[rows].to(deltas.dtype), beta=1 / 9, reduction="sum")
        return {"classification": classification, "box_regression": regression / max(1, labels.numel())}

    @torch.no_grad()
    def detect_image(
        self, logits: Tensor, deltas: Tensor, proposals: Tensor, image_size: tuple[int, int]
    ) -> dict[str, Tensor]:
        """Detections of one image: per class decoded boxes and softmax scores, background dropped."""
        scores = F.softmax(logits.float(), dim=-1)[:, 1:]
        boxes = decode_boxes(deltas.float(), proposals.float(), self.box_coder_weights, math.log(1000.0 / 16))
        boxes = boxes.view(-1, self.num_classes + 1, 4)[:, 1:]
        labels = torch.arange(self.num_classes, device=logits.device).expand_as(scores)
        keep = scores.flatten() > self.score_threshold
        return postprocess(
            boxes.reshape(-1, 4)[keep], scores.flatten()[keep], labels.flatten()[keep], image_size,
            nms_method=self.nms_method, nms_threshold=self.nms_threshold, soft_nms_sigma=self.soft_nms_sigma,
            score_threshold=self.score_threshold, detections_per_image=self.detections_per_image,
        )  # fmt: skip
