"""What every detector family shares: the input contract, normalization and padding, backbone + neck,
and the post-processing settings. A family subclasses :class:`Detector` and writes only its own part:
:meth:`Detector.losses` (training) and :meth:`Detector.detect` (evaluation).

The contract (what :mod:`visionkit.engine.detect` relies on, and nothing more):

* ``detector(images)`` with ``images`` a list of ``Tensor[3, H_i, W_i]`` float in ``[0, 1]`` of any sizes;
  in training mode also ``targets`` (:class:`~visionkit.structures.Target` per image) and it returns a
  ``dict[str, Tensor]`` of named scalar losses (their sum is minimized); in evaluation mode it returns one
  :class:`~visionkit.structures.Detections` per image, boxes in that image's own pixels.
* ``detector.num_classes`` (labels ``0..K-1``) and ``detector.postprocess`` (:class:`PostProcess`).
* ``detector.backbone`` (a ``features_only`` backbone with ``stages()`` for freezing and torchvision
  parameter names for ``backbone_weights``).

Images are normalized with ``image_mean`` / ``image_std`` and zero-padded (bottom/right) to one batch whose
sides are multiples of ``size_divisible``; resizing is the data pipeline's job
(:class:`visionkit.data.transforms.Resize`, or :class:`~visionkit.models.detectors.ResizedInput`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from visionkit.errors import InputShapeError
from visionkit.models.detectors.postprocess import PostProcess
from visionkit.structures import Detections, ShapeSpec, Target

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Detector", "batch_images", "check_targets", "training_boxes"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def batch_images(
    images: Sequence[Tensor], mean: Sequence[float], std: Sequence[float], size_divisible: int = 32
) -> tuple[Tensor, list[tuple[int, int]]]:
    """Normalize and zero-pad images into ``Tensor[B, C, H, W]`` (H, W multiples of ``size_divisible``).

    Returns:
        The batch and each image's ``(height, width)`` before padding.

    Raises:
        TypeError: a non-tensor or non-float image (e.g. uint8: apply ``ToTensor`` first), naming its index.
        InputShapeError: (a ``ValueError``) an image that is not ``[C, H, W]`` with ``len(mean)`` channels,
            or an empty list; the message names the index, the expected and the given shape.
    """
    if isinstance(images, Tensor) or len(images) == 0:
        raise InputShapeError("images must be a non-empty list of Tensor[C, H, W] (one per image)")
    for index, image in enumerate(images):
        if not isinstance(image, Tensor) or not image.is_floating_point():
            kind = image.dtype if isinstance(image, Tensor) else type(image).__name__
            raise TypeError(
                f"images[{index}] must be a float tensor in [0, 1], got {kind} (apply ToTensor first)"
            )
        if image.dim() != 3 or image.shape[0] != len(mean) or image.shape[1] < 1 or image.shape[2] < 1:
            raise InputShapeError(
                f"images[{index}] must have shape [{len(mean)}, H, W] with H, W >= 1, got {list(image.shape)}"
            )
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


def check_targets(targets: Sequence[Target] | None, num_images: int, num_classes: int) -> None:
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


def training_boxes(target: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
    """Boxes and labels to learn from: COCO crowd regions (``iscrowd=1``) are left out of training."""
    boxes, labels = target["boxes"], target["labels"]
    crowd = target.get("iscrowd")
    if isinstance(crowd, Tensor) and crowd.numel():
        keep = crowd == 0
        boxes, labels = boxes[keep], labels[keep]
    return boxes, labels


class Detector(nn.Module):
    """Base of the detector families (module docstring): parts passed in, defaults in the builders.

    Args:
        backbone: a ``features_only`` backbone returning ``{"c2".."c5"}``.
        neck: maps the backbone's features to the detection levels (FPN), with ``output_shape()``.
        num_classes: ``K`` object classes.
        postprocess: the post-processing settings (:class:`PostProcess`).
        image_mean, image_std: per-channel normalization of ``[0, 1]`` images; size_divisible: padding.

    Subclasses implement :meth:`losses` and :meth:`detect`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        *,
        num_classes: int,
        postprocess: PostProcess | None = None,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        size_divisible: int = 32,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        if len(image_mean) != len(image_std) or min(image_std) <= 0:
            raise ValueError(
                f"image_mean and image_std need one value per channel (std > 0), got "
                f"{list(image_mean)} and {list(image_std)}"
            )
        self.backbone, self.neck, self.num_classes = backbone, neck, num_classes
        self.postprocess = postprocess if postprocess is not None else PostProcess()
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)
        self.size_divisible = size_divisible

    @property
    def feature_shapes(self) -> dict[str, ShapeSpec]:
        """Channels and stride of every neck output (what heads, anchors and poolers are built from)."""
        return dict(self.neck.output_shape())

    def preprocess(
        self, images: Sequence[Tensor], targets: Sequence[Target] | None = None
    ) -> tuple[Tensor, list[tuple[int, int]]]:
        """Check inputs (and targets in training), normalize and pad: ``(batch, sizes before padding)``."""
        if self.training:
            check_targets(targets, len(images), self.num_classes)
        return batch_images(images, self.image_mean, self.image_std, self.size_divisible)

    def extract_features(self, batch: Tensor) -> dict[str, Tensor]:
        """Neck outputs of a normalized, padded batch."""
        backbone_features = self.backbone(batch)
        if not isinstance(backbone_features, dict):
            raise TypeError(
                "the backbone must return a dict of feature maps: build it with features_only=True"
            )
        return dict(self.neck(backbone_features))

    def forward(self, images: Sequence[Tensor], targets: Sequence[Target] | None = None) -> Any:
        """Training: ``dict`` of named losses; evaluation: ``list[Detections]`` (module docstring)."""
        batch, sizes = self.preprocess(images, targets)
        features = self.extract_features(batch)
        if self.training:
            assert targets is not None  # checked in preprocess
            return self.losses(batch, sizes, features, targets)
        return self.detect(batch, sizes, features)

    def losses(
        self,
        batch: Tensor,
        sizes: list[tuple[int, int]],
        features: dict[str, Tensor],
        targets: Sequence[Target],
    ) -> dict[str, Tensor]:
        """Named scalar losses of a batch (training mode)."""
        raise NotImplementedError

    def detect(
        self, batch: Tensor, sizes: list[tuple[int, int]], features: dict[str, Tensor]
    ) -> list[Detections]:
        """One :class:`~visionkit.structures.Detections` per image (evaluation mode)."""
        raise NotImplementedError
