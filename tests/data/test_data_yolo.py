"""YOLO txt reader/dataset: layout, duplicates, coordinate and class checks, corrupt images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionkit.data.datasets import DatasetError, YoloDetection, read_yolo

CLASSES = ["cat", "dog", "bird"]


def _folder(tmp_path: Path, rows: dict[str, str], sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    images, labels = tmp_path / "images" / "train", tmp_path / "labels" / "train"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for stem, text in rows.items():
        width, height = (sizes or {}).get(stem, (40, 20))
        pixels = np.random.default_rng(len(stem)).integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{stem}.png")
        if text is not None:
            (labels / f"{stem}.txt").write_text(text)
    return images


def test_rows_become_pixel_xyxy_and_labels_dir_is_derived(tmp_path: Path) -> None:
    images = _folder(tmp_path, {"7": "1 0.5 0.5 0.5 0.5\n0 0.25 0.75 0.1 0.2\n"})
    image, target = YoloDetection(images, classes=CLASSES)[0]
    assert image.shape == (3, 20, 40)
    assert target["image_id"] == 7
    # (c ∓ w/2)·side in float64 lands within ~1e-14 px of these integers, and the float32 target rounds
    # to the nearest float32 (half an ulp ≥ 2.4e-7 here): exactly the integers
    assert torch.equal(target["boxes"], torch.tensor([[10.0, 5.0, 30.0, 15.0], [8.0, 13.0, 12.0, 17.0]]))
    assert target["labels"].tolist() == [1, 0]
    assert target["iscrowd"].tolist() == [0, 0] and target["difficult"].tolist() == [0, 0]


def test_missing_or_empty_label_file_is_a_negative(tmp_path: Path) -> None:
    images = _folder(tmp_path, {"a": None, "b": "\n"})
    for index in range(2):
        _, target = YoloDetection(images, classes=CLASSES)[index]
        assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
        assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64


def test_duplicate_rows_are_removed_with_one_warning(tmp_path: Path) -> None:
    images = _folder(
        tmp_path,
        {"a": "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n", "b": "2 .1 .1 .1 .1\n" * 3},
    )
    with pytest.warns(UserWarning, match=r"removed 3 duplicate YOLO rows in 2 files") as caught:
        annotations = read_yolo(images, classes=CLASSES)
    assert len(caught) == 1
    assert [r.num_objects for r in annotations.records] == [2, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "0 0.5 0.5 0.2 0.2\n0 1.2 0.5 0.1 0.1\n",
            r"a\.txt line 2: normalized coordinates must lie in \[0, 1\]",
        ),
        ("0 0.5 -0.01 0.2 0.2\n", r"a\.txt line 1: normalized"),
        ("0 0.5 0.5 0.2\n", r"a\.txt line 1: expected 5 values"),
        ("\n\n3 0.5 0.5 0.2 0.2\n", r"a\.txt line 3: class must be an integer in \[0, 3\)"),
        ("1.5 0.5 0.5 0.2 0.2\n", r"a\.txt line 1: class must be an integer"),
        ("0 0.5 nan 0.2 0.2\n", r"a\.txt line 1: expected a finite number"),
    ],
)
def test_bad_rows_raise_naming_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    images = _folder(tmp_path, {"a": text})
    with pytest.raises(DatasetError, match=message):
        read_yolo(images, classes=CLASSES)


def test_boxes_reaching_past_the_border_are_clipped(tmp_path: Path) -> None:
    images = _folder(tmp_path, {"a": "0 0.95 0.5 0.2 0.4\n"})
    with pytest.warns(UserWarning, match="clipped 1 boxes"):
        dataset = YoloDetection(images, classes=CLASSES)
    assert torch.equal(dataset[0][1]["boxes"], torch.tensor([[34.0, 6.0, 40.0, 14.0]]))  # as above, clipped
    with pytest.raises(DatasetError, match=r"a\.png.*outside the image"):
        YoloDetection(images, classes=CLASSES, out_of_bounds="raise")


def test_classes_found_beside_the_data_or_explicitly_required(tmp_path: Path) -> None:
    images = _folder(tmp_path, {"a": "2 0.5 0.5 0.2 0.2\n"})
    with pytest.raises(DatasetError, match="no class names given"):
        read_yolo(images)
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    assert read_yolo(images).label_map.names == tuple(CLASSES)


def test_corrupt_image_raises_or_is_skipped_and_counted(tmp_path: Path) -> None:
    images = _folder(tmp_path, {"a": "0 0.5 0.5 0.2 0.2\n", "b": "1 0.5 0.5 0.2 0.2\n"})
    (images / "b.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match=r"image 1 '.*b\.png'"):
        read_yolo(images, classes=CLASSES)
    with pytest.warns(UserWarning, match="skipped 1 unreadable images"):
        dataset = YoloDetection(images, classes=CLASSES, on_corrupt="skip")
    assert len(dataset) == 1 and dataset.skipped == [str(images / "b.png")]


def test_images_folder_without_images_part_needs_labels_dir(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    with pytest.raises(DatasetError, match="pass labels_dir"):
        read_yolo(tmp_path / "pics", classes=CLASSES)


def test_folder_without_images_is_named_with_its_subfolders(tmp_path: Path) -> None:
    (tmp_path / "images" / "train2017").mkdir(parents=True)
    (tmp_path / "classes.txt").write_text("a\n")
    with pytest.raises(DatasetError, match=r"images: no images .*\['train2017'\]: pass the one holding"):
        read_yolo(tmp_path / "images", classes=["a"])
