"""Pascal VOC XML reader/dataset: generated folders, the 1-based pixel convention, validation errors."""

from __future__ import annotations

from pathlib import Path

import format_bounds as FB
import numpy as np
import pytest
import torch
from PIL import Image

from tolerances import assert_numbers_within
from visionkit.data.datasets import DatasetError, VocDetection, make_record, read_voc, write_voc
from visionkit.data.datasets.labelmap import LabelMap
from visionkit.data.datasets.records import AnnotationSet
from visionkit.data.shapes import ShapesDataset, export_shapes

CLASSES = ("cat", "dog")


def _xml(
    objects: str, size: str = "<size><width>40</width><height>30</height><depth>3</depth></size>"
) -> str:
    return f"<annotation><filename>img.png</filename>{size}{objects}</annotation>"


def _object(name: str, box: tuple, difficult: str | None = "0") -> str:
    flag = f"<difficult>{difficult}</difficult>" if difficult is not None else ""
    coordinates = "".join(
        f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True)
    )
    return f"<object><name>{name}</name>{flag}<bndbox>{coordinates}</bndbox></object>"


def _voc_folder(tmp_path: Path, xml: str, stem: str = "img") -> Path:
    (tmp_path / "Annotations").mkdir(parents=True, exist_ok=True)
    (tmp_path / "JPEGImages").mkdir(exist_ok=True)
    (tmp_path / "Annotations" / f"{stem}.xml").write_text(xml)
    image = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "JPEGImages" / "img.png")
    return tmp_path


def test_one_based_pixel_indices_become_continuous_xyxy(tmp_path: Path) -> None:
    root = _voc_folder(tmp_path, _xml(_object("dog", (1, 1, 10, 5)) + _object("cat", (3, 4, 40, 30), "1")))
    image, target = VocDetection(root, classes=CLASSES)[0]
    assert image.shape == (3, 30, 40)
    # pixels 1..10 (1-based, inclusive) are columns 0..9, i.e. [0, 10) continuous
    assert target["boxes"].tolist() == [[0.0, 0.0, 10.0, 5.0], [2.0, 3.0, 40.0, 30.0]]
    assert target["labels"].tolist() == [1, 0]
    assert target["difficult"].tolist() == [0, 1]
    assert target["area"].tolist() == [50.0, 38.0 * 27.0]


def test_missing_difficult_is_zero(tmp_path: Path) -> None:
    root = _voc_folder(tmp_path, _xml(_object("dog", (1, 1, 10, 5), difficult=None)))
    assert VocDetection(root, classes=CLASSES)[0][1]["difficult"].tolist() == [0]


def test_missing_size_raises_naming_the_file(tmp_path: Path) -> None:
    root = _voc_folder(tmp_path, _xml(_object("dog", (1, 1, 10, 5)), size=""))
    with pytest.raises(DatasetError, match=r"img\.xml: missing <size>"):
        read_voc(root, classes=CLASSES)


def test_unknown_class_raises_naming_the_file_and_class(tmp_path: Path) -> None:
    root = _voc_folder(tmp_path, _xml(_object("horse", (1, 1, 10, 5))))
    with pytest.raises(DatasetError, match=r"img\.xml: object 0 has unknown class 'horse'"):
        read_voc(root, classes=CLASSES)


def test_missing_coordinate_or_malformed_xml_raise_naming_the_file(tmp_path: Path) -> None:
    root = _voc_folder(tmp_path, _xml("<object><name>cat</name><bndbox><xmin>1</xmin></bndbox></object>"))
    with pytest.raises(DatasetError, match=r"img\.xml: object 0 has no <ymin>"):
        read_voc(root, classes=CLASSES)
    (root / "Annotations" / "img.xml").write_text("<annotation><size>")
    with pytest.raises(DatasetError, match=r"cannot read VOC annotation .*img\.xml"):
        read_voc(root, classes=CLASSES)


def test_image_set_lists_ids_and_missing_files_are_reported(tmp_path: Path) -> None:
    root = _voc_folder(tmp_path, _xml(""))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "val.txt").write_text("img\n")
    (root / "ImageSets" / "Main" / "bad.txt").write_text("img\nnope\n")
    annotations = read_voc(root, image_set="val", classes=CLASSES)
    assert len(annotations.records) == 1 and annotations.records[0].num_objects == 0
    with pytest.raises(DatasetError, match=r"nope\.xml"):
        read_voc(root, image_set="bad", classes=CLASSES)


def test_image_without_objects_is_a_valid_negative(tmp_path: Path) -> None:
    _, target = VocDetection(_voc_folder(tmp_path, _xml("")), classes=CLASSES)[0]
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64


def test_writer_and_reader_are_inverse_including_fractional_and_difficult(tmp_path: Path) -> None:
    label_map = LabelMap.from_names(CLASSES)
    boxes = [[0.0, 0.0, 10.0, 5.0], [2.25, 3.5, 39.125, 29.999999], [1.0, 2.0, 3.0, 4.0]]
    record = make_record("img.png", 0, 40, 30, boxes, [1, 0, 0], difficult=[0, 1, 0])
    write_voc(AnnotationSet([record], label_map), tmp_path, image_set="all")
    back = read_voc(tmp_path, image_set="all", classes=label_map).records[0]
    # 6 decimals (5e-7) and the +1 / −1 of VOC's 1-based pixels (tests/data/format_bounds.py)
    assert_numbers_within(back.boxes, record.boxes, FB.voc_round_trip(record.boxes))
    assert torch.equal(back.labels, record.labels) and torch.equal(back.difficult, record.difficult)
    text = (tmp_path / "Annotations" / "img.xml").read_text()
    assert "<xmin>1</xmin>" in text and "<xmax>10</xmax>" in text  # integer pixels stay integers


def test_generated_shapes_voc_loads_and_equals_the_dataset(tmp_path: Path) -> None:
    shapes = ShapesDataset(6, seed=3)
    written = export_shapes(shapes, tmp_path, ("voc",))
    dataset = VocDetection(written["voc"], image_set="all", classes=shapes.label_map.names)
    assert len(dataset) == 6
    for index in range(6):
        image, target = dataset[index]
        expected_image, expected = shapes[index]
        assert target["image_id"] == expected["image_id"] == index
        assert torch.equal(image, expected_image)  # PNG is lossless
        assert torch.equal(target["boxes"], expected["boxes"])
        assert torch.equal(target["labels"], expected["labels"])
