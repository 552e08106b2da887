"""Drawing detections on images with Pillow: one colour per class, ``name score`` captions, image grids.

Boxes are xyxy in absolute pixels with exclusive right/bottom edges (``x2 = last column + 1``, as the
datasets and detectors use them), so a box's outline is drawn on the box's own outermost pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

__all__ = ["PALETTE", "class_colour", "draw_boxes", "image_grid", "to_pil"]

#: Outline colours cycled by class index (Paul Tol's "bright" + extras: distinguishable, colour-blind safe).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (68, 119, 170), (238, 102, 119), (34, 136, 51), (204, 187, 68), (102, 204, 238), (170, 51, 119),
    (238, 119, 51), (0, 153, 136),
)  # fmt: skip


def class_colour(label: int) -> tuple[int, int, int]:
    """The RGB colour of class ``label`` (cycled through :data:`PALETTE`).

    Example:
        >>> class_colour(0), class_colour(8) == class_colour(0)
        ((68, 119, 170), True)
    """
    if label < 0:
        raise ValueError(f"label must be >= 0, got {label}")
    return PALETTE[label % len(PALETTE)]


def to_pil(image: Any) -> Image.Image:
    """A new RGB PIL image from ``Tensor[3, H, W]`` float in [0, 1] (or uint8), ``ndarray[H, W, 3]`` uint8,
    or a PIL image (copied): the caller's image is never modified."""
    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image.copy()
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(
                f"image must be a Tensor[3, H, W] (or [1, H, W]), got shape {tuple(image.shape)}"
            )
        if image.is_floating_point():
            image = (image.detach().float().clamp(0, 1) * 255).round()
        array = image.detach().to(torch.uint8).expand(3, -1, -1).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray(np.ascontiguousarray(array))
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"image must be a uint8 ndarray[H, W, 3], got {image.dtype} with shape {image.shape}"
            )
        return Image.fromarray(image.copy())
    raise TypeError(f"image must be a Tensor, ndarray or PIL image, got {type(image).__name__}")


def _as_rows(values: Any, name: str, count: int | None) -> np.ndarray | None:
    """``values`` as a numpy array: ``[N, 4]`` boxes when ``count`` is None, else ``[count]``."""
    if values is None:
        return None
    array = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    if count is None:
        array = array.reshape(0, 4) if array.size == 0 else array
        if array.ndim != 2 or array.shape[1] != 4:
            raise ValueError(f"{name} must have shape [N, 4], got {array.shape}")
    elif array.shape != (count,):
        raise ValueError(f"{name} must have shape ({count},) like boxes, got {array.shape}")
    return array


def _caption(label: int | None, score: float | None, class_names: Sequence[str] | None) -> str:
    parts = []
    if label is not None:
        parts.append(
            class_names[label] if class_names is not None and label < len(class_names) else str(label)
        )
    if score is not None:
        parts.append(f"{score:.2f}")
    return " ".join(parts)


def draw_boxes(
    image: Any,
    boxes: Any,
    labels: Any = None,
    scores: Any = None,
    class_names: Sequence[str] | None = None,
    *,
    width: int = 1,
    score_threshold: float = 0.0,
    captions: bool = True,
) -> Image.Image:
    """Draw detections (or ground truth) on a copy of ``image``.

    Args:
        image: ``Tensor[3, H, W]`` in [0, 1], ``ndarray[H, W, 3]`` uint8 or a PIL image (never modified).
        boxes: ``[N, 4]`` xyxy absolute pixels, right/bottom exclusive.
        labels: ``[N]`` class indices (colour and caption name); ``None``: all drawn in class 0's colour.
        scores: ``[N]``; boxes scoring below ``score_threshold`` are skipped; shown in the caption.
        class_names: names indexed by label for the captions.
        width: outline width in pixels (drawn inwards from the box edge).
        captions: draw ``name score`` on a filled tag at the box's top-left corner.

    Returns:
        A new RGB PIL image.

    Example:
        >>> picture = draw_boxes(torch.zeros(3, 32, 32), [[4, 4, 20, 20]], [1], [0.9], ["circle", "square"])
        >>> picture.size, picture.getpixel((4, 10)) == class_colour(1)
        ((32, 32), True)
    """
    picture = to_pil(image)
    box_rows = _as_rows(boxes, "boxes", None)
    assert box_rows is not None
    count = box_rows.shape[0]
    label_rows, score_rows = _as_rows(labels, "labels", count), _as_rows(scores, "scores", count)
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if not np.isfinite(box_rows).all():
        raise ValueError("boxes must be finite")
    draw = ImageDraw.Draw(picture)
    order = np.argsort(-score_rows, kind="stable") if score_rows is not None else np.arange(count)
    for index in order[::-1]:  # lowest score first: the best boxes end up on top
        score = None if score_rows is None else float(score_rows[index])
        if score is not None and score < score_threshold:
            continue
        label = None if label_rows is None else int(label_rows[index])
        colour = class_colour(label or 0)
        x1, y1, x2, y2 = (round(float(v)) for v in box_rows[index])
        if x2 <= x1 or y2 <= y1:
            continue  # an empty box has no pixels to outline
        if 2 * width >= min(x2 - x1, y2 - y1):  # all pixels are edge pixels (PIL's outline would spill)
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), fill=colour)
        else:
            draw.rectangle((x1, y1, x2 - 1, y2 - 1), outline=colour, width=width)
        text = _caption(label, score, class_names) if captions else ""
        if text:
            left, top, right, bottom = draw.textbbox((x1, y1), text)
            height = bottom - top
            tag_top = y1 - height - 2 if y1 - height - 2 >= 0 else y1  # above the box, else inside it
            draw.rectangle((x1, tag_top, x1 + right - left + 1, tag_top + height + 1), fill=colour)
            draw.text((x1 + 1 - (left - x1), tag_top + 1 - (top - y1)), text, fill=(255, 255, 255))
    return picture


def image_grid(
    images: Sequence[Image.Image],
    columns: int = 4,
    padding: int = 2,
    background: tuple[int, int, int] = (255,) * 3,
) -> Image.Image:
    """Tile PIL images row by row into one image (cells as large as the largest image).

    Example:
        >>> image_grid([Image.new("RGB", (10, 8))] * 3, columns=2, padding=1).size
        (23, 19)
    """
    if not images:
        raise ValueError("images must not be empty")
    if columns < 1 or padding < 0:
        raise ValueError(f"need columns >= 1 and padding >= 0, got {columns} and {padding}")
    cell_width = max(image.width for image in images)
    cell_height = max(image.height for image in images)
    rows = -(-len(images) // columns)
    used_columns = min(columns, len(images))
    grid = Image.new(
        "RGB",
        (used_columns * cell_width + (used_columns + 1) * padding, rows * cell_height + (rows + 1) * padding),
        background,
    )
    for position, image in enumerate(images):
        row, column = divmod(position, columns)
        grid.paste(
            image, (padding + column * (cell_width + padding), padding + row * (cell_height + padding))
        )
    return grid
