"""Segmentation data: shapes masks against a painter's-algorithm reference, VOC palette PNGs (the colour map,
a round trip through the VOC reader, every bad-input case), and the joint transforms against loops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionkit.data.segmentation import (
    SEGMENTATION_CLASSES,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    ShapesSegmentation,
    VocSegmentation,
    check_mask,
    collate_segmentation,
    crop_pair,
    export_shapes_segmentation,
    read_mask_png,
    resize_pair,
    voc_palette,
    write_mask_png,
)
from visionkit.data.shapes import ShapesConfig, _layout
from visionkit.errors import DatasetError


def _painted_reference(index: int, seed: int, config: ShapesConfig) -> np.ndarray:
    """Paint each shape's *full* raster in drawing order, later over earlier (the painter's algorithm),
    replaying render_shapes' random draws up to the layout."""
    rng = np.random.default_rng([seed, index])
    rng.uniform(0.2, 0.7), rng.uniform(-0.08, 0.08, 3)  # background tint
    rng.normal(0.0, config.noise, (config.image_size, config.image_size, 3))  # background noise
    classes, masks = _layout(rng, config)
    painted = np.zeros((config.image_size, config.image_size), dtype=np.int64)
    for label, full in zip(classes, masks, strict=True):
        painted[full] = label + 1
    return painted


@pytest.mark.parametrize("crowded", [False, True])
def test_shapes_mask_is_the_painters_algorithm(crowded: bool) -> None:
    config = ShapesConfig.crowded_preset(96) if crowded else ShapesConfig(image_size=96, max_occlusion=0.8)
    dataset = ShapesSegmentation(12, seed=3, config=config)
    overlapped = 0
    for index in range(len(dataset)):
        image, mask = dataset[index]
        reference = _painted_reference(index, 3, config)
        assert torch.equal(mask, torch.from_numpy(reference))
        assert image.shape == (3, 96, 96) and mask.dtype == torch.int64
        overlapped += int((reference > 0).sum()) < sum(int(m.sum()) for m in _layout_masks(index, config))
    assert overlapped > 0  # the check saw occlusions


def _layout_masks(index: int, config: ShapesConfig) -> list[np.ndarray]:
    rng = np.random.default_rng([3, index])
    rng.uniform(0.2, 0.7), rng.uniform(-0.08, 0.08, 3)
    rng.normal(0.0, config.noise, (config.image_size, config.image_size, 3))
    return _layout(rng, config)[1]


def test_voc_palette_is_the_devkit_colour_map() -> None:
    """VOCdevkit's labelcolormap: bit j of the index goes to bit 7 − ⌊j/3⌋ of channel j mod 3."""
    for index, colour in enumerate(voc_palette()):
        expected = [0, 0, 0]
        for bit in range(8):
            if index >> bit & 1:
                expected[bit % 3] |= 1 << (7 - bit // 3)
        assert colour == tuple(expected)
    assert voc_palette()[15] == (192, 128, 128)  # 'person' in every VOC mask


def test_export_then_read_back_through_the_voc_reader(tmp_path: Path) -> None:
    dataset = ShapesSegmentation(5, seed=1, config=ShapesConfig(image_size=48, min_size=8, max_size=24))
    root = export_shapes_segmentation(dataset, tmp_path / "voc", image_set="train")
    with Image.open(root / "SegmentationClass" / "000000.png") as picture:
        assert picture.mode == "P" and picture.getpalette()[3:6] == [128, 0, 0]
    voc = VocSegmentation(root, image_set="train")
    assert voc.class_names == SEGMENTATION_CLASSES and len(voc) == 5
    for index in range(5):
        assert all(torch.equal(a, b) for a, b in zip(voc[index], dataset[index], strict=True))
    assert len(VocSegmentation(root)) == 5  # no split: every mask


def _voc_folder(tmp_path: Path, mask: np.ndarray | Image.Image, image_size=(6, 5)) -> Path:
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    Image.fromarray(np.zeros((*image_size, 3), np.uint8)).save(root / "JPEGImages" / "a.png")
    picture = mask if isinstance(mask, Image.Image) else None
    if picture is None:
        write_mask_png(mask, root / "SegmentationClass" / "a.png")
    else:
        picture.save(root / "SegmentationClass" / "a.png")
    return root


def test_void_is_kept_and_a_reordered_palette_still_reads(tmp_path: Path) -> None:
    mask = np.array([[0, 1, 255], [15, 20, 0]])
    path = write_mask_png(mask, tmp_path / "m.png")
    assert torch.equal(read_mask_png(path), torch.from_numpy(mask))
    # the same classes saved with the palette entries swapped (index 0 ↔ 1): colours decide, not indices
    swapped = Image.fromarray(np.where(mask == 0, 1, np.where(mask == 1, 0, mask)).astype(np.uint8), "P")
    palette = voc_palette()
    palette[0], palette[1] = palette[1], palette[0]
    swapped.putpalette([c for colour in palette for c in colour])
    swapped.save(tmp_path / "swapped.png")
    assert torch.equal(read_mask_png(tmp_path / "swapped.png"), torch.from_numpy(mask))
    Image.fromarray(mask.astype(np.uint8), "L").save(tmp_path / "grey.png")
    assert torch.equal(read_mask_png(tmp_path / "grey.png"), torch.from_numpy(mask))


def test_bad_masks_are_named(tmp_path: Path) -> None:
    odd = Image.fromarray(np.array([[0, 7]], np.uint8), "P")
    palette = voc_palette()
    palette[7] = (1, 2, 3)
    odd.putpalette([c for colour in palette for c in colour])
    odd.save(tmp_path / "odd.png")
    with pytest.raises(DatasetError, match=r"odd\.png.*palette index 7 has colour \(1, 2, 3\)"):
        read_mask_png(tmp_path / "odd.png")
    Image.fromarray(np.zeros((2, 2, 3), np.uint8), "RGB").save(tmp_path / "rgb.png")
    with pytest.raises(DatasetError, match=r"rgb\.png.*RGB image where an index mask is expected"):
        read_mask_png(tmp_path / "rgb.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match=r"cannot read mask .*broken\.png"):
        read_mask_png(tmp_path / "broken.png")
    with pytest.raises(DatasetError, match=r"m\.png: labels \[21, 40\] outside 0\.\.20 \(and 255 = ignore\)"):
        check_mask(torch.tensor([[0, 21, 255, 40]]), 21, "m.png")


def test_voc_reader_names_size_mismatch_and_labels(tmp_path: Path) -> None:
    root = _voc_folder(tmp_path / "size", np.zeros((4, 5), np.int64))
    with pytest.raises(DatasetError, match=r"a\.png.*size 5x4 \(WxH\) differs from its image's 5x6"):
        VocSegmentation(root)[0]
    root = _voc_folder(tmp_path / "labels", np.full((6, 5), 3))
    (root / "classes.txt").write_text("background\ncat\ndog\n")
    with pytest.raises(DatasetError, match=r"a\.png.*labels \[3\] outside 0\.\.2"):
        VocSegmentation(root)[0]
    root = _voc_folder(tmp_path / "rgb", Image.fromarray(np.zeros((6, 5, 3), np.uint8), "RGB"))
    with pytest.raises(DatasetError, match=r"a\.png.*RGB image"):
        VocSegmentation(root)[0]
    with pytest.raises(DatasetError, match="no split file"):
        VocSegmentation(root, image_set="val")
    with pytest.raises(DatasetError, match="no SegmentationClass"):
        VocSegmentation(tmp_path)


def test_on_corrupt_skip_lists_the_unreadable(tmp_path: Path) -> None:
    dataset = ShapesSegmentation(3, config=ShapesConfig(image_size=32, min_size=8, max_size=16))
    root = export_shapes_segmentation(dataset, tmp_path / "voc")
    (root / "JPEGImages" / "000001.png").write_bytes(b"truncated")
    with pytest.raises(DatasetError, match="000001"):
        VocSegmentation(root)[1]
    with pytest.warns(UserWarning, match="skipped 1"):
        skipping = VocSegmentation(root, on_corrupt="skip")
    assert len(skipping) == 2 and skipping.skipped == [str(root / "JPEGImages" / "000001.png")]


def _nearest_reference(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    rows = [min(int((y + 0.5) * mask.shape[0] / height), mask.shape[0] - 1) for y in range(height)]
    columns = [min(int((x + 0.5) * mask.shape[1] / width), mask.shape[1] - 1) for x in range(width)]
    return torch.tensor([[int(mask[r, c]) for c in columns] for r in rows])


@pytest.mark.parametrize(("height", "width"), [(14, 9), (3, 20), (7, 11), (21, 33)])
def test_resize_pair_mask_is_nearest_at_pixel_centres(height: int, width: int) -> None:
    """Source pixel ⌊(y + ½)·H_in / H_out⌋ (exact here: small integers), the image by bilinear."""
    torch.manual_seed(0)
    image, mask = torch.rand(3, 7, 11), torch.randint(0, 5, (7, 11))
    mask[0, 0] = 255
    before = mask.clone()
    resized, labels = resize_pair(image, mask, height, width)
    assert torch.equal(labels, _nearest_reference(mask, height, width)) and labels.dtype == torch.int64
    assert resized.shape == (3, height, width) and torch.equal(mask, before)
    same_image, same_mask = resize_pair(image, mask, 7, 11)
    assert torch.equal(same_mask, mask) and torch.equal(same_image, image)  # identity size: unchanged


def test_crop_flip_and_collate_pad_with_ignore() -> None:
    torch.manual_seed(1)
    image, mask = torch.rand(3, 5, 6), torch.randint(0, 3, (5, 6))
    for top, left in [(-2, -3), (0, 0), (3, 4), (4, -1)]:
        out_image, out_mask = crop_pair(image, mask, top, left, 4, 5)
        for y in range(4):
            for x in range(5):
                inside = 0 <= top + y < 5 and 0 <= left + x < 6
                expected = int(mask[top + y, left + x]) if inside else 255
                assert int(out_mask[y, x]) == expected
                pixel = image[:, top + y, left + x] if inside else torch.zeros(3)
                assert torch.equal(out_image[:, y, x], pixel)
    flipped_image, flipped_mask = RandomHorizontalFlip(1.0)(image, mask)
    assert torch.equal(flipped_mask, mask.flip(-1)) and torch.equal(flipped_image, image.flip(-1))
    _, crop_mask = RandomCrop(8)(image, mask)
    assert crop_mask.shape == (8, 8) and (crop_mask[5:] == 255).all() and (crop_mask[:, 6:] == 255).all()
    _, scaled_mask = RandomScale(2.0, 2.0)(image, mask)
    assert scaled_mask.shape == (10, 12) and torch.equal(scaled_mask[::2, ::2], mask)
    images, masks = collate_segmentation(
        [(image, mask), (torch.rand(3, 2, 8), torch.zeros(2, 8, dtype=torch.long))]
    )
    assert images.shape == (2, 3, 5, 8) and masks.shape == (2, 5, 8)
    assert (masks[0, :, 6:] == 255).all() and (masks[1, 2:] == 255).all() and (images[1, :, 2:] == 0).all()
    with pytest.raises(ValueError, match="differ in size"):
        crop_pair(image, mask[:4], 0, 0, 2, 2)
    with pytest.raises(TypeError, match="integer"):
        RandomCrop(4)(image, mask.float())


def test_docstring_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import doctest
    import importlib

    monkeypatch.chdir(tmp_path)  # the examples write their files (mask.png, shapes-voc/) here
    for name in ("masks", "shapes", "coco", "transforms"):
        result = doctest.testmod(importlib.import_module(f"visionkit.data.segmentation.{name}"))
        assert result.attempted > 0 and result.failed == 0, name
