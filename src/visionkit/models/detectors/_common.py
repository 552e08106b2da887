"""What both detector families share: input batching, target checks and detection post-processing.

Inputs are lists of ``Tensor[3, H_i, W_i]`` float images in ``[0, 1]`` of any sizes; the detector
normalizes them, pads them to one batch (bottom/right, to a multiple of ``size_divisible``) and returns
boxes in each input image's own pixel coordinates (xyxy). Resizing is the data pipeline's job
(:class:`visionkit.data.transforms.Resize`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from visionkit.ops.boxes import clip_boxes_to_image, remove_small_boxes
from visionkit.ops.nms import batched_nms
from visionkit.ops.soft_nms import batched_soft_nms

__all__ = ["batch_images", "check_targets", "postprocess", "suppress"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NMS_METHODS = ("hard", "soft_linear", "soft_gaussian")


def batch_images(
    images: Sequence[Tensor], mean: Sequence[float], std: Sequence[float], size_divisible: int = 32
) -> tuple[Tensor, list[tuple[int, int]]]:
    """Normalize and zero-pad images into ``Tensor[B, C, H, W]`` (H, W multiples of ``size_divisible``).

    Returns:
        The batch and each image's ``(height, width)`` before padding.

    Raises:
        TypeError: a non-tensor or non-float image (e.g. uint8: apply ``ToTensor`` first), naming its index.
        ValueError: an image that is not ``[C, H, W]`` with ``len(mean)`` channels, or an empty list.
    """
    if isinstance(images, Tensor) or len(images) == 0:
        raise ValueError("images must be a non-empty list of Tensor[C, H, W] (one per image)")
    for index, image in enumerate(images):
        if not isinstance(image, Tensor) or not image.is_floating_point():
            kind = image.dtype if isinstance(image, Tensor) else type(image).__name__
            raise TypeError(
                f"images[{index}] must be a float tensor in [0, 1], got {kind} (apply ToTensor first)"
            )
        if image.dim() != 3 or image.shape[0] != len(mean):
            raise ValueError(f"images[{index}] must have shape [{len(mean)}, H, W], got {list(image.shape)}")
    sizes = [(int(image.shape[1]), int(image.shape[2])) for image in images]
    height = -(-max(h for h, _ in sizes) // size_divisible) * size_divisible
    width = -(-max(w for _, w in sizes) // size_divisible) * size_divisible
    first = images[0]
    batch = first.new_zeros(len(images), first.shape[0], height, width)
    mean_t = torch.tensor(mean, dtype=first.dtype, device=first.device)[:, None, None]
    std_t = torch.tensor(std, dtype=first.dtype, device=first.device)[:, None, None]
    for slot, image in zip(batch, images, strict=True):
        slot[:, : image.shape[1], : image.shape[2]].copy_((image - mean_t) / std_t)
    return batch, sizes


def check_targets(targets: Sequence[dict[str, Any]] | None, num_images: int, num_classes: int) -> None:
    """Validate training targets *before* the forward pass.

    Raises:
        ValueError: missing targets, a count differing from the images, boxes not ``[N, 4]`` float, labels
            out of ``[0, num_classes)``, NaN/Inf, or a degenerate box (``x2 <= x1`` or ``y2 <= y1``) — the
            message names the image index, the box index and its values.
    """
    if targets is None:
        raise ValueError("training needs targets: a list of dicts with 'boxes' and 'labels', one per image")
    if len(targets) != num_images:
        raise ValueError(f"got {num_images} images but {len(targets)} targets")
    for index, target in enumerate(targets):
        boxes, labels = target.get("boxes"), target.get("labels")
        if (
            not isinstance(boxes, Tensor)
            or boxes.dim() != 2
            or boxes.shape[1] != 4
            or not boxes.is_floating_point()
        ):
            raise ValueError(f"targets[{index}]['boxes'] must be a float Tensor[N, 4], got {boxes!r:.80}")
        if not isinstance(labels, Tensor) or labels.shape != boxes.shape[:1] or labels.is_floating_point():
            raise ValueError(f"targets[{index}]['labels'] must be an integer Tensor[{boxes.shape[0]}]")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"targets[{index}]['labels'] must lie in [0, {num_classes}), got {labels.tolist()}"
            )
        bad = ~torch.isfinite(boxes).all(dim=1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
        if bool(bad.any()):
            row = int(bad.nonzero()[0])
            raise ValueError(
                f"targets[{index}] (image_id {target.get('image_id', index)}) box {row} "
                f"{boxes[row].tolist()} is degenerate or non-finite: need x2 > x1 and y2 > y1"
            )


def training_boxes(target: dict[str, Any]) -> tuple[Tensor, Tensor]:
    """Boxes and labels to learn from: COCO crowd regions (``iscrowd=1``) are left out of training."""
    boxes, labels = target["boxes"], target["labels"]
    crowd = target.get("iscrowd")
    if isinstance(crowd, Tensor) and crowd.numel():
        keep = crowd == 0
        boxes, labels = boxes[keep], labels[keep]
    return boxes, labels


def suppress(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    method: str,
    iou_threshold: float,
    sigma: float,
    score_threshold: float,
) -> tuple[Tensor, Tensor]:
    """Class-aware NMS (``"hard"``) or Soft-NMS (``"soft_linear"`` / ``"soft_gaussian"``, Bodla et al., 2017).

    Returns:
        ``(kept indices, their scores)`` by decreasing score; Soft-NMS returns the decayed scores.
    """
    if method == "hard":
        keep = batched_nms(boxes, scores, labels, iou_threshold)
        return keep, scores[keep]
    decay: Literal["linear", "gaussian"] = "linear" if method == "soft_linear" else "gaussian"
    keep, new_scores = batched_soft_nms(
        boxes,
        scores,
        labels,
        method=decay,
        sigma=sigma,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
    )
    return keep, new_scores


def postprocess(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    image_size: tuple[int, int],
    *,
    nms_method: str,
    nms_threshold: float,
    soft_nms_sigma: float,
    score_threshold: float,
    detections_per_image: int,
    min_size: float = 1e-2,
) -> dict[str, Tensor]:
    """Clip to the image, drop tiny boxes, suppress, keep the best ``detections_per_image``.

    Returns:
        ``dict(boxes=Tensor[D, 4] float xyxy, scores=Tensor[D], labels=Tensor[D] int64)``.
    """
    boxes = clip_boxes_to_image(boxes, image_size)
    keep = remove_small_boxes(boxes, min_size)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep, scores = suppress(boxes, scores, labels, nms_method, nms_threshold, soft_nms_sigma, score_threshold)
    keep, scores = keep[:detections_per_image], scores[:detections_per_image]
    return {"boxes": boxes[keep], "scores": scores, "labels": labels[keep].to(torch.int64)}
