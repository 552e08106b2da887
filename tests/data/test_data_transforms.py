"""Box-aware transforms: boxes follow the pixels (checked on painted rectangles), callers' data untouched."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from visionkit.data.transforms import (
    Compose,
    Normalize,
    PhotometricJitter,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    ToTensor,
    collate_detection,
)


def _painted(height: int = 40, width: int = 60) -> tuple[torch.Tensor, dict]:
    """An image whose objects are painted rectangles, so a box can be re-derived from the pixels."""
    boxes = torch.tensor([[5.0, 4.0, 25.0, 20.0], [30.0, 10.0, 58.0, 38.0], [0.0, 30.0, 8.0, 40.0]])
    image = torch.zeros(3, height, width)
    for channel, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        image[channel, y1:y2, x1:x2] = 1.0
    target = {
        "boxes": boxes,
        "labels": torch.tensor([0, 1, 2]),
        "iscrowd": torch.zeros(3, dtype=torch.int64),
        "difficult": torch.tensor([0, 1, 0]),
        "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
        "image_id": 5,
    }
    return image, target


def _box_of(channel: torch.Tensor) -> list[float]:
    rows, columns = torch.nonzero(channel > 0.5, as_tuple=True)
    return [float(columns.min()), float(rows.min()), float(columns.max() + 1), float(rows.max() + 1)]


ALL = [
    Resize(30, 50),
    RandomHorizontalFlip(1.0),
    RandomCrop((0.5, 0.9), min_visibility=0.3),
    PhotometricJitter(0.3, 0.3, 0.3),
    Normalize(),
    Compose([RandomHorizontalFlip(1.0), Resize(20)]),
]


@pytest.mark.parametrize("transform", ALL, ids=repr)
def test_transforms_never_modify_the_callers_image_or_target(transform) -> None:
    image, target = _painted()
    image_before, target_before = image.clone(), copy.deepcopy(target)
    out_image, out_target = transform(image, target)
    out_image += 1
    for value in out_target.values():
        if isinstance(value, torch.Tensor) and value.numel() and value.dtype != torch.bool:
            value.add_(1)
    assert torch.equal(image, image_before)
    assert target.keys() == target_before.keys()
    for key, value in target_before.items():
        assert torch.equal(target[key], value) if isinstance(value, torch.Tensor) else target[key] == value


@pytest.mark.parametrize("transform", ALL, ids=repr)
def test_uint8_image_is_a_type_error(transform) -> None:
    image, target = _painted()
    with pytest.raises(TypeError, match="float tensor"):
        transform((image * 255).to(torch.uint8), target)


@pytest.mark.parametrize("transform", ALL, ids=repr)
def test_negative_sample_passes_through_with_empty_shapes(transform) -> None:
    image = torch.rand(3, 40, 60)
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "area": torch.zeros(0)}
    _, out = transform(image, target)
    assert out["boxes"].shape == (0, 4) and out["boxes"].dtype == torch.float32
    assert out["labels"].shape == (0,) and out["labels"].dtype == torch.int64


def test_horizontal_flip_moves_boxes_with_the_pixels_and_is_an_involution() -> None:
    image, target = _painted()
    flipped, out = RandomHorizontalFlip(1.0)(image, target)
    for channel in range(3):
        assert _box_of(flipped[channel]) == out["boxes"][channel].tolist()
    again, back = RandomHorizontalFlip(1.0)(flipped, out)
    assert torch.equal(again, image) and torch.equal(back["boxes"], target["boxes"])
    unchanged, same = RandomHorizontalFlip(0.0)(image, target)
    assert torch.equal(unchanged, image) and torch.equal(same["boxes"], target["boxes"])


def test_resize_keeps_aspect_respects_max_size_and_scales_boxes() -> None:
    image, target = _painted(40, 60)
    resized, out = Resize(80)(image, target)
    assert resized.shape == (3, 80, 120)
    assert torch.equal(out["boxes"], target["boxes"] * 2) and torch.equal(out["area"], target["area"] * 4)
    # the painted rectangles, re-measured, sit exactly where the boxes say: bilinear ×2 maps output pixel
    # i to input x = i/2 − 1/4, so across an edge at k the values are 0, 1/4, 3/4, 1 (never near the 0.5
    # threshold) and the first pixel above it is i = 2k
    for channel in range(3):
        assert _box_of(resized[channel]) == out["boxes"][channel].tolist()
    capped, _ = Resize(80, 100)(image, target)
    assert capped.shape == (3, 67, 100)  # the longer side hits max_size first
    assert Resize(10).output_size(1, 1000) == (10, 10000)


def test_random_crop_cuts_boxes_and_drops_mostly_hidden_objects() -> None:
    image, target = _painted()
    crop = RandomCrop(min_visibility=0.5)
    cropped, out = crop.crop(image, target, (10, 8, 40, 40))
    assert cropped.shape == (3, 32, 30)
    assert torch.equal(cropped, image[:, 8:40, 10:40])
    # box 0: [5,4,25,20] -> visible [10,8,25,20]: 180/320 >= 0.5 kept; box 1: [30,10,58,38] -> [30,10,40,38]:
    # 280/784 < 0.5 dropped; box 2: [0,30,8,40] lies left of the window: dropped
    assert out["boxes"].tolist() == [[0.0, 0.0, 15.0, 12.0]]
    assert (
        out["labels"].tolist() == [0] and out["difficult"].tolist() == [0] and out["iscrowd"].tolist() == [0]
    )
    assert out["area"].tolist() == [180.0]
    assert _box_of(cropped[0]) == out["boxes"][0].tolist()
    _, loose = RandomCrop(min_visibility=0.0).crop(image, target, (10, 8, 40, 40))
    assert loose["labels"].tolist() == [0, 1]


def test_random_crop_reference_on_random_windows() -> None:
    generator = torch.Generator().manual_seed(0)
    crop = RandomCrop((0.3, 1.0), min_visibility=0.25, generator=generator)
    image, target = _painted()
    for _ in range(50):
        cropped, out = crop(image, target)
        height, width = cropped.shape[1:]
        assert bool((out["boxes"][:, 0::2] <= width).all()) and bool((out["boxes"][:, 1::2] <= height).all())
        assert out["boxes"].shape[0] >= 1  # a window keeping nothing is redrawn
        for box, label in zip(out["boxes"], out["labels"], strict=True):
            visible = _box_of(cropped[int(label)])  # slow reference: the painted pixels that survived
            assert visible == box.tolist()
            original = target["boxes"][int(label)]
            fraction = (
                (box[2] - box[0])
                * (box[3] - box[1])
                / ((original[2] - original[0]) * (original[3] - original[1]))
            )
            assert float(fraction) >= 0.25


def test_photometric_jitter_keeps_range_and_boxes_and_is_seeded() -> None:
    image, target = _painted()
    image = image * 0.5 + 0.25
    first, out = PhotometricJitter(generator=torch.Generator().manual_seed(3))(image, target)
    second, _ = PhotometricJitter(generator=torch.Generator().manual_seed(3))(image, target)
    assert torch.equal(first, second) and not torch.equal(first, image)
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert torch.equal(out["boxes"], target["boxes"])
    with pytest.raises(ValueError, match="brightness"):
        PhotometricJitter(brightness=1.5)


def test_to_tensor_and_normalize() -> None:
    array = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    from_pil, _ = ToTensor()(Image.fromarray(array), {})
    from_uint8, _ = ToTensor()(torch.from_numpy(array).permute(2, 0, 1), {})
    assert from_pil.dtype == torch.float32 and from_pil.shape == (3, 4, 5)
    assert torch.equal(from_pil, from_uint8)
    assert torch.equal(from_pil, torch.from_numpy(array).permute(2, 0, 1).float() / 255)  # the same division
    normalized, _ = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))(from_pil, {})
    assert torch.equal(normalized, (from_pil - 0.5) / 0.25)  # the same float32 subtraction; ÷ 0.25 is exact
    with pytest.raises(ValueError, match="channels"):
        Normalize()(torch.rand(1, 4, 4), {})
    with pytest.raises(TypeError, match="uint8"):
        ToTensor()(np.zeros((2, 2, 3), dtype=np.float32), {})


def test_collate_keeps_variable_sizes_as_lists() -> None:
    batch = [_painted(40, 60), _painted(20, 30)]
    images, targets = collate_detection(batch)
    assert [tuple(i.shape) for i in images] == [(3, 40, 60), (3, 20, 30)]
    assert targets[1]["image_id"] == 5 and len(targets) == 2
    loader = torch.utils.data.DataLoader(batch, batch_size=2, collate_fn=collate_detection)
    images, targets = next(iter(loader))
    assert len(images) == 2 and targets[0]["boxes"].shape == (3, 4)
