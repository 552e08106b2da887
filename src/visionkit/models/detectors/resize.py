"""Train and run a detector at a fixed input scale while taking and returning original-size images/boxes.

Large photographs (COCO, VOC: 500–640 px) are slow to train on a CPU at full size. :class:`ResizedInput`
wraps any visionkit detector: every image is resized keeping its aspect ratio (shorter side ``min_size``,
longer side at most ``max_size``; :class:`visionkit.data.transforms.Resize`), training targets are scaled
with it, and detections are mapped back to the input image's own pixel coordinates (then clipped to it),
so datasets, metrics and drawings never see the working scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from visionkit.data.transforms import Resize
from visionkit.ops.boxes import clip_boxes_to_image

__all__ = ["ResizedInput"]


class ResizedInput(nn.Module):
    """Run ``detector`` on resized copies of the input images; detections in the inputs' coordinates.

    Args:
        detector: a detector taking ``list[Tensor[3, H, W]]`` (and targets in training) and returning, in
            eval mode, one dict per image with ``boxes`` (``Tensor[K, 4]`` xyxy), ``scores`` and ``labels``.
        min_size: shorter side of the working scale, in pixels (> 0).
        max_size: cap for the longer side (``None``: no cap; else >= ``min_size``).

    Example:
        >>> from visionkit.models import create_model
        >>> detector = create_model("retinanet_plain_fpn", num_classes=3)
        >>> model = ResizedInput(detector, min_size=96, max_size=160).eval()
        >>> detections = model([torch.rand(3, 300, 500)])
        >>> bool((detections[0]["boxes"][:, 2] <= 500).all())
        True
    """

    def __init__(self, detector: nn.Module, min_size: int, max_size: int | None = None) -> None:
        super().__init__()
        self.resize = Resize(min_size, max_size)
        self.detector = detector

    @property
    def postprocess(self) -> Any:
        """The wrapped detector's post-processing settings (read and assigned through the wrapper)."""
        return self.detector.postprocess

    @postprocess.setter
    def postprocess(self, value: Any) -> None:
        self.detector.postprocess = value

    @property
    def num_classes(self) -> int:
        return int(self.detector.num_classes)

    @property
    def backbone(self) -> nn.Module:
        return self.detector.backbone

    @property
    def min_size(self) -> int:
        return self.resize.min_size

    @property
    def max_size(self) -> int | None:
        return self.resize.max_size

    def forward(self, images: Sequence[Tensor], targets: Sequence[dict[str, Any]] | None = None) -> Any:
        if isinstance(images, Tensor) or len(images) == 0:
            raise ValueError("images must be a non-empty list of Tensor[C, H, W] (one per image)")
        if self.training:
            if targets is None:
                return self.detector([self.resize(image, {})[0] for image in images], None)  # its own error
            if len(targets) != len(images):
                raise ValueError(f"got {len(images)} images but {len(targets)} targets")
            pairs = [self.resize(image, target) for image, target in zip(images, targets, strict=True)]
            return self.detector([image for image, _ in pairs], [target for _, target in pairs])
        resized = [self.resize(image, {})[0] for image in images]
        return [
            _to_original(detection, image, small)
            for detection, image, small in zip(self.detector(resized), images, resized, strict=True)
        ]

    def extra_repr(self) -> str:
        return f"min_size={self.min_size}, max_size={self.max_size}"


def _to_original(detection: dict[str, Tensor], image: Tensor, resized: Tensor) -> dict[str, Tensor]:
    """Scale one image's detected boxes from the resized image back to the original, clipped to it."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    scale_x, scale_y = width / resized.shape[-1], height / resized.shape[-2]
    boxes = detection["boxes"]
    factors = torch.tensor([scale_x, scale_y, scale_x, scale_y], dtype=boxes.dtype, device=boxes.device)
    return {**detection, "boxes": clip_boxes_to_image(boxes * factors, (height, width))}
