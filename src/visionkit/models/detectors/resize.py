"""Train and run a detector at a working scale while taking and returning original-size images/boxes.

Large photographs (COCO, VOC: 500–640 px) are slow to train on a CPU at full size. :class:`ResizedInput`
wraps any visionkit detector: every image is resized to the working scale, training targets are scaled
with it, and detections are mapped back to the input image's own pixel coordinates (then clipped to it),
so datasets, metrics and drawings never see the working scale. Two ways to resize:

* keeping the aspect ratio, shorter side ``min_size`` and longer side at most ``max_size``
  (:class:`visionkit.data.transforms.Resize`; Faster R-CNN's and RetinaNet's convention);
* ``letterbox=True``: darknet's letterbox (:func:`letterbox`) — the longer side to ``min_size``, the
  image centred on a ``min_size × min_size`` square of grey 0.5 (YOLOv2 / YOLOv3).

and, in training, darknet's multi-scale training (``multiscale=(low, high)``, :func:`multiscale_size`):
every ``multiscale_every`` batches a new working size, a multiple of 32 in ``[low, high]`` drawn for the
whole batch; evaluation stays at ``min_size``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionkit.data.transforms import Resize, copy_target
from visionkit.errors import ConfigError
from visionkit.ops.boxes import clip_boxes_to_image

__all__ = [
    "LETTERBOX_FILL",
    "MULTISCALE_STEP",
    "ResizedInput",
    "letterbox",
    "letterbox_geometry",
    "letterbox_to_original",
    "multiscale_size",
]

#: darknet's letterbox fill (``fill_image(boxed, .5)``): mid-grey on ``[0, 1]`` images.
LETTERBOX_FILL = 0.5
#: darknet draws multi-scale sizes as multiples of 32 (the coarsest YOLO stride).
MULTISCALE_STEP = 32


def letterbox_geometry(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """``(new_height, new_width, top, left)`` of darknet's letterbox of a ``height × width`` image on a
    ``size × size`` square (``letterbox_image`` in darknet's ``src/image.c``).

    The longer side becomes ``size`` and the other ``floor(other · size / longer)`` (C integer division;
    a square image fills the square); the offsets are ``floor((size − new) / 2)``, so an odd margin puts
    the extra pixel at the bottom / right. (darknet's ``correct_yolo_boxes`` undoes the offset as the
    float ``(size − new) / 2``, half a pixel off the embedding when the margin is odd; visionkit inverts
    the embedding exactly.) A side that would round to 0 (aspect ratio above ``size``) is 1.

    Example:
        >>> letterbox_geometry(300, 500, 416)  # 300·416 // 500 = 249; (416 − 249) // 2 = 83
        (249, 416, 83, 0)
    """
    if width > height:  # darknet: size / width < size / height
        new_height, new_width = max(1, height * size // width), size
    else:
        new_height, new_width = size, max(1, width * size // height)
    return new_height, new_width, (size - new_height) // 2, (size - new_width) // 2


def _box_transform(height: int, width: int, size: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """Per-coordinate ``(factors, offsets)`` (``Tensor[4]``, dtype and device of ``like``) of the
    letterbox: ``box · factors + offsets``; the factors ``new / old`` rounded once to the dtype."""
    new_height, new_width, top, left = letterbox_geometry(height, width, size)
    scale_x, scale_y = new_width / width, new_height / height
    options = {"dtype": like.dtype, "device": like.device}
    factors = torch.tensor([scale_x, scale_y, scale_x, scale_y], **options)
    offsets = torch.tensor([left, top, left, top], **options)
    return factors, offsets


def letterbox(image: Tensor, target: dict[str, Any], size: int) -> tuple[Tensor, dict[str, Any]]:
    """darknet's letterbox: ``image`` resized keeping its aspect ratio so that its longer side is ``size``
    (bilinear with antialiasing, as :class:`~visionkit.data.transforms.Resize`), centred on a
    ``size × size`` canvas of :data:`LETTERBOX_FILL`; ``target`` boxes (``Tensor[N, 4]`` xyxy pixels),
    ``area`` and ``masks`` follow (a copy: the caller's target is left as it was).

    Args:
        image: ``Tensor[C, H, W]`` float in ``[0, 1]``.
        target: a dict that may hold ``boxes``, ``area``, ``masks`` (``Tensor[N, H, W]`` bool); ``{}``.
        size: the square's side in pixels (> 0).

    Returns:
        ``(Tensor[C, size, size], target)``; geometry from :func:`letterbox_geometry`.

    Example:
        >>> boxes = torch.tensor([[0.0, 0, 200, 100]])
        >>> image, target = letterbox(torch.rand(3, 100, 200), {"boxes": boxes}, 64)
        >>> tuple(image.shape), target["boxes"], float(image[0, 0, 0])
        ((3, 64, 64), tensor([[ 0., 16., 64., 48.]]), 0.5)
    """
    if image.dim() != 3 or not image.is_floating_point():
        raise ValueError(
            f"letterbox: image must be a float Tensor[C, H, W], got {image.dtype} {list(image.shape)}"
        )
    height, width = int(image.shape[1]), int(image.shape[2])
    new_height, new_width, top, left = letterbox_geometry(height, width, size)
    resized = F.interpolate(
        image[None], size=(new_height, new_width), mode="bilinear", align_corners=False, antialias=True
    )[0]
    canvas = image.new_full((image.shape[0], size, size), LETTERBOX_FILL)
    canvas[:, top : top + new_height, left : left + new_width] = resized
    target = copy_target(target)
    if "boxes" in target:
        boxes = target["boxes"]
        factors, offsets = _box_transform(height, width, size, boxes)
        target["boxes"] = boxes * factors + offsets
    if "area" in target:
        target["area"] = target["area"] * (new_width / width * (new_height / height))
    if "masks" in target:
        masks = F.interpolate(target["masks"][None].float(), size=(new_height, new_width))[0] > 0.5
        target["masks"] = masks.new_zeros((masks.shape[0], size, size))
        target["masks"][:, top : top + new_height, left : left + new_width] = masks
    return canvas, target


def letterbox_to_original(boxes: Tensor, height: int, width: int, size: int) -> Tensor:
    """Boxes ``Tensor[K, 4]`` (xyxy) on the ``size`` letterbox square of a ``height × width`` image back
    to that image: the offset removed, the scale undone with the same rounded factors :func:`letterbox`
    multiplied by, then clipped to the image.

    Example:
        >>> letterbox_to_original(torch.tensor([[0.0, 16, 64, 48]]), 100, 200, 64)
        tensor([[  0.,   0., 200., 100.]])
    """
    factors, offsets = _box_transform(height, width, size, boxes)
    return clip_boxes_to_image((boxes - offsets) / factors, (height, width))


def multiscale_size(seed: int, index: int, low: int, high: int, step: int = MULTISCALE_STEP) -> int:
    """The working size of the ``index``-th period of multi-scale training: a multiple of ``step`` in
    ``[low, high]``, uniform, drawn by a :class:`torch.Generator` seeded from ``(seed, index)`` only — so
    a run is reproducible and a resumed run draws what the uninterrupted one did (darknet:
    ``(rand() % 10 + 10) * 32``, i.e. 320..608 for a 416 network, every 10 batches).

    Example:
        >>> sizes = {multiscale_size(0, index, 96, 160) for index in range(50)}
        >>> sorted(sizes), multiscale_size(0, 7, 96, 160) == multiscale_size(0, 7, 96, 160)
        ([96, 128, 160], True)
    """
    if not 0 < low <= high or low % step or high % step:
        raise ConfigError(f"multiscale=({low}, {high}): expected multiples of {step} with 0 < low <= high")
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=4).digest()  # torch seeds use 32 bits
    generator = torch.Generator().manual_seed(int.from_bytes(digest, "little"))
    return low + step * int(torch.randint((high - low) // step + 1, (), generator=generator))


class ResizedInput(nn.Module):
    """Run ``detector`` on resized copies of the input images; detections in the inputs' coordinates.

    Args:
        detector: a detector taking ``list[Tensor[3, H, W]]`` (and targets in training) and returning, in
            eval mode, one dict per image with ``boxes`` (``Tensor[K, 4]`` xyxy), ``scores`` and ``labels``.
        min_size: shorter side of the working scale, in pixels (> 0); with ``letterbox``, the square's side.
        max_size: cap for the longer side (``None``: no cap; else >= ``min_size``; not with ``letterbox``).
        letterbox: darknet's centred letterbox (:func:`letterbox`) instead of a shorter-side resize.
        multiscale: ``(low, high)``, multiples of 32: in training, every ``multiscale_every`` batches a new
            working size (:func:`multiscale_size`; letterbox: the square's side, else the shorter side,
            with ``max_size`` scaled alike). The batches seen are the buffer ``multiscale_batches``, so a
            trainer checkpoint resumes the sequence. ``None``: off.
        multiscale_every: batches per drawn size (darknet: 10).
        seed: seeds the draws (with the period's index).

    Example:
        >>> from visionkit.models import create_model
        >>> detector = create_model("retinanet_plain_fpn", num_classes=3)
        >>> model = ResizedInput(detector, min_size=96, max_size=160).eval()
        >>> detections = model([torch.rand(3, 300, 500)])
        >>> bool((detections[0]["boxes"][:, 2] <= 500).all())
        True
        >>> yolo = ResizedInput(create_model("yolov3_plain", num_classes=3), 128, letterbox=True,
        ...                     multiscale=(96, 160))
        >>> found = yolo.eval()([torch.rand(3, 90, 200)])  # evaluated at 128: the 200 px side -> 128
        >>> yolo.working_size(), bool((found[0]["boxes"][:, 3] <= 90).all())
        (128, True)
    """

    def __init__(
        self,
        detector: nn.Module,
        min_size: int,
        max_size: int | None = None,
        *,
        letterbox: bool = False,
        multiscale: tuple[int, int] | None = None,
        multiscale_every: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.resize = Resize(min_size, max_size)
        self.detector = detector
        self.letterbox = bool(letterbox)
        if letterbox and max_size is not None:
            raise ConfigError(f"max_size={max_size}: not with letterbox (min_size is the square's side)")
        if multiscale is not None:
            multiscale_size(seed, 0, *multiscale)  # checks the range
            if multiscale_every < 1:
                raise ConfigError(f"multiscale_every={multiscale_every}: expected an integer >= 1")
            self.register_buffer("multiscale_batches", torch.zeros((), dtype=torch.int64))
        self.multiscale = None if multiscale is None else (int(multiscale[0]), int(multiscale[1]))
        self.multiscale_every, self.seed = multiscale_every, seed

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

    def working_size(self) -> int:
        """The size the next batch is resized to: ``min_size``, or in training with ``multiscale`` the
        size drawn for the current period."""
        if self.multiscale is None or not self.training:
            return self.min_size
        index = int(self.multiscale_batches) // self.multiscale_every
        return multiscale_size(self.seed, index, *self.multiscale)

    def _transform(self, size: int) -> Any:
        """The resize of one batch at ``size``: ``(image, target) -> (image, target)``."""
        if self.letterbox:
            return lambda image, target: letterbox(image, target, size)
        if size == self.min_size:
            return self.resize
        cap = None if self.max_size is None else max(size, round(self.max_size * size / self.min_size))
        return Resize(size, cap)

    def forward(self, images: Sequence[Tensor], targets: Sequence[dict[str, Any]] | None = None) -> Any:
        if isinstance(images, Tensor) or len(images) == 0:
            raise ValueError("images must be a non-empty list of Tensor[C, H, W] (one per image)")
        transform = self._transform(self.working_size())
        if self.training:
            if targets is None:
                return self.detector([transform(image, {})[0] for image in images], None)  # its own error
            if len(targets) != len(images):
                raise ValueError(f"got {len(images)} images but {len(targets)} targets")
            pairs = [transform(image, target) for image, target in zip(images, targets, strict=True)]
            if self.multiscale is not None:
                self.multiscale_batches += 1
            return self.detector([image for image, _ in pairs], [target for _, target in pairs])
        resized = [transform(image, {})[0] for image in images]
        back = _from_letterbox if self.letterbox else _to_original
        return [
            back(found, image, small)
            for found, image, small in zip(self.detector(resized), images, resized, strict=True)
        ]

    def extra_repr(self) -> str:
        text = f"min_size={self.min_size}, max_size={self.max_size}"
        if self.letterbox:
            text += ", letterbox=True"
        if self.multiscale is not None:
            text += f", multiscale={self.multiscale}, multiscale_every={self.multiscale_every}"
        return text


def _from_letterbox(detection: dict[str, Tensor], image: Tensor, boxed: Tensor) -> dict[str, Tensor]:
    """One image's detections from its letterbox square (``boxed``) back to ``image``."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    return {**detection, "boxes": letterbox_to_original(detection["boxes"], height, width, boxed.shape[-1])}


def _to_original(detection: dict[str, Tensor], image: Tensor, resized: Tensor) -> dict[str, Tensor]:
    """Scale one image's detected boxes from the resized image back to the original, clipped to it."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    scale_x, scale_y = width / resized.shape[-1], height / resized.shape[-2]
    boxes = detection["boxes"]
    factors = torch.tensor([scale_x, scale_y, scale_x, scale_y], dtype=boxes.dtype, device=boxes.device)
    return {**detection, "boxes": clip_boxes_to_image(boxes * factors, (height, width))}
