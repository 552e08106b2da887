"""The YOLO families in the detection task: k-means anchors computed when a run starts and saved with the
model, explicit anchors, and the recipe errors about them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visionkit.data.shapes import ShapesDataset
from visionkit.engine.detect import DetectRecipe, build_datasets, load_detector, train_detector
from visionkit.engine.detect.anchors import kmeans_anchor_argument, takes_anchors, training_box_sizes
from visionkit.errors import ConfigError
from visionkit.ops.anchors import kmeans_anchors

TINY = dict(num_train=16, num_val=4, image_size=64, batch_size=8, warmup_steps=1, epochs=1, threads=1,
            progress=False, tensorboard=False)  # fmt: skip


def test_builders_say_how_many_anchors_they_take() -> None:
    assert takes_anchors("yolov3_plain") == 9 and takes_anchors("yolov2_darknet19") == 5
    assert takes_anchors("retinanet_plain_fpn") == 0


def test_box_sizes_are_the_training_boxes_at_the_working_scale() -> None:
    recipe = DetectRecipe(model="yolov3_plain", **TINY)
    train = build_datasets(recipe).train
    expected = []
    for index in range(16):  # a literal loop over the images' own targets
        boxes = ShapesDataset(16, seed=0, config=train.config)[index][1]["boxes"].double()
        expected += [[b[2] - b[0], b[3] - b[1]] for b in boxes.tolist()]
    assert training_box_sizes(train, recipe).tolist() == expected
    scaled = DetectRecipe(model="yolov3_plain", min_size=96, **TINY)  # 64 → 96: every size × 1.5
    assert training_box_sizes(train, scaled).tolist() == [[w * 1.5, h * 1.5] for w, h in expected]


def test_a_run_clusters_its_anchors_and_saves_them_with_the_model(tmp_path: Path) -> None:
    recipe = DetectRecipe(model="yolov3_plain", **TINY)
    train_detector(recipe, tmp_path / "run", log=lambda _: None)
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    wh = training_box_sizes(build_datasets(recipe).train, recipe)
    expected = tuple((round(w, 2), round(h, 2)) for w, h in kmeans_anchors(wh, 9, seed=0).tolist())
    assert tuple(map(tuple, saved["arguments"]["anchors"])) == expected
    assert expected == kmeans_anchor_argument(recipe, build_datasets(recipe).train)
    detector, _ = load_detector(tmp_path / "run" / "model.pt")
    assert detector.anchors.tolist() == torch.tensor(expected, dtype=torch.float32).tolist()


def test_explicit_anchors_and_kmeans_off(tmp_path: Path) -> None:
    pairs = [12, 14, 20, 18, 30, 26, 22, 40, 40, 30]
    recipe = DetectRecipe(model="yolov2_plain", anchors=tuple(map(float, pairs)), **TINY)
    train_detector(recipe, tmp_path / "run", log=lambda _: None)
    detector, _ = load_detector(tmp_path / "run" / "model.pt")
    assert detector.anchors.flatten().tolist() == [float(v) for v in pairs]
    off = DetectRecipe(model="yolov2_plain", anchor_kmeans=False, **TINY)
    train_detector(off, tmp_path / "off", log=lambda _: None)
    default = load_detector(tmp_path / "off" / "model.pt")[0].anchors
    assert default.tolist() == [[14.0, 14.0], [22.0, 22.0], [28.0, 34.0], [34.0, 28.0], [44.0, 44.0]]


def test_anchor_errors_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^anchors=.*pairs"):
        DetectRecipe(model="yolov3_plain", anchors=(10.0, 12.0, 5.0))
    with pytest.raises(ConfigError, match=r"^anchors=.*has no such option"):
        DetectRecipe(model="retinanet_plain_fpn", anchors=(10.0, 12.0))
    with pytest.raises(ConfigError, match="same number of \\(width, height\\) pairs on each of the 3 scales"):
        recipe = DetectRecipe(model="yolov3_plain", anchors=(10.0, 12.0), **TINY)
        train_detector(recipe, tmp_path / "run", log=lambda _: None)
    few = DetectRecipe(model="yolov3_plain", **{**TINY, "num_train": 1})
    with pytest.raises(ConfigError, match="anchor_kmeans=true: yolov3_plain needs 9 anchors"):
        kmeans_anchor_argument(few, build_datasets(few).train)


def test_anchor_count_asks_kmeans_for_another_number() -> None:
    recipe = DetectRecipe(model="yolov3_plain", anchor_count=15, **TINY)
    anchors = kmeans_anchor_argument(recipe, build_datasets(recipe).train)
    assert len(anchors) == 15
    with pytest.raises(ConfigError, match=r"^anchor_count=5: model 'retinanet_plain_fpn' takes no anchors"):
        DetectRecipe(anchor_count=5)
