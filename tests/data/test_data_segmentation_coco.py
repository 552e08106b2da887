"""COCO to semantic masks: polygons against a per-pixel loop and pycocotools, RLE (list and compressed
string) equal to pycocotools bit for bit, overlaps and crowds void, and coco128 end to end (skipped without
../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from visionkit.data.datasets import LabelMap
from visionkit.data.segmentation import CocoSegmentation, decode_rle, rasterize_polygons, semantic_mask
from visionkit.errors import DatasetError

COCO128 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco128"
COCO128_JSON = COCO128 / "annotations" / "instances_train2017_first128.json"
needs_coco128 = pytest.mark.skipif(not COCO128_JSON.is_file(), reason="../shared/data/coco128 not present")


def _inside_loop(polygon: list[float], x: float, y: float) -> bool:
    """Even–odd rule, one ray, edge by edge (W. R. Franklin's pnpoly)."""
    points = list(zip(polygon[::2], polygon[1::2], strict=True))
    inside = False
    for (x1, y1), (x2, y2) in zip(points, points[1:] + points[:1], strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


@pytest.mark.parametrize("seed", range(8))
def test_polygons_against_a_per_pixel_loop(seed: int) -> None:
    """Random concave and self-intersecting polygons, vertices on and off pixel centres, some outside."""
    rng = np.random.default_rng(seed)
    height, width = 13, 17
    polygons = []
    for _ in range(2):
        count = int(rng.integers(3, 9))
        points = rng.uniform(-3, 20, (count, 2))
        if seed % 2:
            points = np.round(points * 2) / 2  # on pixel centres and edges: the ties of the rule
        polygons.append(points.ravel().tolist())
    ours = rasterize_polygons(polygons, height, width)
    for y in range(height):
        for x in range(width):
            expected = any(_inside_loop(p, x + 0.5, y + 0.5) for p in polygons)
            assert ours[y, x] == expected, (y, x)
    assert not rasterize_polygons([[1, 1, 5, 1]], height, width).any()  # two points: no area


def _random_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    blobs = rng.random((height // 4 + 1, width // 4 + 1)) > 0.5
    return np.kron(blobs, np.ones((4, 4), bool))[:height, :width] ^ (rng.random((height, width)) > 0.95)


@pytest.mark.parametrize("seed", range(5))
def test_rle_decodes_equal_to_pycocotools(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    mask = _random_mask(rng, height, width)
    if seed == 0:
        mask[:] = True  # one run of 0 zeros, then everything
    compressed = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    expected = coco_mask.decode(compressed).astype(bool)
    assert np.array_equal(decode_rle(compressed), expected)  # counts as bytes
    assert np.array_equal(decode_rle({**compressed, "counts": compressed["counts"].decode()}), expected)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, mask.T.ravel().astype(int), -1])))
    counts = ([0] if mask.T.ravel()[:1].any() else []) + runs.tolist()
    assert np.array_equal(decode_rle({"size": [height, width], "counts": counts}), expected)
    with pytest.raises(ValueError, match="sum"):
        decode_rle({"size": [height, width + 1], "counts": counts})


def test_overlaps_of_two_classes_and_crowds_are_void() -> None:
    label_map = LabelMap((0, 3, 7), ("background", "cat", "dog"))
    square = {"id": 1, "category_id": 3, "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]}
    shifted = {"id": 2, "category_id": 7, "segmentation": [[2, 0, 6, 0, 6, 4, 2, 4]]}
    same_class = {"id": 3, "category_id": 3, "segmentation": [[0, 2, 3, 2, 3, 6, 0, 6]]}
    rle = coco_mask.encode(np.asfortranarray(np.pad(np.ones((2, 2), np.uint8), ((4, 0), (6, 0)))))
    crowd = {
        "id": 4,
        "category_id": 7,
        "iscrowd": 1,
        "segmentation": {**rle, "counts": rle["counts"].decode()},
    }
    mask = semantic_mask([square, shifted, same_class, crowd], label_map, 6, 8, "test.json")
    expected = np.zeros((6, 8), np.int64)
    expected[:4, :4] = 1
    expected[:4, 4:6] = 2
    expected[:4, 2:4] = 255  # cat and dog overlap
    expected[4:, :3] = 1  # another cat over the first one: still cat
    expected[4:, 6:] = 255  # crowd region
    assert torch.equal(mask, torch.from_numpy(expected))
    with pytest.raises(DatasetError, match=r"test\.json: annotation id 9: RLE size \[3, 3\]"):
        semantic_mask(
            [{"id": 9, "category_id": 3, "segmentation": {"size": [3, 3], "counts": [9]}}],
            label_map,
            6,
            8,
            "test.json",
        )
    with pytest.raises(DatasetError, match="annotation id 5 has no 'segmentation'"):
        semantic_mask([{"id": 5, "category_id": 3}], label_map, 6, 8, "test.json")


def _distance_to_boundary(points: np.ndarray, polygon: list[float]) -> np.ndarray:
    vertices = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    start, edge = vertices, np.roll(vertices, -1, axis=0) - vertices
    offset = points[:, None, :] - start[None]
    t = np.clip((offset * edge).sum(-1) / np.maximum((edge * edge).sum(-1), 1e-300), 0, 1)
    return np.linalg.norm(offset - t[..., None] * edge, axis=-1).min(axis=1)


@needs_coco128
def test_coco128_masks_against_pycocotools() -> None:
    """Crowd RLEs: equal bit for bit. Polygons: pycocotools rasterises on a 5× supersampled grid (vertices
    rounded to 1/5 px: ≤ 0.1·√2 px away; boundary sampled every 1/5 px: ≤ 0.1 px more), so the two may
    disagree only on pixels whose centres lie within 0.1·√2 + 0.1 < 0.25 px of the polygon's boundary."""
    data = json.loads(COCO128_JSON.read_text())
    images = {image["id"]: image for image in data["images"]}
    compared = disagreements = 0
    for annotation in data["annotations"]:
        image = images[annotation["image_id"]]
        height, width = image["height"], image["width"]
        encoded = coco_mask.frPyObjects(annotation["segmentation"], height, width)
        if annotation["iscrowd"]:
            assert np.array_equal(
                decode_rle(annotation["segmentation"]), coco_mask.decode(encoded).astype(bool)
            )
            continue
        reference = coco_mask.decode(coco_mask.merge(encoded))
        ours = rasterize_polygons(annotation["segmentation"], height, width)
        differ = np.argwhere(ours != reference.astype(bool))
        compared += int(reference.sum())
        disagreements += len(differ)
        if len(differ):
            centres = differ[:, ::-1] + 0.5
            distance = np.min([_distance_to_boundary(centres, p) for p in annotation["segmentation"]], axis=0)
            assert distance.max() < 0.25, (annotation["id"], distance.max())
    assert disagreements < 0.01 * compared


@needs_coco128
def test_coco128_dataset_items() -> None:
    dataset = CocoSegmentation(COCO128_JSON, COCO128 / "images" / "train2017")
    assert (
        len(dataset) == 128
        and dataset.num_classes == 81
        and dataset.class_names[:2] == ("background", "person")
    )
    assert dataset.label_map.category_of(80) == 90  # toothbrush keeps its COCO id
    seen = set()
    for index in (0, 1, 2, 3, 4):
        image, mask = dataset[index]
        assert image.shape[1:] == mask.shape and mask.dtype == torch.int64
        seen |= set(torch.unique(mask).tolist())
    assert 0 in seen and len(seen - {0, 255}) >= 3 and max(seen - {255}) <= 80


def test_coco_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"image folder .* does not exist"):
        CocoSegmentation(tmp_path / "x.json", tmp_path / "missing")
    (tmp_path / "images").mkdir()
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DatasetError, match=r"bad\.json"):
        CocoSegmentation(tmp_path / "bad.json", tmp_path / "images")


def _tiny_coco(folder: Path) -> Path:
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    images = [{"id": i, "file_name": f"{i}.png", "width": 8, "height": 6} for i in (1, 2)]
    square = [[1, 1, 5, 1, 5, 4, 1, 4]]
    annotations = [{"id": 10, "image_id": 1, "category_id": 3, "bbox": [1, 1, 4, 3], "segmentation": square}]
    (folder / "instances.json").write_text(json.dumps({
        "images": images, "annotations": annotations, "categories": [{"id": 3, "name": "cat"}]
    }))  # fmt: skip
    Image.fromarray(np.zeros((6, 8, 3), np.uint8)).save(folder / "images" / "1.png")
    (folder / "images" / "2.png").write_bytes(b"truncated")
    return folder / "instances.json"


def test_a_small_coco_file_and_on_corrupt_skip(tmp_path: Path) -> None:
    path = _tiny_coco(tmp_path)
    dataset = CocoSegmentation(path, tmp_path / "images")
    image, mask = dataset[0]
    expected = np.zeros((6, 8), np.int64)
    expected[1:4, 1:5] = 1
    assert torch.equal(mask, torch.from_numpy(expected)) and image.shape == (3, 6, 8)
    with pytest.raises(DatasetError, match=r"2\.png"):
        dataset[1]
    with pytest.warns(UserWarning, match="skipped 1"):
        skipping = CocoSegmentation(path, tmp_path / "images", on_corrupt="skip")
    assert len(skipping) == 1 and skipping.skipped == [str(tmp_path / "images" / "2.png")]
