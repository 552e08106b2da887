"""YOLOv3 (Redmon & Farhadi, 2018, "YOLOv3: An Incremental Improvement"; handbook §18).

backbone ``c3, c4, c5`` → :class:`~visionkit.models.detectors.yolo.neck.YOLOv3Neck` (strides 8 / 16 / 32)
→ :class:`~visionkit.models.detectors.yolo.neck.YOLOv3Head`, 3 anchors per scale (9 in all, sorted by area,
the smallest on stride 8). Boxes, layout and the one-anchor assignment: :mod:`.common`.

Loss (:func:`yolov3_loss`, summed over predictions and divided by the batch size, as darknet sums and
divides its step by the batch): for each assigned prediction the box term
``(2 − w·h/(W·H))·½·[(σ(t_x) − σ(t_x)*)² + (σ(t_y) − σ(t_y)*)² + (t_w − t_w*)² + (t_h − t_h*)²]``
(``xy_loss="sse"``, the paper's "sum of squared error"; ``xy_loss="bce"`` replaces the two centre terms by
the binary cross-entropy of the logits ``t_x``, ``t_y`` against ``σ(t)*`` less its minimum, whose gradient
``σ(t) − σ(t)*`` is what darknet's ``yolo`` layer passes back: its backward copies the delta without the
logistic's derivative), binary cross-entropy of the objectness logit (1 at assigned predictions,
0 at the others unless their decoded box has IoU > ``ignore_threshold`` with a ground truth: those get no
objectness loss) and an independent binary cross-entropy per class (no softmax). Input images are padded
bottom/right to a multiple of 32 (:class:`~visionkit.models.detectors.base.Detector`), so any size is
accepted and boxes stay in the image's own pixels; the aspect-preserving ``Resize`` of the data pipeline
(``train detect min_size=…``) plays darknet's letterbox resize (darknet also centres the padding).
Multi-scale training: ``train detect scale_jitter=low,high`` rescales each image by a random factor
(darknet instead draws one multiple of 32 for the whole batch every 10 batches; not implemented).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionkit.errors import ConfigError
from visionkit.losses.iou import ciou_loss, diou_loss, giou_loss
from visionkit.models.detectors.base import Detector, training_boxes
from visionkit.models.detectors.postprocess import PostProcess, postprocess_detections
from visionkit.models.detectors.yolo.common import (
    GridPriors,
    assign_targets,
    check_anchors,
    decode_predictions,
    flatten_levels,
    grid_priors,
    ignore_mask,
)
from visionkit.structures import Detections, Target

__all__ = ["BOX_LOSSES", "COCO_ANCHORS", "XY_LOSSES", "YOLOv3", "yolov3_loss"]

#: darknet's ``yolov3.cfg`` anchors (k-means on COCO at 416 × 416), pixels, sorted by area
COCO_ANCHORS = (
    (10, 13),
    (16, 30),
    (33, 23),
    (30, 61),
    (62, 45),
    (59, 119),
    (116, 90),
    (156, 198),
    (373, 326),
)


XY_LOSSES = ("sse", "bce")
CLASS_ACTIVATIONS = ("sigmoid", "softmax")
#: the paper's sum of squared errors on the offsets, or darknet's later ``[yolo] iou_loss`` on the boxes
BOX_LOSSES = ("sse", "giou", "diou", "ciou")
_IOU_LOSSES = {"giou": giou_loss, "diou": diou_loss, "ciou": ciou_loss}


def box_loss_terms(
    raw: Tensor, offsets: Tensor, boxes: Tensor, batch_hw: tuple[int, int], xy_loss: str = "sse"
) -> Tensor:
    """``Σ (2 − w·h/(W·H))·½·‖(σ(t_x), σ(t_y), t_w, t_h) − targets‖²`` over assigned predictions
    (``xy_loss="bce"``: the centre terms are ``BCE(t, σ(t)*) − BCE(logit σ(t)*, σ(t)*)``, module docstring).

    Args:
        raw: ``[P, ≥4]`` raw outputs; offsets: ``[P, 4]`` targets; boxes: ``[P, 4]`` their ground truths.
    """
    offsets = offsets.to(raw.dtype)
    wh = boxes[:, 2:] - boxes[:, :2]
    weight = 2.0 - wh[:, 0] * wh[:, 1] / (batch_hw[0] * batch_hw[1])
    size = 0.5 * (raw[:, 2:4] - offsets[:, 2:]).square().sum(dim=1)
    if xy_loss == "bce":
        goal = offsets[:, :2]
        entropy = -(torch.special.xlogy(goal, goal) + torch.special.xlogy(1 - goal, 1 - goal))
        centre = (F.binary_cross_entropy_with_logits(raw[:, :2], goal, reduction="none") - entropy).sum(dim=1)
    else:
        centre = 0.5 * (torch.sigmoid(raw[:, :2]) - offsets[:, :2]).square().sum(dim=1)
    return (weight * (centre + size)).sum()


def iou_box_loss_terms(raw: Tensor, priors: GridPriors, index: Tensor, boxes: Tensor, kind: str) -> Tensor:
    """``Σ (1 − IoU-variant)(decoded prediction, ground truth)`` over the assigned predictions (darknet's
    later ``iou_loss=giou|diou|ciou``; the gradient flows through the decoding).

    Args:
        raw: ``[P, ≥4]`` raw outputs of the predictions ``index`` ``[P]``; boxes: ``[P, 4]`` xyxy pixels.
    """
    centres = (torch.sigmoid(raw[:, :2]) + priors.cells[index]) * priors.strides[index, None]
    # exp(t) of a diverging prediction must not overflow: darknet-size boxes stay far below e^{10} anchors
    sizes = priors.anchors[index] * torch.exp(raw[:, 2:4].clamp(max=10.0))
    predicted = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=1)
    return _IOU_LOSSES[kind](predicted, boxes.to(raw.dtype)).sum()


def yolov3_loss(
    outputs: Tensor,
    priors: GridPriors,
    anchors: Tensor,
    anchor_levels: Sequence[int],
    targets: Sequence[Target],
    batch_hw: tuple[int, int],
    ignore_threshold: float = 0.5,
    xy_loss: str = "sse",
    class_activation: str = "sigmoid",
    assign_threshold: float = 1.0,
    box_loss: str = "sse",
) -> dict[str, Tensor]:
    """YOLOv3 losses of a batch (module docstring).

    Args:
        outputs: ``Tensor[B, N, 5 + K]`` flattened raw predictions; priors: their grid priors.
        anchors: ``Tensor[9, 2]`` pixels; anchor_levels: the level of each anchor.
        targets: per image ``boxes`` ``[M, 4]`` xyxy pixels and ``labels`` ``[M]`` (crowd regions left out).
        batch_hw: the network input ``(H, W)`` (for the ``2 − w·h`` weight).
        xy_loss: ``"sse"`` (the paper) or ``"bce"`` (darknet's gradient), module docstring.
        class_activation: ``"sigmoid"`` (the paper: a binary cross-entropy per class) or ``"softmax"``
            (YOLOv2's softmax cross-entropy, for the §18 comparison).
        assign_threshold: also assign every other anchor whose shape IoU with a ground truth exceeds
            this (darknet's later ``iou_thresh``; 1.0: the paper's one anchor per ground truth),
            :func:`~visionkit.models.detectors.yolo.common.assign_targets`.
        box_loss: ``"sse"`` (the paper's offsets loss, weighted ``2 − w·h``) or ``"giou"`` / ``"diou"`` /
            ``"ciou"`` (:func:`iou_box_loss_terms`; ``xy_loss`` then does not apply).

    Returns:
        ``{"box", "objectness", "classification"}`` scalars; an image without objects contributes only
        objectness negatives.
    """
    batch, count = outputs.shape[0], outputs.shape[1]
    if len(targets) != batch:
        raise ValueError(f"got {batch} images' outputs but {len(targets)} targets")
    flat = outputs.reshape(batch * count, outputs.shape[2])
    with torch.no_grad():
        decoded = decode_predictions(outputs[..., :4].detach(), priors)
    rows, offsets, matched, classes, ignored = [], [], [], [], []
    for image, target in enumerate(targets):  # the assignment is per image; the losses are batched below
        boxes, labels = training_boxes(target)
        assigned = assign_targets(boxes, priors, anchors, anchor_levels, assign_threshold)
        rows.append(assigned.index + image * count)
        offsets.append(assigned.offsets)
        matched.append(boxes[assigned.gt].to(outputs.dtype))
        classes.append(labels[assigned.gt])
        ignored.append(ignore_mask(decoded[image], boxes, ignore_threshold))
    index = torch.cat(rows)
    objectness = torch.zeros_like(flat[:, 4])
    objectness[index] = 1.0
    counted = ~torch.cat(ignored)
    counted[index] = True
    object_loss = F.binary_cross_entropy_with_logits(flat[counted, 4], objectness[counted], reduction="sum")
    chosen, boxes, labels = flat[index], torch.cat(matched), torch.cat(classes)
    if box_loss == "sse":
        box = box_loss_terms(chosen, torch.cat(offsets), boxes, batch_hw, xy_loss)
    else:
        box = iou_box_loss_terms(chosen, priors, index % count, boxes, box_loss)
    if class_activation == "softmax":
        classification = F.cross_entropy(chosen[:, 5:], labels, reduction="sum")
    else:
        one_hot = torch.zeros_like(chosen[:, 5:])
        one_hot[torch.arange(one_hot.shape[0]), labels] = 1.0
        classification = F.binary_cross_entropy_with_logits(chosen[:, 5:], one_hot, reduction="sum")
    return {"box": box / batch, "objectness": object_loss / batch, "classification": classification / batch}


class YOLOv3(Detector):
    """YOLOv3: parts passed in, defaults in :func:`~visionkit.models.detectors.yolo.build_yolov3`.

    Args:
        backbone: ``features_only`` backbone; neck: :class:`~.neck.YOLOv3Neck` over ``feature_names``.
        head: :class:`~.neck.YOLOv3Head`.
        anchors: ``(width, height)`` pixels, ``anchors_per_level`` per level, finest level first
            (9 = 3 × 3 for the paper).
        num_classes: ``K`` (independent logistic classes).
        anchors_per_level: anchors of each level (3, 3, 3).
        ignore_threshold: predictions whose decoded box has IoU above this with a ground truth are no
            objectness negatives (0.5 as the paper; darknet's later cfg 0.7).
        xy_loss: ``"sse"`` (the paper) or ``"bce"`` (darknet's gradient) for the box centre.
        class_activation: ``"sigmoid"`` (the paper) or ``"softmax"`` (YOLOv2's, for the comparison):
            the class loss and the class probabilities of the scores.
        assign_threshold: 1.0 (the paper): one anchor per ground truth; below 1 also every other anchor
            whose shape IoU exceeds it (darknet's later ``iou_thresh``, 0.213 in ``yolov4.cfg``).
        box_loss: ``"sse"`` (the paper) or ``"giou"`` / ``"diou"`` / ``"ciou"`` of the decoded boxes
            (darknet's later ``iou_loss``).
        postprocess: :class:`~visionkit.models.detectors.postprocess.PostProcess` (``topk_candidates`` per
            level before class-aware NMS / Soft-NMS).

    Forward:
        See :class:`~visionkit.models.detectors.base.Detector`. Training losses:
        ``{"box", "objectness", "classification"}``; evaluation scores are ``σ(t_o)·σ(class)``.

    Example:
        >>> from visionkit.models import create_model
        >>> model = create_model("yolov3_plain", num_classes=3).eval()
        >>> detections = model([torch.rand(3, 96, 128)])
        >>> detections[0]["boxes"].shape[1]
        4
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        head: nn.Module,
        anchors: Sequence[Sequence[float]],
        *,
        num_classes: int,
        anchors_per_level: Sequence[int] = (3, 3, 3),
        ignore_threshold: float = 0.5,
        xy_loss: str = "sse",
        class_activation: str = "sigmoid",
        assign_threshold: float = 1.0,
        box_loss: str = "sse",
        postprocess: PostProcess | None = None,
        **options: Any,
    ) -> None:
        super().__init__(backbone, neck, num_classes=num_classes, postprocess=postprocess, **options)
        if xy_loss not in XY_LOSSES:
            raise ConfigError(f"xy_loss={xy_loss!r}: expected one of {list(XY_LOSSES)}")
        if class_activation not in CLASS_ACTIVATIONS:
            raise ConfigError(
                f"class_activation={class_activation!r}: expected one of {list(CLASS_ACTIVATIONS)}"
            )
        self.xy_loss, self.class_activation = xy_loss, class_activation
        levels = len(neck.out_names)  # type: ignore[arg-type]
        if len(anchors_per_level) != levels or min(anchors_per_level) < 1:
            raise ConfigError(
                f"anchors_per_level={tuple(anchors_per_level)!r}: expected {levels} counts >= 1"
            )
        if not 0.0 <= ignore_threshold <= 1.0:
            raise ConfigError(f"ignore_threshold={ignore_threshold!r}: expected a number in [0, 1]")
        if not 0.0 <= assign_threshold <= 1.0:
            raise ConfigError(
                f"assign_threshold={assign_threshold!r}: expected a number in [0, 1] (1: the paper's one "
                "anchor per ground truth)"
            )
        if box_loss not in BOX_LOSSES:
            raise ConfigError(f"box_loss={box_loss!r}: expected one of {list(BOX_LOSSES)} for YOLOv3")
        self.assign_threshold, self.box_loss = assign_threshold, box_loss
        table = check_anchors(anchors, sum(anchors_per_level))
        self.register_buffer("anchors", table.float(), persistent=False)
        self.anchor_levels = [lv for lv, n in enumerate(anchors_per_level) for _ in range(n)]
        self.anchors_per_level = list(anchors_per_level)
        self.head, self.ignore_threshold = head, ignore_threshold
        self.feature_names = list(neck.out_names)  # type: ignore[arg-type]

    def _outputs(self, features: dict[str, Tensor]) -> tuple[Tensor, GridPriors, list[int]]:
        levels = self.head([features[name] for name in self.feature_names])
        strides = [self.feature_shapes[name].stride for name in self.feature_names]
        sizes = [(int(o.shape[-2]), int(o.shape[-1])) for o in levels]
        priors = grid_priors(sizes, strides, self.anchors, self.anchor_levels, device=levels[0].device)
        per_level = [h * w * a for (h, w), a in zip(sizes, self.anchors_per_level, strict=True)]
        return flatten_levels(levels, self.anchors_per_level), priors, per_level

    def losses(
        self,
        batch: Tensor,
        sizes: list[tuple[int, int]],
        features: dict[str, Tensor],
        targets: Sequence[Target],
    ) -> dict[str, Tensor]:
        outputs, priors, hw = self._loss_inputs(batch, features)
        return yolov3_loss(
            outputs,
            priors,
            self.anchors,
            self.anchor_levels,
            targets,
            hw,
            self.ignore_threshold,
            xy_loss=self.xy_loss,
            class_activation=self.class_activation,
            assign_threshold=self.assign_threshold,
            box_loss=self.box_loss,
        )

    def _loss_inputs(
        self, batch: Tensor, features: dict[str, Tensor]
    ) -> tuple[Tensor, GridPriors, tuple[int, int]]:
        """Raw outputs (float32 under AMP, as the targets), their grid priors and the padded batch size."""
        outputs, priors, _ = self._outputs(features)
        if outputs.dtype in (torch.float16, torch.bfloat16):
            outputs = outputs.float()
        return outputs, priors, (int(batch.shape[-2]), int(batch.shape[-1]))

    def scores(self, outputs: Tensor) -> Tensor:
        """``Tensor[..., N, K]`` class-specific confidences ``σ(t_o)·σ(class)`` (``softmax`` with
        ``class_activation="softmax"``)."""
        if self.class_activation == "softmax":
            return torch.sigmoid(outputs[..., 4:5]) * torch.softmax(outputs[..., 5:], dim=-1)
        return torch.sigmoid(outputs[..., 4:5]) * torch.sigmoid(outputs[..., 5:])

    @torch.no_grad()
    def detect(
        self, batch: Tensor, sizes: list[tuple[int, int]], features: dict[str, Tensor]
    ) -> list[Detections]:
        outputs, priors, per_level = self._outputs(features)
        outputs = outputs.float()
        boxes = decode_predictions(outputs[..., :4], priors)
        scores = self.scores(outputs)
        return [
            detect_image(image_boxes, image_scores, size, per_level, self.postprocess)
            for image_boxes, image_scores, size in zip(boxes, scores, sizes, strict=True)
        ]


def detect_image(
    boxes: Tensor, scores: Tensor, size: tuple[int, int], per_level: list[int], settings: PostProcess
) -> Detections:
    """One image's detections from decoded ``boxes`` ``[N, 4]`` and ``scores`` ``[N, K]``: per level the
    ``topk_candidates`` best (prediction, class) pairs above ``score_threshold``, then
    :func:`~visionkit.models.detectors.postprocess.postprocess_detections`."""
    kept_boxes, kept_scores, kept_labels = [], [], []
    num_classes = scores.shape[1]
    for level_boxes, level_scores in zip(boxes.split(per_level), scores.split(per_level), strict=True):
        flat = level_scores.flatten()
        candidates = torch.nonzero(flat > settings.score_threshold).flatten()
        top = flat[candidates].topk(min(settings.topk_candidates, candidates.numel()))
        candidates = candidates[top.indices]
        kept_boxes.append(level_boxes[torch.div(candidates, num_classes, rounding_mode="floor")])
        kept_scores.append(top.values)
        kept_labels.append(candidates % num_classes)
    return postprocess_detections(
        torch.cat(kept_boxes), torch.cat(kept_scores), torch.cat(kept_labels), size, settings
    )
