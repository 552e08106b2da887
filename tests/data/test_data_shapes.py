"""The embedded ``shapes`` dataset: determinism, exact boxes, occlusion, imbalance, crowded mode, export."""

from __future__ import annotations

from pathlib import Path

import format_bounds as FB
import numpy as np
import pytest
import torch

from tolerances import assert_numbers_within
from visionkit.data.datasets import CocoDetection, YoloDetection
from visionkit.data.shapes import SHAPE_CLASSES, ShapesConfig, ShapesDataset, export_shapes, render_shapes
from visionkit.ops.boxes import box_iou


def test_same_seed_same_data_other_seed_other_data() -> None:
    first, second = render_shapes(4, seed=1), render_shapes(4, seed=1)
    assert all(np.array_equal(first[key], second[key]) for key in first)
    other = render_shapes(4, seed=2)
    assert not np.array_equal(first["image"], other["image"])
    # an item does not depend on which items were made before it
    dataset = ShapesDataset(10, seed=1)
    late = dataset[7]
    for index in range(7):
        dataset[index]
    assert torch.equal(dataset[7][1]["boxes"], late[1]["boxes"])


def test_target_contract() -> None:
    image, target = ShapesDataset(4, seed=0, with_masks=True)[2]
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32
    count = target["boxes"].shape[0]
    assert 1 <= count <= 4
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["iscrowd"].tolist() == [0] * count and target["difficult"].tolist() == [0] * count
    assert target["masks"].shape == (count, 128, 128) and target["masks"].dtype == torch.bool
    assert target["image_id"] == 2
    assert torch.equal(target["area"], (target["boxes"][:, 2:] - target["boxes"][:, :2]).prod(dim=1))


def test_boxes_are_exact_pixel_extents_and_occlusion_respects_the_limit() -> None:
    config = ShapesConfig(min_objects=3, max_objects=6, max_occlusion=0.4)
    checked_unoccluded = 0
    for index in range(30):
        sample = render_shapes(index, seed=5, config=config)
        image = sample["image"]
        for box, mask in zip(sample["boxes"], sample["masks"], strict=True):
            x1, y1, x2, y2 = box.astype(int)
            assert 0 <= x1 < x2 <= 128 and 0 <= y1 < y2 <= 128
            assert x1 == box[0] and x2 == box[2]  # integer pixel edges
            rows, columns = np.nonzero(mask)
            # the visible pixels lie in the box; the box holds at least 1 - max_occlusion of the shape
            assert columns.min() >= x1 and columns.max() < x2 and rows.min() >= y1 and rows.max() < y2
            if (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1) == (x1, y1, x2, y2):
                checked_unoccluded += 1
            # the pixels just outside the box are not this object's colour-on-every-side: the box is tight
            assert image[y1:y2, x1:x2].size > 0
        # masks of different objects never overlap (each pixel shows one object)
        if len(sample["masks"]):
            assert int(sample["masks"].sum(axis=0).max()) <= 1
    assert checked_unoccluded > 30


def test_visible_fraction_never_below_the_occlusion_limit() -> None:
    config = ShapesConfig(min_objects=5, max_objects=8, max_occlusion=0.3)
    for index in range(20):
        sample = render_shapes(index, seed=9, config=config)
        for box, mask, label in zip(sample["boxes"], sample["masks"], sample["labels"], strict=True):
            # full area of the shape from its box: square = box, circle ≈ π/4 box, triangle ≈ 1/2 box
            box_area = (box[2] - box[0]) * (box[3] - box[1])
            ratio = {0: np.pi / 4, 1: 1.0, 2: 0.5}[int(label)]
            assert mask.sum() >= (1 - 0.3) * ratio * box_area * 0.85  # 15% slack for the raster edge


def test_class_weights_knob_controls_imbalance() -> None:
    only_circles = ShapesDataset(20, seed=0, config=ShapesConfig(class_weights=(1.0, 0.0, 0.0)))
    assert {int(label) for i in range(20) for label in only_circles[i][1]["labels"]} == {0}
    skewed = ShapesDataset(150, seed=0, config=ShapesConfig(class_weights=(8.0, 1.0, 1.0)))
    counts = np.bincount(
        np.concatenate([render_shapes(i, 0, skewed.config)["labels"] for i in range(150)]), minlength=3
    )
    assert counts[0] > 3 * counts[1] and counts[0] > 3 * counts[2] and counts[1] > 0 and counts[2] > 0


def test_crowded_mode_has_many_overlapping_objects_of_one_class() -> None:
    dataset = ShapesDataset(20, seed=0, config=ShapesConfig.crowded_preset())
    heavy_pairs = merged_pairs = 0
    for index in range(20):
        _, target = dataset[index]
        assert len(set(target["labels"].tolist())) == 1
        assert target["boxes"].shape[0] >= 4
        iou = box_iou(target["boxes"], target["boxes"]).triu(diagonal=1)
        heavy_pairs += int((iou > 0.4).sum())
        merged_pairs += int((iou > 0.5).sum())
    # plenty of same-class pairs whose (noisy) detections hard NMS at 0.5 would merge (a behaviour check on
    # fixed data: 37 and 17 pairs; integer boxes, so each float32 IoU is one rounded division, the same on
    # every kernel)
    assert heavy_pairs >= 20 and merged_pairs >= 5


def test_negatives_and_bad_config() -> None:
    _, target = ShapesDataset(3, config=ShapesConfig(negative_fraction=1.0))[0]
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    with pytest.raises(ValueError, match="class_weights"):
        ShapesConfig(class_weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="min_size"):
        ShapesConfig(min_size=64, max_size=32)
    with pytest.raises(IndexError):
        ShapesDataset(3)[3]


def test_export_to_coco_and_yolo_reloads_the_same_samples(tmp_path: Path) -> None:
    shapes = ShapesDataset(5, seed=11)
    written = export_shapes(shapes, tmp_path, ("coco", "yolo"))
    coco = CocoDetection(tmp_path / "coco" / "images", written["coco"])
    yolo = YoloDetection(written["yolo"] / "images")
    assert coco.label_map.names == yolo.label_map.names == SHAPE_CLASSES
    for index in range(5):
        image, expected = shapes[index]
        for dataset in (coco, yolo):
            loaded_image, target = dataset[index]
            assert torch.equal(loaded_image, image)
            assert target["image_id"] == index
            if dataset is coco:  # integer boxes: exact in COCO JSON
                assert torch.equal(target["boxes"], expected["boxes"])
                continue
            # YOLO's normalized 6 decimals (tests/data/format_bounds.py), then the float32 target
            height, width = image.shape[1:]
            bound = FB.yolo_round_trip(expected["boxes"], width, height)
            bound = bound + FB.float32_rounding(expected["boxes"].double().abs() + bound)
            assert_numbers_within(target["boxes"], expected["boxes"], bound)
            assert torch.equal(target["labels"], expected["labels"])
