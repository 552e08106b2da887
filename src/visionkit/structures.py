"""The typed contracts between stages, defined once: what datasets give, detectors return, necks read.

* :class:`Target` — one image's ground truth, as datasets yield it and detectors train on it.
* :class:`Detections` — one image's detections, as every detector returns them in evaluation and as
  :mod:`visionkit.metrics.detection` consumes them unchanged.
* :class:`ShapeSpec` — channels and stride of one named feature map (detectron2's idea): backbones and
  necks describe their outputs with it, and necks, anchor generators and RoI poolers read strides from it
  instead of parsing them out of names.

Boxes are ``xyxy`` in absolute pixels of the image they belong to, everywhere.

Example:
    >>> import torch
    >>> target: Target = {"boxes": torch.tensor([[2.0, 3.0, 20.0, 30.0]]), "labels": torch.tensor([1])}
    >>> ShapeSpec(channels=256, stride=8)
    ShapeSpec(channels=256, stride=8)

This module imports nothing from visionkit, so every layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from torch import Tensor

__all__ = ["Detections", "ShapeSpec", "Target"]


class _TargetRequired(TypedDict):
    boxes: Tensor  # float [M, 4] xyxy pixels
    labels: Tensor  # int64 [M] in [0, num_classes)


class Target(_TargetRequired, total=False):
    """Ground truth of one image: ``boxes`` ``Tensor[M, 4]`` float xyxy pixels and ``labels``
    ``Tensor[M]`` int64 in ``[0, K)`` (required); optional ``image_id`` (int), ``area`` ``Tensor[M]``
    (COCO's area, used for the small/medium/large split), ``iscrowd`` ``Tensor[M]`` (crowd regions are
    not trained on and not counted as misses), ``masks`` ``Tensor[M, H, W]``."""

    image_id: int
    area: Tensor
    iscrowd: Tensor
    masks: Tensor


class Detections(TypedDict):
    """Detections of one image: ``boxes`` ``Tensor[D, 4]`` float xyxy pixels, ``scores`` ``Tensor[D]``
    (decreasing), ``labels`` ``Tensor[D]`` int64 in ``[0, K)``."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride (input pixels per feature cell) of one feature map."""

    channels: int
    stride: int

    def __post_init__(self) -> None:
        if self.channels < 1 or self.stride < 1:
            raise ValueError(f"ShapeSpec needs channels >= 1 and stride >= 1, got {self}")
