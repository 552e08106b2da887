"""draw_boxes, image_grid: only the outline pixels change, captions stay in their tag, inputs untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from visionkit.viz import PALETTE, class_colour, draw_boxes, image_grid, to_pil


def outline_mask(height: int, width: int, box: tuple[int, int, int, int], line: int) -> np.ndarray:
    """Reference: pixels of box (right/bottom exclusive) within ``line`` pixels of its edge, by a loop."""
    x1, y1, x2, y2 = box
    mask = np.zeros((height, width), dtype=bool)
    for y in range(height):
        for x in range(width):
            inside = x1 <= x < x2 and y1 <= y < y2
            near_edge = x < x1 + line or x >= x2 - line or y < y1 + line or y >= y2 - line
            mask[y, x] = inside and near_edge
    return mask


def changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    return (np.asarray(before) != np.asarray(after)).any(axis=2)


@pytest.mark.parametrize("line", [1, 2, 3])
@pytest.mark.parametrize("box", [(4, 5, 20, 30), (0, 0, 40, 32), (10, 10, 12, 11), (3, 7, 9, 8)])
def test_outline_pixels_exactly(box: tuple[int, int, int, int], line: int) -> None:
    image = torch.full((3, 32, 40), 0.5)
    drawn = draw_boxes(image, [box], labels=[2], width=line, captions=False)
    expected = outline_mask(32, 40, box, line)
    np.testing.assert_array_equal(changed(to_pil(image), drawn), expected)
    assert {tuple(p) for p in np.asarray(drawn)[expected]} == {class_colour(2)}


def test_several_boxes_and_colours_per_class() -> None:
    image = np.full((48, 48, 3), 128, dtype=np.uint8)
    boxes = torch.tensor([[2.0, 2, 20, 20], [25, 25, 45, 40]])
    drawn = np.asarray(draw_boxes(image, boxes, torch.tensor([0, 1]), captions=False))
    assert tuple(drawn[2, 10]) == class_colour(0) and tuple(drawn[25, 30]) == class_colour(1)
    union = outline_mask(48, 48, (2, 2, 20, 20), 1) | outline_mask(48, 48, (25, 25, 45, 40), 1)
    np.testing.assert_array_equal((drawn != image).any(axis=2), union)
    assert class_colour(0) != class_colour(1) and class_colour(len(PALETTE)) == class_colour(0)


def test_caption_stays_inside_its_tag_and_threshold_skips() -> None:
    image = torch.zeros(3, 64, 64)
    drawn = draw_boxes(image, [[10, 30, 50, 60], [0, 0, 8, 8]], [1, 0], [0.87, 0.01], ["circle", "square"],
                       score_threshold=0.5)  # fmt: skip
    diff = changed(to_pil(image), drawn)
    outline = outline_mask(64, 64, (10, 30, 50, 60), 1)
    caption = diff & ~outline
    assert caption.any(), "the caption 'square 0.87' must be drawn"
    rows, columns = np.nonzero(caption)
    assert rows.max() < 30 and columns.min() >= 10, "the tag sits just above the box, from its left edge"
    assert not diff[:8, :8].any(), "a box scoring below score_threshold is not drawn"


def test_inputs_never_modified() -> None:
    tensor = torch.rand(3, 16, 16)
    array = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    picture = Image.fromarray(array.copy())
    boxes = torch.tensor([[1.0, 1, 9, 9]])
    copies = (tensor.clone(), array.copy(), np.asarray(picture).copy(), boxes.clone())
    for image in (tensor, array, picture):
        draw_boxes(image, boxes, torch.tensor([0]), torch.tensor([0.5]), ["a"])
    assert torch.equal(tensor, copies[0]) and np.array_equal(array, copies[1])
    assert np.array_equal(np.asarray(picture), copies[2]) and torch.equal(boxes, copies[3])


def test_empty_and_degenerate_boxes() -> None:
    image = torch.rand(3, 8, 8)
    assert np.array_equal(np.asarray(draw_boxes(image, torch.zeros(0, 4))), np.asarray(to_pil(image)))
    assert np.array_equal(np.asarray(draw_boxes(image, [[3, 3, 3, 6]])), np.asarray(to_pil(image)))


def test_bad_input_names_the_argument() -> None:
    image = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="boxes must have shape"):
        draw_boxes(image, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="labels must have shape"):
        draw_boxes(image, torch.zeros(2, 4), labels=[0])
    with pytest.raises(ValueError, match="scores must have shape"):
        draw_boxes(image, torch.zeros(1, 4), scores=[0.1, 0.2])
    with pytest.raises(ValueError, match="finite"):
        draw_boxes(image, [[0, 0, float("nan"), 4]])
    with pytest.raises(ValueError, match="Tensor\\[3, H, W\\]"):
        draw_boxes(torch.rand(8, 8), [[0, 0, 4, 4]])
    with pytest.raises(TypeError, match="image must be"):
        draw_boxes([[0]], [[0, 0, 4, 4]])
    with pytest.raises(ValueError, match="label must be >= 0"):
        class_colour(-1)


def test_image_grid_places_each_image() -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    tiles = [Image.new("RGB", (10, 6), colour) for colour in colours]
    grid = image_grid(tiles, columns=2, padding=1)
    assert grid.size == (2 * 10 + 3, 2 * 6 + 3)
    assert grid.getpixel((1, 1)) == colours[0] and grid.getpixel((12, 1)) == colours[1]
    assert grid.getpixel((1, 8)) == colours[2] and grid.getpixel((12, 8)) == (255, 255, 255)
    with pytest.raises(ValueError, match="images must not be empty"):
        image_grid([])
