"""Format converters and ``visionkit data``: round trips are lossless to each format's stated precision.

Precision (see visionkit.data.datasets.convert): COCO JSON keeps float64 boxes exactly (x + w re-adds to
within 1 ulp); VOC writes 6 decimals (5e-7 px) and integers exactly; YOLO writes normalized 6-decimal
values (within 5e-7 × side per value, so ≤ 1e-6 × side per corner). Each comparison uses the per-coordinate
bound derived from the writer's and reader's operations in tests/data/format_bounds.py.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import format_bounds as FB
import pytest
import torch
from click.testing import CliRunner

from tolerances import assert_numbers_within
from visionkit.cli import main
from visionkit.data.datasets import AnnotationSet, convert_dataset, make_record, read_annotations
from visionkit.data.datasets.labelmap import LabelMap
from visionkit.data.shapes import ShapesConfig, ShapesDataset, export_shapes

COCO128 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco128"
COCO128_JSON = COCO128 / "annotations" / "instances_train2017_first128.json"
needs_coco128 = pytest.mark.skipif(not COCO128_JSON.is_file(), reason="../shared/data/coco128 not present")


def _round_trip_bound(fmt: str, boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    if fmt == "coco":
        return FB.coco_round_trip(boxes)
    return FB.voc_round_trip(boxes) if fmt == "voc" else FB.yolo_round_trip(boxes, width, height)


def _assert_same(a: AnnotationSet, b: AnnotationSet, formats: tuple[str, ...]) -> None:
    """``b`` is ``a`` written and read back through ``formats`` in turn: each step's bound, evaluated at the
    original magnitudes widened by the steps before it."""
    assert a.label_map.names == b.label_map.names
    assert len(a.records) == len(b.records)
    by_id = {record.image_id: record for record in b.records}  # VOC/YOLO folders list files by name
    for left in a.records:
        right = by_id[left.image_id]
        assert (left.image_id, left.width, left.height) == (right.image_id, right.width, right.height)
        keep = torch.ones_like(left.labels, dtype=torch.bool) if "yolo" not in formats else left.iscrowd == 0
        assert torch.equal(left.labels[keep], right.labels)
        boxes, bound = left.boxes[keep], torch.zeros_like(left.boxes[keep])
        for fmt in formats:
            widened = boxes.abs() + bound
            bound = bound + torch.maximum(
                _round_trip_bound(fmt, boxes, left.width, left.height),
                _round_trip_bound(fmt, widened, left.width, left.height),
            )
        assert_numbers_within(right.boxes, boxes, bound, left.file_name)


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
    _assert_same(original, back, (middle, "coco"))
    if middle != "yolo":
        assert all(torch.equal(a.boxes, b.boxes) for a, b in zip(original.records, back.records, strict=True))
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

    for fmt in ("coco", "voc", "yolo"):
        write_annotations(annotations, tmp_path / fmt, fmt)
        source = tmp_path / fmt / "annotations.json" if fmt == "coco" else tmp_path / fmt
        if fmt == "yolo":  # YOLO reads image sizes from the images: make blank ones
            from PIL import Image

            (tmp_path / fmt / "images").mkdir()
            for record in records:
                Image.new("RGB", (640, 480)).save(tmp_path / fmt / "images" / record.file_name)
        back = read_annotations(source, fmt)
        _assert_same(annotations, back, (fmt,))
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
    # both round COCO's floats to 6 normalized decimals; where the exact value is (nearly) a midpoint they
    # may differ by one unit in the last place, never more: compared exactly as decimals
    for ours_file in sorted((tmp_path / "labels").glob("*.txt")):
        shipped_file = COCO128 / "labels" / "train2017" / ours_file.name
        ours_rows, shipped_rows = _decimal_rows(ours_file), _decimal_rows(shipped_file)
        assert [r[0] for r in ours_rows] == [r[0] for r in shipped_rows], ours_file.name
        for a, b in zip(ours_rows, shipped_rows, strict=True):
            assert max(abs(x - y) for x, y in zip(a[1:], b[1:], strict=True)) <= Fraction(1, 10**6), a


def _decimal_rows(path: Path) -> list[list[Fraction]]:
    """A YOLO label file's rows as exact decimals (class, cx, cy, w, h); no file: no rows."""
    if not path.is_file():
        return []
    return [[Fraction(v) for v in line.split()] for line in path.read_text().splitlines() if line.strip()]


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
