"""Class masks on disk: VOC-style palette PNGs (pixel value = class index, 255 = void / ignore), and the
checks every mask passes before training sees it.

The VOC colour map gives class ``i`` the colour whose R, G, B bits are taken from the bits of ``i``
(bit 0 → the top bit of R, bit 1 → of G, bit 2 → of B, then the next bits one place lower); index 255
(void) is ``(224, 224, 192)``. Reading a palette PNG maps each *used colour* back to its class through
this map, so a file saved with another palette order still reads correctly, and a colour the map does not
know is an error naming the file, the index and the colour. Grey (``L``) PNGs hold class indices
directly. An RGB mask is refused: it has no indices.

Example:
    >>> voc_palette()[:3]
    [(0, 0, 0), (128, 0, 0), (0, 128, 0)]
    >>> voc_palette()[255]
    (224, 224, 192)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from visionkit.errors import DatasetError

__all__ = ["IGNORE_INDEX", "check_mask", "read_mask_png", "voc_palette", "write_mask_png"]

#: the label of void pixels: left out of the loss and of every metric
IGNORE_INDEX = 255


def voc_palette(size: int = 256) -> list[tuple[int, int, int]]:
    """The Pascal VOC colour of each index ``0 .. size−1`` (see the module docstring)."""
    colours = []
    for index in range(size):
        red = green = blue = 0
        value = index
        for shift in range(7, -1, -1):
            red |= ((value >> 0) & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colours.append((red, green, blue))
    return colours


def write_mask_png(mask: Tensor | np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Save a class mask ``[H, W]`` (values 0..254 and 255 = void) as a VOC palette PNG.

    Example:
        >>> write_mask_png(torch.zeros(4, 4, dtype=torch.int64), "mask.png").name
        'mask.png'
    """
    array = mask.cpu().numpy() if isinstance(mask, Tensor) else np.asarray(mask)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"mask must be a non-empty [H, W] array, got shape {array.shape}")
    if array.min() < 0 or array.max() > 255:
        raise ValueError(f"mask values must lie in [0, 255], got [{array.min()}, {array.max()}]")
    picture = Image.fromarray(array.astype(np.uint8), mode="P")
    picture.putpalette([channel for colour in voc_palette() for channel in colour])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path


def _indices_from_palette(picture: Image.Image, path: Path) -> np.ndarray:
    indices = np.asarray(picture, dtype=np.uint8)
    palette = picture.getpalette() or []
    known = {colour: index for index, colour in enumerate(voc_palette())}
    lookup = np.zeros(256, dtype=np.int64)
    for used in np.unique(indices).tolist():
        colour = tuple(palette[3 * used : 3 * used + 3])
        if colour not in known:
            raise DatasetError(
                f"mask {str(path)!r}: palette index {used} has colour {colour}, which is no class of the "
                "VOC colour map (expected the VOC palette: class i's colour, void (224, 224, 192))"
            )
        lookup[used] = known[colour]  # type: ignore[index]
    return lookup[indices]


def read_mask_png(path: str | os.PathLike[str]) -> Tensor:
    """Read a class mask PNG as int64 ``[H, W]`` (palette colours mapped to classes, or grey values).

    Raises:
        DatasetError: unreadable file; an RGB(A) mask; a palette colour outside the VOC colour map — each
            names the file (and the index and colour).
    """
    path = Path(path)
    try:
        with Image.open(path) as picture:
            picture.load()
            mode = picture.mode
            if mode == "P":
                array = _indices_from_palette(picture, path)
            elif mode in ("L", "I", "I;16", "1"):
                array = np.asarray(picture).astype(np.int64)
            else:
                raise DatasetError(
                    f"mask {str(path)!r}: an {mode} image where an index mask is expected (a palette or grey "
                    "PNG whose pixel values are class indices); convert colour masks to indices first"
                )
    except (OSError, SyntaxError, ValueError) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"cannot read mask {str(path)!r}: {error}") from error
    return torch.from_numpy(np.ascontiguousarray(array))


def check_mask(
    mask: Tensor,
    num_classes: int,
    where: str,
    *,
    image_size: Sequence[int] | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """``mask`` (int64 ``[H, W]``) after checking its size against ``image_size`` ``(H, W)`` and its values
    against ``0 .. num_classes−1`` and ``ignore_index``; errors name ``where`` (the file) and the values.

    Example:
        >>> check_mask(torch.tensor([[0, 3]]), 3, "a.png")
        Traceback (most recent call last):
        ...
        visionkit.errors.DatasetError: mask a.png: labels [3] outside 0..2 (and 255 = ignore)
    """
    if mask.dim() != 2:
        raise DatasetError(f"mask {where}: expected an [H, W] index mask, got shape {list(mask.shape)}")
    if image_size is not None and tuple(mask.shape) != tuple(image_size):
        raise DatasetError(
            f"mask {where}: size {mask.shape[1]}x{mask.shape[0]} (WxH) differs from its image's "
            f"{image_size[1]}x{image_size[0]}"
        )
    values = torch.unique(mask)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
    if bad.numel():
        raise DatasetError(
            f"mask {where}: labels {bad[:10].tolist()} outside 0..{num_classes - 1} "
            f"(and {ignore_index} = ignore)"
        )
    return mask
