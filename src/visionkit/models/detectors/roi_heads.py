"""The second stage of Faster R-CNN: RoI pooling over FPN levels and the Fast R-CNN box head (§9, §24).

A proposal of area ``w·h`` is pooled from level ``k = floor(k0 + log2(sqrt(w·h) / 224))`` with ``k0 = 4``,
clamped to the available levels (FPN paper, eq. 1), by RoI Align (bilinear, no quantization; He et al.,
2017) or RoI Pool (two quantizations; Girshick, 2015) — the §24 comparison is one switch (the pooler's
``op``, :class:`~visionkit.ops.multiscale_roi_align.MultiScaleRoIAlign`).
Training samples 512 proposals per image (ground-truth boxes added, IoU ``>= 0.5`` positive, 25 % at most)
and trains softmax classification over ``K + 1`` classes plus class-specific smooth-L1 box regression.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from visionkit.losses.regression import smooth_l1_loss
from visionkit.models.detectors.base import training_boxes
from visionkit.models.detectors.postprocess import PostProcess, postprocess_detections
from visionkit.ops.box_coder import decode_boxes, encode_boxes
from visionkit.ops.boxes import box_iou
from visionkit.ops.matcher import Matcher
from visionkit.ops.multiscale_roi_align import MultiScaleRoIAlign
from visionkit.ops.sampler import sample_balanced
from visionkit.structures import Detections, Target

__all__ = ["RoIHeads", "class_detections", "label_boxes"]


def label_boxes(
    boxes: Tensor, matches: Tensor, gt_boxes: Tensor, gt_labels: Tensor, weights: Sequence[float]
) -> tuple[Tensor, Tensor, Tensor]:
    """Class labels and regression targets of ``boxes`` ``Tensor[R, 4]`` from their matcher output.

    Args:
        matches: ``Tensor[R]`` matched gt index, or negative (background); gt_boxes ``[M, 4]``,
            gt_labels ``[M]`` (``0..K-1``); weights: the box coder's ``(wx, wy, ww, wh)``.

    Returns:
        labels ``[R]`` (0 = background, ``k + 1`` = class k), targets ``[R, 4]`` (zero rows for background)
        and the positive mask ``[R]``.

    Example:
        >>> boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]])
        >>> labels, targets, positive = label_boxes(boxes, torch.tensor([0, -1]),
        ...     torch.tensor([[0.0, 0.0, 10.0, 20.0]]), torch.tensor([2]), (10.0, 10.0, 5.0, 5.0))
        >>> labels.tolist(), positive.tolist(), targets[1].tolist()
        ([3, 0], [True, False], [0.0, 0.0, 0.0, 0.0])
    """
    is_positive = matches >= 0
    labels = torch.zeros_like(matches)
    labels[is_positive] = gt_labels[matches[is_positive]] + 1
    targets = torch.zeros(boxes.shape[0], 4, dtype=boxes.dtype, device=boxes.device)
    if bool(is_positive.any()):
        matched = gt_boxes[matches[is_positive]].to(boxes.dtype)
        targets[is_positive] = encode_boxes(matched, boxes[is_positive], weights)
    return labels, targets, is_positive


def class_detections(
    scores: Tensor, boxes: Tensor, image_size: tuple[int, int], settings: PostProcess
) -> Detections:
    """Detections of one image from per-class scores ``[R, K]`` (background dropped) and boxes, either
    per class ``[R, K, 4]`` or one per RoI ``[R, 4]`` (class-agnostic regression): every (RoI, class)
    pair scoring above the threshold is a candidate for :func:`postprocess_detections`."""
    num_classes = scores.shape[1]
    if boxes.dim() == 2:
        boxes = boxes[:, None, :].expand(-1, num_classes, 4)
    labels = torch.arange(num_classes, device=scores.device).expand_as(scores)
    keep = scores.flatten() > settings.score_threshold
    return postprocess_detections(
        boxes.reshape(-1, 4)[keep], scores.flatten()[keep], labels.flatten()[keep], image_size, settings
    )


class RoIHeads(nn.Module):
    """Sampling, box head, losses and post-processing of the second stage.

    Args:
        pooler: the multi-scale RoI pooler (RoI Align or RoI Pool over the FPN levels).
        box_head: pooled features ``[R, C, S, S]`` → ``[R, D]`` (e.g. :class:`~..heads.TwoMLPHead`).
        box_predictor: ``[R, D]`` → class logits ``[R, K + 1]`` and class-specific deltas ``[R, 4(K + 1)]``.
        num_classes: ``K``; fg_iou_threshold / bg_iou_threshold: proposal matching; batch_size_per_image /
        positive_fraction: the sampler; box_coder_weights: delta normalization (10, 10, 5, 5).

    Forward:
        ``(features dict, proposals, image_sizes, targets or None, postprocess)`` → training: ``([],
        {"classification", "box_regression"})``; evaluation: ``(list of Detections, {})``. Labels returned
        to the user are ``0 .. K-1`` (the head's background class 0 is internal).
    """

    def __init__(
        self,
        pooler: MultiScaleRoIAlign,
        box_head: nn.Module,
        box_predictor: nn.Module,
        *,
        num_classes: int,
        fg_iou_threshold: float = 0.5,
        bg_iou_threshold: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        box_coder_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
    ) -> None:
        super().__init__()
        self.pooler, self.box_head, self.box_predictor = pooler, box_head, box_predictor
        self.num_classes = num_classes
        self.matcher = Matcher(fg_iou_threshold, bg_iou_threshold, allow_low_quality_matches=False)
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.box_coder_weights = box_coder_weights

    def sample(
        self, proposals: Sequence[Tensor], targets: Sequence[Target]
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
            image_labels, targets_rows, is_positive = label_boxes(
                candidates[chosen], matches[chosen], gt_boxes, gt_labels, self.box_coder_weights
            )
            kept.append(candidates[chosen])
            labels.append(image_labels)
            box_targets.append(targets_rows)
            positives.append(is_positive)
        return kept, torch.cat(labels), torch.cat(box_targets), torch.cat(positives)

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Target] | None = None,
        postprocess: PostProcess | None = None,
    ) -> tuple[list[Detections], dict[str, Tensor]]:
        if self.training:
            if targets is None:
                raise ValueError("RoIHeads needs targets in training mode")
            proposals, labels, box_targets, positive = self.sample(proposals, targets)
        pooled = self.pooler(features, list(proposals), list(image_sizes))
        class_logits, box_deltas = self.box_predictor(self.box_head(pooled))
        if self.training:
            return [], self.loss(class_logits, box_deltas, labels, box_targets, positive)
        settings = postprocess if postprocess is not None else PostProcess()
        counts = [p.shape[0] for p in proposals]
        return [
            self.detect_image(logits, deltas, boxes, size, settings)
            for logits, deltas, boxes, size in zip(
                class_logits.split(counts), box_deltas.split(counts), proposals, image_sizes, strict=True
            )
        ], {}

    @staticmethod
    def loss(
        class_logits: Tensor, box_deltas: Tensor, labels: Tensor, box_targets: Tensor, positive: Tensor
    ) -> dict[str, Tensor]:
        """Cross-entropy over the sample; smooth L1 (β = 1/9) of the true class's deltas on positives (the
        one box of class-agnostic deltas ``[R, 4]``), summed and divided by the sample size. No positives
        (negative images) → box loss exactly 0."""
        classification = F.cross_entropy(class_logits, labels) if labels.numel() else class_logits.sum() * 0.0
        rows = torch.nonzero(positive).flatten()
        per_class = box_deltas.view(box_deltas.shape[0], -1, 4)
        columns = (
            labels[rows] if per_class.shape[1] > 1 else torch.zeros_like(rows)
        )  # class-agnostic: one box
        deltas = per_class[rows, columns]
        regression = smooth_l1_loss(deltas, box_targets[rows].to(deltas.dtype), beta=1 / 9, reduction="sum")
        return {"classification": classification, "box_regression": regression / max(1, labels.numel())}

    @torch.no_grad()
    def detect_image(
        self,
        logits: Tensor,
        deltas: Tensor,
        proposals: Tensor,
        image_size: tuple[int, int],
        settings: PostProcess,
    ) -> Detections:
        """Detections of one image: per class decoded boxes and softmax scores, background dropped."""
        scores = F.softmax(logits.float(), dim=-1)[:, 1:]
        boxes = decode_boxes(deltas.float(), proposals.float(), self.box_coder_weights, math.log(1000.0 / 16))
        boxes = boxes.view(-1, self.num_classes + 1, 4)[:, 1:]
        return class_detections(scores, boxes, image_size, settings)
