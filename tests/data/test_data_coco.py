"""COCO JSON reader/dataset: coco128 against its YOLO labels, and every bad-input case of CONTRIBUTING.md."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import format_bounds as FB
import numpy as np
import pytest
import torch
from PIL import Image

from visionkit.data.datasets import (
    CocoDetection,
    DatasetError,
    LabelMap,
    YoloDetection,
    read_coco,
    read_yolo,
)

COCO128 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco128"
COCO128_JSON = COCO128 / "annotations" / "instances_train2017_first128.json"
needs_coco128 = pytest.mark.skipif(not COCO128_JSON.is_file(), reason="../shared/data/coco128 not present")


def _write_image(path: Path, width: int = 32, height: int = 24, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def _coco(tmp_path: Path, annotations: list[dict], images: list[dict] | None = None, categories=None) -> Path:
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "width": 32, "height": 24}]
    categories = categories or [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    for image in images:
        if not (tmp_path / image["file_name"]).exists():
            _write_image(tmp_path / image["file_name"], image["width"], image["height"])
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def _ann(ann_id: int, bbox: list[float], category_id: int = 3, image_id: int = 1, **extra) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


@needs_coco128
def test_coco128_loads_with_documented_contract() -> None:
    dataset = CocoDetection(COCO128 / "images" / "train2017", COCO128_JSON)
    assert len(dataset) == 128
    assert dataset.annotations.num_objects == 939
    assert sum(int(r.iscrowd.sum()) for r in dataset.records) == 10
    categories = json.loads(COCO128_JSON.read_text())["categories"]
    assert list(dataset.label_map.category_ids) == sorted(c["id"] for c in categories)
    image, target = dataset[0]
    assert image.dtype == torch.float32 and image.shape == (3, 480, 640)
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
    assert target["labels"].dtype == torch.int64 and target["iscrowd"].dtype == torch.int64
    assert target["area"].dtype == torch.float32 and isinstance(target["image_id"], int)
    # the first image is COCO id 9; its first annotation in the JSON, converted by hand
    first = next(a for a in json.loads(COCO128_JSON.read_text())["annotations"] if a["image_id"] == 9)
    x, y, w, h = first["bbox"]
    label = sorted(c["id"] for c in categories).index(first["category_id"])
    expected = torch.tensor([x, y, x + w, y + h], dtype=torch.float64)  # the reader's own float64 x + w
    excess = (target["boxes"].double() - expected).abs() - FB.float32_rounding(expected)  # float32 target
    assert bool((((excess <= 0).all(1)) & (target["labels"] == label)).any())


def _match(
    boxes_a: torch.Tensor,
    labels_a: torch.Tensor,
    boxes_b: torch.Tensor,
    labels_b: torch.Tensor,
    bound: torch.Tensor,
) -> float:
    """Largest coordinate difference of a one-to-one matching of same-label boxes (greedy on distance),
    after subtracting the allowed ``bound`` (N, 4) of ``boxes_a``: ≤ 0 when every pair is within it."""
    assert boxes_a.shape == boxes_b.shape, (boxes_a.shape, boxes_b.shape)
    if boxes_a.shape[0] == 0:
        return 0.0
    distance = ((boxes_a[:, None, :] - boxes_b[None, :, :]).double().abs() - bound[:, None, :]).amax(dim=2)
    distance[labels_a[:, None] != labels_b[None, :]] = float("inf")
    worst, used = 0.0, set()
    for row in distance.amin(dim=1).argsort().tolist():
        order = [c for c in distance[row].argsort().tolist() if c not in used]
        assert order, "no partner left"
        used.add(order[0])
        worst = max(worst, float(distance[row, order[0]]))
    return worst


@needs_coco128
def test_coco128_coco_json_and_yolo_txt_agree_box_for_box() -> None:
    coco = read_coco(COCO128_JSON, COCO128 / "images" / "train2017")
    yolo = read_yolo(COCO128 / "images" / "train2017", classes=COCO128 / "classes.txt")
    assert yolo.num_objects == 929  # = 939 COCO annotations - 10 crowd regions
    assert coco.label_map.names == yolo.label_map.names
    by_id = {record.image_id: record for record in yolo.records}
    assert set(by_id) == {record.image_id for record in coco.records}
    for record in coco.records:
        other = by_id[record.image_id]
        assert (other.width, other.height) == (record.width, record.height)
        keep = record.iscrowd == 0
        # the shipped labels are within one unit of the 6th decimal of our writer's (checked exactly in
        # test_data_convert), so each value is within 1e-6 + 5e-7 + γ₂·v of the exact one; the COCO side
        # re-adds x + w (tests/data/format_bounds.py)
        boxes = record.boxes[keep]
        bound = _shipped_yolo_bound(boxes, record.width, record.height) + FB.coco_round_trip(boxes)
        worst = _match(boxes, record.labels[keep], other.boxes, other.labels, bound)
        assert worst <= 0, (record.file_name, worst)


@needs_coco128
def test_coco128_dataset_items_agree_between_coco_and_yolo() -> None:
    coco = CocoDetection(COCO128 / "images" / "train2017", COCO128_JSON)
    yolo = YoloDetection(COCO128 / "images" / "train2017", classes=COCO128 / "classes.txt")
    for index in (0, 5, 77):
        coco_image, coco_target = coco[index]
        yolo_image, yolo_target = yolo[index]
        assert coco_target["image_id"] == yolo_target["image_id"]
        assert torch.equal(coco_image, yolo_image)
        crowd = coco_target["iscrowd"].bool()
        boxes = coco_target["boxes"][~crowd].double()
        height, width = coco_image.shape[1:]
        bound = _shipped_yolo_bound(boxes, width, height) + FB.coco_round_trip(boxes)
        bound = bound + 2 * FB.float32_rounding(boxes.abs() + bound)  # both targets are float32
        worst = _match(
            boxes, coco_target["labels"][~crowd], yolo_target["boxes"], yolo_target["labels"], bound
        )
        assert worst <= 0


def _shipped_yolo_bound(boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return FB.yolo_reread_bound(boxes, width, height, value_error=1e-6 + FB.HALF_DECIMAL)


def test_missing_area_and_iscrowd_are_filled_with_one_warning(tmp_path: Path) -> None:
    path = _coco(
        tmp_path, [_ann(1, [1, 2, 3, 4]), _ann(2, [5, 5, 2, 2], area=3.5, iscrowd=0), _ann(3, [0, 0, 1, 1])]
    )
    with pytest.warns(UserWarning) as caught:
        annotations = read_coco(path, tmp_path)
    assert len(caught) == 1
    assert "2 annotations had no 'iscrowd'" in str(caught[0].message)
    assert "2 had no 'area'" in str(caught[0].message)
    record = annotations.records[0]
    assert record.area.tolist() == [12.0, 3.5, 1.0]
    assert record.iscrowd.tolist() == [0, 0, 0]


def test_crowd_regions_are_kept_and_flagged(tmp_path: Path) -> None:
    path = _coco(
        tmp_path, [_ann(1, [1, 2, 3, 4], area=12, iscrowd=1), _ann(2, [5, 5, 2, 2], area=4, iscrowd=0)]
    )
    _, target = CocoDetection(tmp_path, path)[0]
    assert target["iscrowd"].tolist() == [1, 0]
    assert target["boxes"].shape == (2, 4)


@pytest.mark.parametrize(
    ("images", "annotations", "message"),
    [
        (
            [{"id": 4, "file_name": "a.png", "width": 32, "height": 24}] * 2,
            [],
            "duplicate image ids [4]",
        ),
        (None, [_ann(8, [1, 1, 2, 2], area=4, iscrowd=0)] * 2, "duplicate annotation ids [8]"),
        (None, [_ann(1, [1, 1, 2, 2], category_id=99, area=4, iscrowd=0)], "unknown category ids [99]"),
        (None, [_ann(1, [1, 1, 2, 2], image_id=42, area=4, iscrowd=0)], "unknown image ids [42]"),
        (None, [_ann(1, [1, 1, 2], area=4, iscrowd=0)], "annotation id 1: 'bbox' must be [x, y, w, h]"),
        (None, [_ann(1, [1, 1, float("nan"), 2], area=4, iscrowd=0)], "annotation id 1 bbox"),
    ],
)
def test_bad_ids_and_boxes_raise_naming_them(tmp_path: Path, images, annotations, message) -> None:
    path = _coco(tmp_path, annotations, images)
    with pytest.raises(DatasetError) as error:
        read_coco(path, tmp_path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_duplicate_category_ids_raise(tmp_path: Path) -> None:
    path = _coco(tmp_path, [], categories=[{"id": 2, "name": "a"}, {"id": 2, "name": "b"}])
    with pytest.raises(DatasetError, match=r"duplicate category ids \[2\]"):
        read_coco(path, tmp_path)


def test_non_contiguous_category_ids_map_through_a_saved_table(tmp_path: Path) -> None:
    categories = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 44, "name": "bottle"}]
    annotations = [
        _ann(i, [i, i, 2, 2], category_id=c, area=4, iscrowd=0) for i, c in enumerate((90, 1, 44), 1)
    ]
    path = _coco(tmp_path, annotations, categories=categories)
    dataset = CocoDetection(tmp_path, path)
    _, target = dataset[0]
    assert target["labels"].tolist() == [2, 0, 1]  # sorted ids 1, 44, 90 -> labels 0, 1, 2
    saved = dataset.label_map.save(tmp_path / "run" / "label_map.json")
    loaded = LabelMap.load(saved)
    assert loaded == dataset.label_map
    assert [loaded.category_of(label) for label in target["labels"].tolist()] == [90, 1, 44]
    assert loaded.name_of(1) == "bottle"


def test_label_map_rejects_bad_tables(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="duplicate names"):
        LabelMap((1, 2), ("a", "a"))
    with pytest.raises(ValueError, match="unknown category id 5"):
        LabelMap((1, 2), ("a", "b")).label_of(5)
    bad = tmp_path / "bad.json"
    bad.write_text('{"labels": [{"label": 1, "category_id": 1, "name": "a"}]}')
    with pytest.raises(ValueError, match=str(bad)):
        LabelMap.load(bad)


def test_boxes_outside_the_image_are_clipped_with_a_warning_or_rejected(tmp_path: Path) -> None:
    # image 32x24; the first box leaves on the right and bottom, the second lies wholly outside
    path = _coco(
        tmp_path, [_ann(1, [20, 10, 20, 20], area=400, iscrowd=0), _ann(2, [40, 0, 5, 5], area=25, iscrowd=0)]
    )
    with pytest.warns(UserWarning) as caught:
        dataset = CocoDetection(tmp_path, path)
    messages = " ".join(str(w.message) for w in caught)
    assert "clipped 2 boxes" in messages and "dropped 1 boxes" in messages
    _, target = dataset[0]
    assert target["boxes"].tolist() == [[20.0, 10.0, 32.0, 24.0]]
    assert target["area"].tolist() == [12.0 * 14.0]
    with pytest.raises(DatasetError) as error:
        CocoDetection(tmp_path, path, out_of_bounds="raise")
    assert "a.png" in str(error.value) and "[20.0, 10.0, 40.0, 30.0]" in str(error.value)


def test_border_noise_is_clipped_silently(tmp_path: Path) -> None:
    path = _coco(tmp_path, [_ann(1, [0, 0, 32.0000001, 24], area=768, iscrowd=0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, target = CocoDetection(tmp_path, path, out_of_bounds="raise")[0]
    assert target["boxes"].tolist() == [[0.0, 0.0, 32.0, 24.0]]


def test_image_without_objects_is_a_valid_negative(tmp_path: Path) -> None:
    path = _coco(tmp_path, [])
    _, target = CocoDetection(tmp_path, path)[0]
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["iscrowd"].shape == (0,) and target["area"].shape == (0,)


def _three_images(tmp_path: Path) -> Path:
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 32, "height": 24} for i in (1, 2, 3)]
    for image in images:
        _write_image(tmp_path / image["file_name"], seed=image["id"])
    data = (tmp_path / "2.jpg").read_bytes()
    (tmp_path / "2.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    (tmp_path / "3.jpg").write_bytes(b"not an image at all")
    return _coco(tmp_path, [_ann(1, [1, 1, 4, 4], image_id=2, area=16, iscrowd=0)], images)


def test_corrupt_or_truncated_image_raises_naming_path_and_index(tmp_path: Path) -> None:
    dataset = CocoDetection(tmp_path, _three_images(tmp_path))
    assert dataset[0][0].shape == (3, 24, 32)
    with pytest.raises(DatasetError, match=r"(?i)image 1 '.*2\.jpg'.*truncated"):
        dataset[1]
    with pytest.raises(DatasetError, match=r"image 2 '.*3\.jpg'"):
        dataset[2]


def test_corrupt_images_can_be_skipped_and_counted(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="skipped 2 unreadable images"):
        dataset = CocoDetection(tmp_path, _three_images(tmp_path), on_corrupt="skip")
    assert len(dataset) == 1 and dataset[0][1]["image_id"] == 1
    assert sorted(Path(p).name for p in dataset.skipped) == ["2.jpg", "3.jpg"]


def test_image_size_differing_from_the_json_raises(tmp_path: Path) -> None:
    path = _coco(tmp_path, [], [{"id": 1, "file_name": "a.png", "width": 32, "height": 24}])
    _write_image(tmp_path / "a.png", 30, 24)
    with pytest.raises(DatasetError, match=r"a\.png' is 30x24 but its annotation .* says 32x24"):
        CocoDetection(tmp_path, path)[0]


def test_targets_are_fresh_tensors_each_call(tmp_path: Path) -> None:
    dataset = CocoDetection(tmp_path, _coco(tmp_path, [_ann(1, [1, 2, 3, 4], area=12, iscrowd=0)]))
    _, target = dataset[0]
    target["boxes"] += 100
    target["labels"][0] = 1
    _, again = dataset[0]
    assert again["boxes"].tolist() == [[1.0, 2.0, 4.0, 6.0]] and again["labels"].tolist() == [0]
