"""Class masks drawn over images: each class in its VOC colour, blended with the image; void pixels
(255) and background (0) keep the image.

Example:
    >>> import torch
    >>> picture = overlay_mask(torch.zeros(3, 2, 2), torch.tensor([[0, 1], [255, 1]]), alpha=1.0)
    >>> [picture.getpixel((x, y)) for y in range(2) for x in range(2)]
    [(0, 0, 0), (128, 0, 0), (0, 0, 0), (128, 0, 0)]
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch import Tensor

from visionkit.data.segmentation.masks import IGNORE_INDEX, voc_palette
from visionkit.viz.boxes import to_pil

__all__ = ["overlay_mask"]


def overlay_mask(
    image: Tensor, mask: Tensor, alpha: float = 0.5, ignore_index: int = IGNORE_INDEX
) -> Image.Image:
    """``image`` (``Tensor[3, H, W]`` in ``[0, 1]``) with the classes of ``mask`` (int ``[H, W]``) blended in:
    ``(1 − alpha)·image + alpha·colour`` on object pixels (classes 1..254). Neither input is modified."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if mask.dim() != 2 or tuple(mask.shape) != tuple(image.shape[-2:]):
        raise ValueError(f"mask {list(mask.shape)} must be [H, W] of the image {list(image.shape)}")
    base = np.asarray(to_pil(image), dtype=np.float64)
    labels = mask.detach().cpu().numpy().astype(np.int64)
    colours = np.asarray(voc_palette(), dtype=np.float64)[np.clip(labels, 0, 255)]
    objects = ((labels > 0) & (labels != ignore_index) & (labels < 255))[..., None]
    blended = np.where(objects, (1 - alpha) * base + alpha * colours, base)
    return Image.fromarray(np.round(blended).astype(np.uint8))
