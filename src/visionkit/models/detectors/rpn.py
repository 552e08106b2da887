"""Region Proposal Network (Ren et al., 2015, "Faster R-CNN", §3.1; handbook §10).

Training: anchors are matched to ground truth (IoU ``>= 0.7`` positive, ``< 0.3`` negative, between ignored;
every object also claims its best anchors), 256 anchors per image are sampled with up to half positives,
objectness is trained with binary cross-entropy on the sample and deltas with smooth L1 on its positives.
Proposals: per level keep the ``pre_nms_top_n`` best anchors, decode, clip to the image, remove small and
low-score boxes, NMS per level at 0.7, keep the ``post_nms_top_n`` best per image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from visionkit.losses.regression import smooth_l1_loss
from visionkit.models.detectors.base import training_boxes
from visionkit.models.heads.retinanet_head import flatten_level_outputs
from visionkit.ops.anchors import AnchorGenerator
from visionkit.ops.box_coder import decode_boxes, encode_boxes
from visionkit.ops.boxes import box_iou, clip_boxes_to_image, remove_small_boxes
from visionkit.ops.matcher import Matcher
from visionkit.ops.nms import batched_nms
from visionkit.ops.sampler import sample_balanced

__all__ = ["RegionProposalNetwork", "rpn_loss"]


def rpn_loss(
    objectness: Tensor,
    deltas: Tensor,
    anchors: Sequence[Tensor],
    targets: Sequence[dict[str, Any]],
    matcher: Matcher,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """RPN losses over the sampled anchors of the whole batch.

    Args:
        objectness: ``Tensor[B, N]`` logits; deltas: ``Tensor[B, N, 4]``; anchors: ``B`` × ``Tensor[N, 4]``.

    Returns:
        ``{"rpn_objectness": BCE mean over sampled anchors, "rpn_box_regression": smooth L1 (β = 1/9) summed
        over sampled positives / number sampled}`` (torchvision's normalization). An image without objects
        samples only negatives and adds exactly 0 to the box term.
    """
    logits, labels, predicted, wanted = [], [], [], []
    for image_objectness, image_deltas, image_anchors, target in zip(
        objectness, deltas, anchors, targets, strict=True
    ):
        gt_boxes, _ = training_boxes(target)
        matches = matcher(box_iou(gt_boxes, image_anchors))
        positive, negative = sample_balanced(matches, batch_size_per_image, positive_fraction, generator)
        sampled = positive | negative
        logits.append(image_objectness[sampled])
        labels.append(positive[sampled].to(image_objectness.dtype))
        predicted.append(image_deltas[positive])
        matched = gt_boxes[matches[positive]].to(image_anchors.dtype)
        wanted.append(encode_boxes(matched, image_anchors[positive]).to(image_deltas.dtype))
    num_sampled = max(1, sum(int(x.numel()) for x in logits))
    objectness_loss = F.binary_cross_entropy_with_logits(
        torch.cat(logits), torch.cat(labels), reduction="sum"
    )
    box_loss = smooth_l1_loss(torch.cat(predicted), torch.cat(wanted), beta=1 / 9, reduction="sum")
    return {"rpn_objectness": objectness_loss / num_sampled, "rpn_box_regression": box_loss / num_sampled}


class RegionProposalNetwork(nn.Module):
    """RPN over one or several feature levels.

    Args:
        anchor_generator: anchors per level (e.g. one size per FPN level × 3 ratios).
        head: :class:`~visionkit.models.heads.RPNHead`.
        fg_iou_threshold, bg_iou_threshold: matcher thresholds (0.7 / 0.3).
        batch_size_per_image, positive_fraction: sampler (256, 0.5).
        pre_nms_top_n, post_nms_top_n: ``(training, testing)`` numbers of boxes per level before NMS and
            per image after it.
        nms_threshold: NMS IoU between proposals of one level (0.7).
        score_threshold: minimum objectness probability; min_size: minimum side in pixels.

    Forward:
        ``(batch [B, C, H, W], image_sizes, features list of [B, C, H_l, W_l], targets or None)`` →
        ``(proposals: B × Tensor[P_i, 4] xyxy, detached; losses dict, empty in evaluation)``.
    """

    def __init__(
        self,
        anchor_generator: AnchorGenerator,
        head: nn.Module,
        *,
        fg_iou_threshold: float = 0.7,
        bg_iou_threshold: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n: tuple[int, int] = (2000, 1000),
        post_nms_top_n: tuple[int, int] = (2000, 1000),
        nms_threshold: float = 0.7,
        score_threshold: float = 0.0,
        min_size: float = 1e-3,
    ) -> None:
        super().__init__()
        self.anchor_generator, self.head = anchor_generator, head
        self.matcher = Matcher(fg_iou_threshold, bg_iou_threshold, allow_low_quality_matches=True)
        self.batch_size_per_image, self.positive_fraction = batch_size_per_image, positive_fraction
        self.pre_nms_top_n, self.post_nms_top_n = tuple(pre_nms_top_n), tuple(post_nms_top_n)
        self.nms_threshold, self.score_threshold, self.min_size = nms_threshold, score_threshold, min_size

    def forward(
        self,
        batch: Tensor,
        image_sizes: Sequence[tuple[int, int]],
        features: Sequence[Tensor],
        targets: Sequence[dict[str, Any]] | None = None,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        objectness_maps, delta_maps = self.head(features)
        anchors = self.anchor_generator(batch, features)
        objectness = flatten_level_outputs(objectness_maps, 1).squeeze(2)
        deltas = flatten_level_outputs(delta_maps, 4)
        per_level = [o.shape[1] * o.shape[2] * o.shape[3] for o in objectness_maps]
        proposals = [
            self.propose(o.detach(), d.detach(), a, size, per_level)
            for o, d, a, size in zip(objectness, deltas, anchors, image_sizes, strict=True)
        ]
        losses: dict[str, Tensor] = {}
        if self.training:
            if targets is None:
                raise ValueError("RegionProposalNetwork needs targets in training mode")
            losses = rpn_loss(objectness, deltas, anchors, targets, self.matcher, self.batch_size_per_image,
                              self.positive_fraction)  # fmt: skip
        return proposals, losses

    def propose(
        self,
        objectness: Tensor,
        deltas: Tensor,
        anchors: Tensor,
        image_size: tuple[int, int],
        per_level: list[int],
    ) -> Tensor:
        """One image: ``[N]`` logits, ``[N, 4]`` deltas, ``[N, 4]`` anchors → proposals ``Tensor[P, 4]``."""
        mode = 0 if self.training else 1
        boxes, scores, levels = [], [], []
        for level, (level_scores, level_deltas, level_anchors) in enumerate(
            zip(objectness.split(per_level), deltas.split(per_level), anchors.split(per_level), strict=True)
        ):
            top = level_scores.topk(min(self.pre_nms_top_n[mode], level_scores.numel()))
            boxes.append(decode_boxes(level_deltas[top.indices].float(), level_anchors[top.indices]))
            scores.append(torch.sigmoid(top.values.float()))
            levels.append(torch.full_like(top.indices, level))
        boxes_all = clip_boxes_to_image(torch.cat(boxes), image_size)
        scores_all, levels_all = torch.cat(scores), torch.cat(levels)
        keep = remove_small_boxes(boxes_all, self.min_size)
        keep = keep[scores_all[keep] >= self.score_threshold]
        boxes_all, scores_all, levels_all = boxes_all[keep], scores_all[keep], levels_all[keep]
        keep = batched_nms(boxes_all, scores_all, levels_all, self.nms_threshold)[: self.post_nms_top_n[mode]]
        return boxes_all[keep]
