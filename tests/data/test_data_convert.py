"""Format converters and ``visionkit data``: round trips are lossless to each format's stated precision.

Precision (see visionkit.data.datasets.convert): COCO JSON keeps float64 boxes exactly (x + w re-adds to
within 1 ulp); VOC writes 6 decimals (5e-7 px) and integers exactly; YOLO writes normalized 6-decimal
values (within 5e-7 × side per value, so ≤ 1e-6 × side per corner).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from visionkit.cli import main
from visionkit.data.datasets import AnnotationSet, convert_dataset, make_record, read_annotations
from visionkit.data.datasets.labelmap import LabelMap
from visionkit.data.shapes import ShapesConfig, ShapesDataset, export_shapes

COCO128 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco128"
COCO128_JSON = COCO128 / "annotations" / "instances_train2017_first128.json"
needs_coco128 = pytest.mark.skipif(not COCO128_JSON.is_file(), reason="../shared/data/coco128 not present")


def _assert_same(
    a: AnnotationSet, b: AnnotationSet, atol_per_side: float, *, crowd_kept: bool = True
) -> None:
    assert a.label_map.names == b.label_map.names
    assert len(a.records) == len(b.records)
    by_id = {record.image_id: record for record in b.records}  # VOC/YOLO folders list files by name
    for left in a.records:
        right = by_id[left.image_id]
        assert (left.image_id, left.width, left.height) == (right.image_id, right.width, right.height)
        keep = torch.ones_like(left.labels, dtype=torch.bool) if crowd_kept else left.iscrowd == 0
        assert torch.equal(left.labels[keep], right.labels)
        tolerance = atol_per_side * max(left.width, left.height) + 1e-9
        assert torch.allclose(left.boxes[keep], right.boxes, rtol=0, atol=tolerance), left.file_name


@pytest.fixture(scope="module")
def shapes_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    config = ShapesConfig(negative_fraction=0.2, max_objects=5)
    return export_shapes(ShapesDataset(12, seed=4, config=config), folder, ("coco",))["coco"]


@pytest.mark.parametrize("middle", ["voc", "yolo", "coco"])
def test_round_trip_through_each_format_is_lossless(shapes_coco: Path, tmp_path: Path, middle: str) -> None:
    original = read_annotations(shapes_coco, "coco")
    convert_dataset(shapes_coco, "coco", middle, tmp_path / "mid")
    source = tmp_path / "mid" / "annotations.json" if middle == "coco" else tmp_path / "mid"
    convert_dataset(source, middle, "coco", tmp_path / "back")
    back = read_annotations(tmp_path / "back" / "annotations.json", "coco")
    # shapes boxes are integer pixels: exact in COCO and VOC; YOLO's normalized 6 decimals are not exact
    _assert_same(original, back, 1e-6 if middle == "yolo" else 0.0)
    assert back.label_map == original.label_map  # category ids restored from label_map.json
    assert sorted(p.name for p in (tmp_path / "back" / "images").iterdir()) == [
        r.file_name for r in original.records
    ]


def test_fractional_boxes_round_trip_within_the_documented_precision(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    records = []
    for index in range(20):
        corners = torch.rand(4, 2, generator=generator, dtype=torch.float64) * torch.tensor([640.0, 480.0])
        boxes = torch.cat((corners[:2].amin(0, keepdim=True), corners[:2].amax(0, keepdim=True)), 1)
        boxes = torch.cat((boxes, torch.cat((corners[2:].amin(0), corners[2:].amax(0)))[None]))
        records.append(
            make_record(f"{index}.jpg", index, 640, 480, boxes, [index % 3, 1], difficult=[0, index % 2])
        )
    annotations = AnnotationSet(records, LabelMap((5, 9, 11), ("a", "b", "c")), tmp_path)
    from visionkit.data.datasets import write_annotations

    for fmt, per_side in (("coco", 1e-12), ("voc", 5e-7 / 480), ("yolo", 1e-6)):
        write_annotations(annotations, tmp_path / fmt, fmt)
        source = tmp_path / fmt / "annotations.json" if fmt == "coco" else tmp_path / fmt
        if fmt == "yolo":  # YOLO reads image sizes from the images: make blank ones
            from PIL import Image

            (tmp_path / fmt / "images").mkdir()
            for record in records:
                Image.new("RGB", (640, 480)).save(tmp_path / fmt / "images" / record.file_name)
        back = read_annotations(source, fmt)
        _assert_same(annotations, back, per_side)
        if fmt != "yolo":  # YOLO has no difficult flag
            assert all(
                torch.equal(a.difficult, b.difficult) for a, b in zip(records, back.records, strict=True)
            )


@needs_coco128
def test_coco128_coco_to_yolo_matches_the_shipped_yolo_labels(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="left out 10 crowd regions"):
        convert_dataset(COCO128_JSON, "coco", "yolo", tmp_path, images=COCO128 / "images" / "train2017",
                        images_mode="symlink")  # fmt: skip
    ours = read_annotations(tmp_path, "yolo")
    shipped = read_annotations(COCO128 / "images" / "train2017", "yolo", classes=COCO128 / "classes.txt")
    assert ours.num_objects == shipped.num_objects == 929
    for left, right in zip(ours.records, shipped.records, strict=True):
        assert torch.equal(left.labels, right.labels)
        # both round COCO's floats to 6 normalized decimals; they may differ by one unit in the last place
        assert torch.allclose(left.boxes, right.boxes, rtol=0, atol=2e-6 * max(left.width, left.height))


def test_cli_convert_and_shapes(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["data", "shapes", "--out", str(tmp_path / "s"), "--num-images", "4",
                                  "--format", "coco", "--format", "voc"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "coco:" in result.output and "voc:" in result.output
    result = runner.invoke(main, ["data", "convert", str(tmp_path / "s" / "voc"), "--from", "voc", "--to",
                                  "yolo", "--out", str(tmp_path / "y")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote 4 images" in result.output
    assert (tmp_path / "y" / "classes.txt").read_text().split() == ["circle", "square", "triangle"]
    assert json.loads((tmp_path / "y" / "label_map.json").read_text())["labels"][2]["name"] == "triangle"
    result = runner.invoke(main, ["data", "info", str(tmp_path / "y"), "--format", "yolo"])
    assert result.exit_code == 0 and "4 images" in result.output


def test_cli_reports_bad_data_as_a_clean_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [], "annotations": [{"id": 1, "image_id": 3}], "categories": []}')
    result = CliRunner().invoke(main, ["data", "convert", str(bad), "--from", "coco", "--to", "voc",
                                       "--out", str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 1
    assert "unknown image ids [3]" in result.output and "Traceback" not in result.output
