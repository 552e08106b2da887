"""The fully convolutional network (Long, Shelhamer & Darrell, *Fully Convolutional Networks for Semantic
Segmentation*, CVPR 2015; handbook §22): class scores on the coarsest feature map, upsampled by
bilinear-initialised transposed convolutions and refined by skip layers from finer pooling stages.

* FCN-32s: ``score(top)`` upsampled ×32 in one step.
* FCN-16s: ``score(top)`` ×2, plus ``score(pool4)``, then ×16.
* FCN-8s: as 16s, then ×2, plus ``score(pool3)``, then ×8.

Score layers are zero-initialised (the paper's choice; Caffe's default filler). Skip inputs are multiplied
by fixed ``skip_scales`` before scoring — the authors' "at-once" FCN-8s (``voc-fcn8s-atonce``: pool4 × 0.01,
pool3 × 1e-4) trains all skips in one run instead of staging 32s → 16s → 8s; visionkit trains at once.
Offsets derived from the layer geometry (:mod:`visionkit.models.segmentation.alignment`) line the maps
up, so output pixel ``(y, x)`` is input pixel ``(y, x)`` for any input size: upsampled scores are never cut
before the last step (no border truncation inside the net); each skip is cut where it starts earlier than
them (Caffe's crops 5 of ``score_pool4`` and 9 of ``score_pool3``) and added where it exists; the final map
is cropped to the input.

The segmentation contract (what :mod:`visionkit.engine.segment` relies on): ``model(images)`` with
``images`` a ``Tensor[N, 3, H, W]`` float in ``[0, 1]`` returns logits ``Tensor[N, num_classes, H, W]``;
``model.num_classes``; ``model.encoder.load_pretrained(path)`` loads a torchvision-format classification
checkpoint.

Example:
    >>> from visionkit.models import create_model
    >>> model = create_model("fcn8s_small", num_classes=4).eval()
    >>> model(torch.rand(2, 3, 45, 70)).shape
    torch.Size([2, 4, 45, 70])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from visionkit.errors import InputShapeError
from visionkit.models.detectors.base import IMAGENET_MEAN, IMAGENET_STD
from visionkit.models.segmentation.alignment import (
    Frame,
    align_crops,
    transposed_frame,
    upsampling_kernel,
)
from visionkit.models.segmentation.upsample import ScoreUpsample

__all__ = ["FCN", "Level", "check_images"]


@dataclass(frozen=True)
class Level:
    """One feature map an encoder returns: its channels and its :class:`Frame`."""

    channels: int
    frame: Frame


def check_images(images: Tensor, who: str = "FCN") -> None:
    """``InputShapeError`` unless ``images`` is ``[N, 3, H, W]`` with ``N, H, W >= 1``; ``TypeError`` unless
    it is floating point (convert uint8 images with ``.float() / 255``)."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3 or 0 in images.shape:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise InputShapeError(f"{who}: expected an image batch (N, 3, H, W) with N, H, W >= 1, got {shape}")
    if not images.is_floating_point():
        raise TypeError(
            f"{who}: expected float images in [0, 1], got dtype {images.dtype} (use .float() / 255)"
        )


def _crop(x: Tensor, start: int, height: int, width: int) -> Tensor:
    return x[..., start : start + height, start : start + width]


def _placed(skip: Tensor, place: int, crop: int, like: Tensor) -> Tensor:
    """``skip`` without its first ``crop`` rows and columns, zero-padded to ``like``'s size so that it starts
    ``place`` positions in (and is cut where it would run past ``like``)."""
    height = min(skip.shape[-2] - crop, like.shape[-2] - place)
    width = min(skip.shape[-1] - crop, like.shape[-1] - place)
    part = _crop(skip, crop, max(height, 0), max(width, 0))
    return F.pad(part, (place, like.shape[-1] - place - width, place, like.shape[-2] - place - height))


class FCN(nn.Module):
    """Score, upsample, fuse skips, upsample to the input (see the module docstring).

    Args:
        encoder: returns ``dict[str, Tensor]`` of feature maps and describes them in ``encoder.levels``
            (``dict[str, Level]``).
        num_classes: classes scored per pixel (background included).
        top: the coarsest level, scored first (``"fc7"`` for VGG, ``"c5"`` for ResNet / MobileNet).
        skips: finer levels fused in order, e.g. ``("pool4", "pool3")`` for FCN-8s; empty for FCN-32s.
        skip_scales: one fixed multiplier per skip (at-once training; 1.0: none).
        learn_upsampling: learn the upsampling kernels, else keep them bilinear (as the released nets).
        image_mean, image_std: input normalization (per channel, images in ``[0, 1]``).

    Shape:
        ``(N, 3, H, W) -> (N, num_classes, H, W)`` for any ``H, W >= 1``.
    """

    image_mean: Tensor
    image_std: Tensor

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        *,
        top: str,
        skips: Sequence[str] = (),
        skip_scales: Sequence[float] | None = None,
        learn_upsampling: bool = False,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        levels: dict[str, Level] = encoder.levels  # type: ignore[assignment]
        unknown = [name for name in (top, *skips) if name not in levels]
        if unknown:
            raise ValueError(f"levels {unknown} are not among the encoder's {list(levels)}")
        scales = tuple(skip_scales) if skip_scales is not None else (1.0,) * len(skips)
        if len(scales) != len(skips):
            raise ValueError(f"need one skip scale per skip {tuple(skips)}, got {scales}")
        self.encoder, self.num_classes = encoder, num_classes
        self.top, self.skips, self.skip_scales = top, tuple(skips), scales
        self.score_top = _score_layer(levels[top].channels, num_classes)
        self.score_skips = nn.ModuleDict(
            {name: _score_layer(levels[name].channels, num_classes) for name in skips}
        )
        self.upsample = nn.ModuleList()
        self.skip_offsets: list[tuple[int, int]] = []  # per skip: (where it starts, how much of it is cut)
        frame = levels[top].frame
        for name in skips:
            frame = self._add_upsampling(frame, levels[name].frame, learn_upsampling)
        frame = self._add_upsampling(frame, Frame(1, 0.0), learn_upsampling)
        start, late = self.skip_offsets.pop()
        if late:
            raise ValueError(f"the upsampled scores ({frame}) start after the first input pixel")
        self.final_crop = start
        self.register_buffer("image_mean", torch.tensor(image_mean, dtype=torch.float32)[:, None, None])
        self.register_buffer("image_std", torch.tensor(image_std, dtype=torch.float32)[:, None, None])

    def _add_upsampling(self, frame: Frame, target: Frame, trainable: bool) -> Frame:
        """Append the upsampling from ``frame`` onto ``target``'s grid and where ``target`` starts in it
        (positions in, positions of ``target`` cut); the frame of the upsampled map (never cut)."""
        factor = frame.stride // target.stride
        if factor * target.stride != frame.stride or factor < 1:
            raise ValueError(f"cannot upsample stride {frame.stride} onto stride {target.stride}")
        kernel = upsampling_kernel(frame, factor, target.offset)
        self.upsample.append(ScoreUpsample(self.num_classes, factor, kernel, trainable))
        upsampled = transposed_frame(frame, kernel, factor)
        self.skip_offsets.append(align_crops(upsampled, target))
        return upsampled

    def forward(self, images: Tensor) -> Tensor:
        check_images(images, type(self).__name__)
        x = (images - self.image_mean.to(images.dtype)) / self.image_std.to(images.dtype)
        features = self.encoder(x)
        scores = self.score_top(features[self.top])
        for index, (name, scale) in enumerate(zip(self.skips, self.skip_scales, strict=True)):
            upsampled = self.upsample[index](scores)
            feature = features[name] * scale if scale != 1.0 else features[name]
            scores = upsampled + _placed(
                self.score_skips[name](feature), *self.skip_offsets[index], upsampled
            )
        output = self.upsample[-1](scores)
        height, width = images.shape[-2:]
        start = self.final_crop
        if output.shape[-2] < start + height or output.shape[-1] < start + width:
            raise RuntimeError(
                f"{type(self).__name__}: scores of {tuple(output.shape[-2:])} cannot cover a "
                f"{height}x{width} input from offset {start} (encoder maps too small for this input)"
            )
        return _crop(output, start, height, width)


def _score_layer(channels: int, num_classes: int) -> nn.Conv2d:
    """A zero-initialised 1×1 class-scoring convolution (FCN §4.2)."""
    layer = nn.Conv2d(channels, num_classes, kernel_size=1)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)  # type: ignore[arg-type]
    return layer
