"""Cascade R-CNN (Cai & Vasconcelos, CVPR 2018; handbook "前沿"): Faster R-CNN's RPN and multi-scale RoI
Align, then a cascade of box heads trained at rising IoU thresholds (0.5 / 0.6 / 0.7).

Each stage is a :class:`~visionkit.models.detectors.roi_heads.RoIHeads` (pooler shared, its own two-FC head
and a class-agnostic :class:`~visionkit.models.heads.FastRCNNPredictor`). Training, as detectron2's
``CascadeROIHeads``: stage 1 samples 512 proposals per image (ground truth added, 25 % positives at most);
stage ``k + 1`` takes stage ``k``'s refined boxes (decoded, **detached**, clipped, empty ones dropped) and
re-matches all of them to the ground truth at its own threshold, without sampling. Each stage normalizes
its regression targets with its own box-coder weights ``(10, 10, 5, 5)``, ``(20, 20, 10, 10)``,
``(30, 30, 15, 15)`` (stds 0.1/0.2, 0.05/0.1, 0.033/0.067, the paper's) and its losses are weighted
1 / 0.5 / 0.25; the gradient into the shared pooled features is scaled by ``1 / stages``. Inference: boxes
from the last stage, class scores averaged over the stages (each stage scoring its own input boxes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import Backbone
from visionkit.models.detectors.base import IMAGENET_MEAN, IMAGENET_STD, batch_images, training_boxes
from visionkit.models.detectors.builders import (
    _SMALL_FASTER_RCNN,
    build_faster_rcnn,
    register_detector_family,
)
from visionkit.models.detectors.faster_rcnn import FasterRCNN
from visionkit.models.detectors.postprocess import PostProcess
from visionkit.models.detectors.roi_heads import RoIHeads, class_detections, label_boxes
from visionkit.models.heads.box_head import FastRCNNPredictor, TwoMLPHead
from visionkit.ops.box_coder import decode_boxes
from visionkit.ops.boxes import box_iou, clip_boxes_to_image
from visionkit.structures import Detections, Target

__all__ = ["CascadeRCNN", "CascadeRoIHeads", "CascadeStage", "build_cascade_rcnn", "scale_gradient"]

BoxWeights = tuple[float, float, float, float]


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


def scale_gradient(x: Tensor, scale: float) -> Tensor:
    """Identity forward; the backward multiplies the incoming gradient by ``scale`` (detectron2's
    ``_ScaleGradient``: each of ``n`` cascade stages sends ``1 / n`` of its gradient into shared features).

    Example:
        >>> x = torch.ones(2, requires_grad=True)
        >>> scale_gradient(x, 0.25).sum().backward()
        >>> x.grad
        tensor([0.2500, 0.2500])
    """
    return _ScaleGradient.apply(x, scale)


@dataclass
class CascadeStage:
    """What one stage saw and produced (``R = Σ R_i`` boxes over the batch's images).

    Attributes:
        boxes: the stage's input boxes per image, ``Tensor[R_i, 4]`` (stage 1: the sampled proposals in
            training, all proposals in evaluation; later: the previous stage's ``refined``).
        logits: ``Tensor[R, K + 1]`` class logits (0 = background); deltas: ``Tensor[R, 4]``.
        refined: ``deltas`` applied to ``boxes`` with the stage's box coder, detached and clipped, per image.
        labels, box_targets, positive: the stage's training targets ``[R]``, ``[R, 4]``, ``[R]`` (training
            only, else ``None``).
    """

    boxes: list[Tensor]
    logits: Tensor
    deltas: Tensor
    refined: list[Tensor]
    labels: Tensor | None = None
    box_targets: Tensor | None = None
    positive: Tensor | None = None


class CascadeRoIHeads(nn.Module):
    """The cascade of box heads (module docstring).

    Args:
        stages: one :class:`RoIHeads` per stage with class-agnostic box predictors; their matchers hold the
            stage IoU thresholds and ``box_coder_weights`` the target normalization; stage 1's sampler
            settings are used. All stages must share one pooler.
        stage_loss_weights: one weight per stage (1, 0.5, 0.25).
        gradient_scale: factor on the gradient into the pooled features of every stage (``None``:
            ``1 / len(stages)``).
        test_stages: stages run at inference (``0``: all); ``n`` gives stage ``n``'s boxes with the scores
            averaged over stages ``1..n`` (the paper's per-stage table).

    Forward:
        As :class:`RoIHeads`: training → ``([], {"classification_stage1", "box_regression_stage1", ...})``
        (weighted); evaluation → ``(list of Detections, {})``.
    """

    def __init__(
        self,
        stages: Sequence[RoIHeads],
        *,
        stage_loss_weights: Sequence[float] = (1.0, 0.5, 0.25),
        gradient_scale: float | None = None,
        test_stages: int = 0,
    ) -> None:
        super().__init__()
        if not stages:
            raise ConfigError("stages=[]: expected at least one RoIHeads stage")
        if len(stage_loss_weights) != len(stages) or not all(
            math.isfinite(w) and w >= 0 for w in stage_loss_weights
        ):
            raise ConfigError(
                f"stage_loss_weights={tuple(stage_loss_weights)}: expected {len(stages)} finite weights >= 0"
            )
        for index, stage in enumerate(stages):
            if not getattr(stage.box_predictor, "class_agnostic", False):
                raise ConfigError(
                    f"stages[{index}]: expected a class-agnostic box predictor (one box per RoI)"
                )
            if stage.pooler is not stages[0].pooler:
                raise ConfigError(f"stages[{index}]: expected the pooler of stages[0] (one shared pooler)")
        self.stages = nn.ModuleList(stages)
        self.num_classes = stages[0].num_classes
        self.stage_loss_weights = tuple(float(w) for w in stage_loss_weights)
        self.gradient_scale = 1.0 / len(stages) if gradient_scale is None else float(gradient_scale)
        self.test_stages = test_stages

    @property
    def test_stages(self) -> int:
        return self._test_stages

    @test_stages.setter
    def test_stages(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= len(self.stages):
            raise ConfigError(
                f"test_stages={value!r}: expected an integer in [0, {len(self.stages)}] (0: all)"
            )
        self._test_stages = value

    def label(self, index: int, boxes: Sequence[Tensor], targets: Sequence[Target]) -> tuple[Tensor, ...]:
        """Stage ``index``'s targets for ``boxes`` (all of them, no sampling): matched to the ground truth at
        the stage's threshold, encoded with its weights. Returns ``labels [R], box_targets [R, 4],
        positive [R]`` over the concatenated images."""
        stage = self.stages[index]
        rows = []
        for image_boxes, target in zip(boxes, targets, strict=True):
            gt_boxes, gt_labels = training_boxes(target)
            matches = stage.matcher(box_iou(gt_boxes, image_boxes))
            rows.append(label_boxes(image_boxes, matches, gt_boxes, gt_labels, stage.box_coder_weights))
        return tuple(torch.cat(parts) for parts in zip(*rows, strict=True))

    def refine(
        self, index: int, deltas: Tensor, boxes: Sequence[Tensor], image_sizes: Sequence[tuple[int, int]]
    ) -> list[Tensor]:
        """Stage ``index``'s detached ``deltas`` ``[R, 4]`` applied to its input ``boxes``, clipped per image;
        in training boxes left without area are dropped (they cannot be encoded)."""
        weights = self.stages[index].box_coder_weights
        decoded = decode_boxes(deltas.detach(), torch.cat(list(boxes)), weights).to(boxes[0].dtype)
        refined = []
        for image_boxes, size in zip(decoded.split([b.shape[0] for b in boxes]), image_sizes, strict=True):
            image_boxes = clip_boxes_to_image(image_boxes, size)
            if self.training:
                keep = (image_boxes[:, 2] > image_boxes[:, 0]) & (image_boxes[:, 3] > image_boxes[:, 1])
                image_boxes = image_boxes[keep]
            refined.append(image_boxes)
        return refined

    def run_stages(
        self,
        features: dict[str, Tensor],
        proposals: Sequence[Tensor],
        image_sizes: Sequence[tuple[int, int]],
        targets: Sequence[Target] | None = None,
        num_stages: int = 0,
    ) -> list[CascadeStage]:
        """Run the first ``num_stages`` stages (0: all); with ``targets`` (training) also their targets."""
        count = num_stages or len(self.stages)
        labels = box_targets = positive = None
        if targets is not None:
            boxes, labels, box_targets, positive = self.stages[0].sample(proposals, targets)
        else:
            boxes = list(proposals)
        outputs: list[CascadeStage] = []
        for index in range(count):
            stage = self.stages[index]
            if index > 0:
                boxes = outputs[-1].refined
                if targets is not None:
                    labels, box_targets, positive = self.label(index, boxes, targets)
            pooled = scale_gradient(stage.pooler(features, boxes, list(image_sizes)), self.gradient_scale)
            logits, deltas = stage.box_predictor(stage.box_head(pooled))
            refined = self.refine(index, deltas, boxes, image_sizes)
            outputs.append(CascadeStage(list(boxes), logits, deltas, refined, labels, box_targets, positive))
        return outputs

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
                raise ValueError("CascadeRoIHeads needs targets in training mode")
            losses: dict[str, Tensor] = {}
            for index, out in enumerate(self.run_stages(features, proposals, image_sizes, targets)):
                assert out.labels is not None and out.box_targets is not None and out.positive is not None
                terms = RoIHeads.loss(out.logits, out.deltas, out.labels, out.box_targets, out.positive)
                for name, value in terms.items():
                    losses[f"{name}_stage{index + 1}"] = self.stage_loss_weights[index] * value
            return [], losses
        with torch.no_grad():
            outputs = self.run_stages(features, proposals, image_sizes, num_stages=self.test_stages)
            scores = sum(F.softmax(out.logits.float(), dim=-1) for out in outputs) / len(outputs)
        settings = postprocess if postprocess is not None else PostProcess()
        counts = [b.shape[0] for b in outputs[-1].boxes]
        return [
            class_detections(image_scores[:, 1:], boxes.float(), size, settings)
            for image_scores, boxes, size in zip(
                scores.split(counts), outputs[-1].refined, image_sizes, strict=True
            )
        ], {}


class CascadeRCNN(FasterRCNN):
    """Cascade R-CNN: :class:`FasterRCNN` whose second stage is a :class:`CascadeRoIHeads`.

    Args:
        backbone, neck, rpn: as :class:`FasterRCNN`; roi_heads: the :class:`CascadeRoIHeads`.
        num_classes, rpn_feature_names, postprocess, **options: as :class:`FasterRCNN`.

    Forward:
        See :class:`~visionkit.models.detectors.base.Detector`. Training losses: ``{"rpn_objectness",
        "rpn_box_regression"}`` and per stage ``k`` ``"classification_stage<k>"``,
        ``"box_regression_stage<k>"`` (already weighted).

    Example:
        >>> import torch
        >>> from visionkit.models import create_model
        >>> model = create_model("cascade_rcnn_plain_fpn", num_classes=3).eval()
        >>> sorted(model([torch.rand(3, 96, 128)])[0]), len(model.roi_heads.stages)
        (['boxes', 'labels', 'scores'], 3)
    """

    roi_heads: CascadeRoIHeads

    @torch.no_grad()
    def stage_boxes(self, images: Sequence[Tensor]) -> list[list[Tensor]]:
        """The RPN proposals and every stage's refined boxes of ``images`` (evaluation mode, row ``r`` of
        each list is the same proposal refined 0, 1, 2, ... times): ``[stage][image] → Tensor[P_i, 4]``, in
        each image's pixels. Used to measure how box quality rises stage by stage."""
        batch, sizes = batch_images(images, self.image_mean, self.image_std, self.size_divisible)
        features = self.extract_features(batch)
        proposals, _ = self.proposals(batch, sizes, features)
        outputs = self.roi_heads.run_stages(features, proposals, sizes)
        return [list(proposals), *[out.refined for out in outputs]]


def build_cascade_rcnn(
    backbone: Backbone,
    *,
    num_classes: int,
    fpn_channels: int = 256,
    representation_size: int = 1024,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    roi_op: str = "align",
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000),
    rpn_post_nms_top_n: tuple[int, int] = (2000, 1000),
    rpn_nms_threshold: float = 0.7,
    rpn_batch_size_per_image: int = 256,
    rpn_positive_fraction: float = 0.5,
    box_batch_size_per_image: int = 512,
    box_positive_fraction: float = 0.25,
    stage_iou_thresholds: Sequence[float] = (0.5, 0.6, 0.7),
    stage_box_weights: Sequence[BoxWeights] = ((10, 10, 5, 5), (20, 20, 10, 10), (30, 30, 15, 15)),
    stage_loss_weights: Sequence[float] = (1.0, 0.5, 0.25),
    test_stages: int = 0,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    postprocess: PostProcess | None = None,
) -> CascadeRCNN:
    """Cascade R-CNN on any ``features_only`` backbone: :func:`build_faster_rcnn`'s backbone, FPN, RPN and
    pooler (and its two-FC head as stage 1's), then one stage per entry of ``stage_iou_thresholds`` with
    its ``stage_box_weights`` and ``stage_loss_weights`` (all three of one length)."""
    thresholds = tuple(float(t) for t in stage_iou_thresholds)
    if not thresholds or not all(0.0 < t < 1.0 for t in thresholds):
        raise ConfigError(f"stage_iou_thresholds={thresholds}: expected IoU thresholds in (0, 1)")
    if len(stage_box_weights) != len(thresholds) or len(stage_loss_weights) != len(thresholds):
        raise ConfigError(
            f"stage_box_weights={tuple(stage_box_weights)}, stage_loss_weights={tuple(stage_loss_weights)}: "
            f"expected one entry per stage ({len(thresholds)} stages)"
        )
    base = build_faster_rcnn(
        backbone, num_classes=num_classes, fpn_channels=fpn_channels, representation_size=representation_size,
        anchor_sizes=anchor_sizes, anchor_ratios=anchor_ratios, roi_op=roi_op,
        rpn_pre_nms_top_n=rpn_pre_nms_top_n, rpn_post_nms_top_n=rpn_post_nms_top_n,
        rpn_nms_threshold=rpn_nms_threshold, rpn_batch_size_per_image=rpn_batch_size_per_image,
        rpn_positive_fraction=rpn_positive_fraction,
    )  # fmt: skip
    pooler, first_head = base.roi_heads.pooler, base.roi_heads.box_head
    stages = []
    for index, (threshold, weights) in enumerate(zip(thresholds, stage_box_weights, strict=True)):
        head = first_head if index == 0 else TwoMLPHead(first_head.fc6.in_features, representation_size)
        predictor = FastRCNNPredictor(representation_size, num_classes, class_agnostic=True)
        stages.append(
            RoIHeads(
                pooler, head, predictor, num_classes=num_classes, fg_iou_threshold=threshold,
                bg_iou_threshold=threshold, batch_size_per_image=box_batch_size_per_image,
                positive_fraction=box_positive_fraction,
                box_coder_weights=tuple(float(w) for w in weights),  # type: ignore[arg-type]
            )
        )  # fmt: skip
    cascade = CascadeRoIHeads(stages, stage_loss_weights=stage_loss_weights, test_stages=test_stages)
    return CascadeRCNN(
        base.backbone, base.neck, base.rpn, cascade, num_classes=num_classes, postprocess=postprocess,
        rpn_feature_names=base.rpn_feature_names, image_mean=image_mean, image_std=image_std,
    )  # fmt: skip


register_detector_family("cascade_rcnn", build_cascade_rcnn, {"plain": _SMALL_FASTER_RCNN})
