"""``visionkit train detect`` and ``visionkit predict`` end to end on a tiny ``shapes`` run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from visionkit.cli import main
from visionkit.cli.predict import coco_results, draw_detections
from visionkit.data.datasets import LabelMap
from visionkit.data.shapes import ShapesDataset, export_shapes

TINY = [
    "num_train=8",
    "num_val=4",
    "image_size=64",
    "epochs=1",
    "batch_size=4",
    "fpn_channels=16",
    "warmup_steps=1",
    "tensorboard=false",
]
MODEL_KEYS = {
    "retinanet_mobilenet_v2_fpn": ["width_multiplier=0.35", "head_convs=1"],
    "fasterrcnn_mobilenet_v2_fpn": ["width_multiplier=0.35", "representation_size=32"],
    "retinanet_plain_fpn": ["head_convs=1"],
    "fasterrcnn_plain_fpn": ["representation_size=32"],
}


def tiny(model: str) -> list[str]:
    return [f"model={model}", *TINY, *MODEL_KEYS[model]]


@pytest.mark.slow
@pytest.mark.parametrize("model", ["retinanet_mobilenet_v2_fpn", "fasterrcnn_mobilenet_v2_fpn"])
def test_train_detect_writes_a_run_folder_and_predict_uses_it(tmp_path: Path, model: str) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(main, ["train", "detect", *tiny(model), "--out", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    for name in (
        "config.json",
        "label_map.json",
        "log.csv",
        "steps.csv",
        "best.pt",
        "last.pt",
        "model.pt",
        "metrics.json",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"AP", "AP50", "VOC07_mAP", "VOC12_mAP", "best_AP", "steps"} <= set(metrics)
    assert metrics["steps"] == 2 and metrics["best_AP"] == metrics["AP"]  # one epoch: its end is the best
    assert LabelMap.load(run / "label_map.json").names == ("circle", "square", "triangle")
    # `eval detect` rebuilds the run's validation split from config.json: same weights, same numbers
    result = runner.invoke(
        main, ["eval", "detect", f"weights={run / 'model.pt'}", "--json", str(tmp_path / "e.json")]
    )
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "e.json").read_text())
    for key in ("AP", "AP50", "AP75", "VOC07_mAP", "VOC12_mAP"):
        assert evaluated[key] == pytest.approx(metrics[key], abs=1e-12), key
    images = export_shapes(ShapesDataset(2, seed=5), tmp_path / "shapes", ("yolo",))["yolo"] / "images"
    files = sorted(str(p) for p in images.iterdir())
    result = runner.invoke(
        main,
        [
            "predict",
            *files,
            f"weights={run / 'model.pt'}",
            "--out",
            str(tmp_path / "pred"),
            "--score-threshold",
            "0.0",
        ],
    )
    assert result.exit_code == 0, result.output
    drawn = Image.open(tmp_path / "pred" / "000000.png")
    assert drawn.size == (256, 256)  # 128 px shapes image drawn at scale 2
    rows = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert {row["image_id"] for row in rows} <= {0, 1}
    assert all(row["category_id"] in (1, 2, 3) and len(row["bbox"]) == 4 for row in rows)


def test_train_detect_rejects_unknown_keys() -> None:
    result = CliRunner().invoke(main, ["train", "detect", "epochz=3"])
    assert result.exit_code == 2 and "epochz" in result.output and "Traceback" not in result.output


def test_predict_reports_missing_weights_cleanly(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(
        main, ["predict", str(image), "--weights", str(bad), "--out", str(tmp_path / "o")]
    )
    assert (
        result.exit_code == 1
        and str(bad) in result.output
        and "not a readable visionkit detector" in result.output
    )


def test_coco_results_use_dataset_category_ids_and_xywh() -> None:
    detection = {
        "boxes": torch.tensor([[2.0, 3.0, 12.0, 9.0]]),
        "scores": torch.tensor([0.5]),
        "labels": torch.tensor([1]),
    }
    rows = coco_results(detection, 7, LabelMap((3, 90), ("cat", "toothbrush")))
    assert rows == [{"image_id": 7, "category_id": 90, "bbox": [2.0, 3.0, 10.0, 6.0], "score": 0.5}]
    picture = draw_detections(torch.zeros(3, 16, 16), detection, ["cat", "toothbrush"], 0.1, scale=2)
    assert picture.size == (32, 32) and picture.getpixel((4, 6)) != (0, 0, 0)  # the box outline is drawn


def test_recipe_data_and_format_must_agree(tmp_path: Path) -> None:
    from visionkit.engine.detect import DetectRecipe, build_datasets

    with pytest.raises(ValueError, match="data_format"):
        DetectRecipe(data=str(tmp_path), data_format="shapes")
    annotation = export_shapes(ShapesDataset(3, seed=2), tmp_path, ("coco",))["coco"]
    for data_format in ("coco", "auto"):
        data = build_datasets(DetectRecipe(data=str(annotation), data_format=data_format, hflip=0.0))
        assert len(data.train) == len(data.val) == 3 and data.label_map.names == (
            "circle",
            "square",
            "triangle",
        )
        assert torch.equal(data.train[1][1]["boxes"], ShapesDataset(3, seed=2)[1][1]["boxes"])


def test_eval_detect_needs_weights_and_rejects_unknown_keys(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["eval", "detect", "data=shapes"])
    assert result.exit_code == 2 and "weights=" in result.output
    result = CliRunner().invoke(main, ["eval", "detect", f"weights={tmp_path / 'missing.pt'}"])
    assert result.exit_code == 1 and "missing.pt" in result.output and "no such file" in result.output


@pytest.mark.slow
def test_train_detect_at_a_working_scale_keeps_data_and_predictions_in_image_coordinates(
    tmp_path: Path,
) -> None:
    yolo = export_shapes(ShapesDataset(6, seed=3), tmp_path / "data", ("yolo",))["yolo"]
    runner = CliRunner()
    run = tmp_path / "run"
    small = [key for key in tiny("retinanet_mobilenet_v2_fpn") if not key.startswith(("num_", "image_size"))]
    keys = [f"data={yolo}", "data_format=yolo", "min_size=64", "max_size=96", "score_threshold=0.0", *small]
    result = runner.invoke(main, ["train", "detect", *keys, "--out", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert torch.load(run / "model.pt", weights_only=True)["input_scale"] == [64, 96]
    metrics = json.loads((run / "metrics.json").read_text())
    result = runner.invoke(
        main, ["eval", "detect", f"weights={run / 'model.pt'}", "--json", str(tmp_path / "e.json")]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e.json").read_text())["AP"] == pytest.approx(metrics["AP"], abs=1e-12)
    files = sorted(str(p) for p in (yolo / "images").iterdir())[:2]
    result = runner.invoke(
        main,
        [
            "predict",
            *files,
            "--weights",
            str(run / "model.pt"),
            "--out",
            str(tmp_path / "pred"),
            "--score-threshold",
            "0.0",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "pred" / "detections.json").read_text())
    assert rows, "score threshold 0: detections expected"
    for row in rows:  # boxes in the 128 px images' own coordinates, not the 64 px working scale
        x, y, w, h = row["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 128 + 1e-3 and y + h <= 128 + 1e-3
    assert max(row["bbox"][0] + row["bbox"][2] for row in rows) > 64


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["max_size=96"], "unless min_size > 0"),
        (["min_size=64", "max_size=32"], ">= min_size"),
        (["min_size=-1"], ">= 0"),
    ],
)
def test_train_detect_rejects_bad_working_scale(keys: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["train", "detect", *keys])
    assert result.exit_code == 2 and message in result.output, result.output


def test_train_detect_names_a_dataset_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "images" / "train2017").mkdir(parents=True)
    (tmp_path / "classes.txt").write_text("a\n")
    result = CliRunner().invoke(
        main,
        ["train", "detect", f"data={tmp_path / 'images'}", "data_format=yolo", "--out", str(tmp_path / "r")],
    )
    assert result.exit_code == 1 and "no images" in result.output and "train2017" in result.output


def test_train_detect_rejects_an_empty_training_set(tmp_path: Path) -> None:
    gt = tmp_path / "empty.json"
    gt.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    result = CliRunner().invoke(
        main, ["train", "detect", f"data={gt}", "data_format=coco", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1 and "no image folder found" in result.output, result.output
    (tmp_path / "images").mkdir()
    result = CliRunner().invoke(
        main, ["train", "detect", f"data={gt}", "data_format=coco", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1 and "no images in this coco dataset" in result.output, result.output
