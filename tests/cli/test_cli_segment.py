"""``visionkit train segment``, ``visionkit eval segment`` and ``visionkit predict`` on a segmenter, end to
end on a tiny ``shapes`` run; errors are one ``Error:`` line naming the key or file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from visionkit.cli import main
from visionkit.data.segmentation import ShapesSegmentation, export_shapes_segmentation, read_mask_png
from visionkit.data.shapes import ShapesConfig
from visionkit.engine.config import load_recipe
from visionkit.engine.segment import build_datasets, evaluate_segmenter, load_segmenter, predict
from visionkit.engine.segment.recipe import SegmentRecipe

TINY = ["num_train=8", "num_val=4", "image_size=64", "epochs=1", "batch_size=4", "warmup_steps=1",
        "widths=4,8,8,16,16", "threads=1", "tensorboard=false"]  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("segment") / "run"
    result = CliRunner().invoke(main, ["train", "segment", *TINY, "--out", str(folder), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "run folder:" in result.output and '"mIoU"' in result.output
    return folder


def test_train_segment_writes_the_run_folder(run: Path) -> None:
    for name in ("config.json", "label_map.json", "log.csv", "steps.csv", "best.pt", "last.pt", "model.pt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["best_mIoU"] == metrics["mIoU"]


def test_eval_segment_prints_and_writes_the_metrics_of_the_run(run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["eval", "segment", f"weights={run / 'model.pt'}", "--json", str(tmp_path / "m.json")]
    )
    assert result.exit_code == 0, result.output
    assert "boundary_mIoU" in result.output and "IoU/triangle" in result.output
    written = json.loads((tmp_path / "m.json").read_text())
    model, label_map = load_segmenter(run / "model.pt")
    recipe = load_recipe(SegmentRecipe, run / "config.json")
    expected = evaluate_segmenter(model, build_datasets(recipe).val, label_map.names, batch_size=4).metrics
    assert written["mIoU"] == expected["mIoU"] == json.loads((run / "metrics.json").read_text())["mIoU"]
    result = CliRunner().invoke(main, ["eval", "segment", f"weights={run / 'model.pt'}", "num_val=2"])
    assert result.exit_code == 0 and "(2 images)" in " ".join(result.output.split())  # the console may wrap


def test_predict_writes_overlays_and_class_maps(run: Path, tmp_path: Path) -> None:
    image = ShapesSegmentation(1, seed=5, config=ShapesConfig(image_size=40, min_size=8, max_size=20)).sample(
        0
    )[0]
    Image.fromarray(image).save(tmp_path / "scene.png")
    out = tmp_path / "predicted"
    result = CliRunner().invoke(
        main, ["predict", f"weights={run / 'model.pt'}", str(tmp_path / "scene.png"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "scene.png:" in result.output and "background" in result.output
    model, _ = load_segmenter(run / "model.pt")
    expected = predict(model, [torch.from_numpy(image).permute(2, 0, 1).float() / 255])[0]
    assert torch.equal(read_mask_png(out / "scene_mask.png"), expected)
    with Image.open(out / "scene.png") as overlay:
        assert overlay.size == (40, 40) and overlay.mode == "RGB"
    assert json.loads((out / "label_map.json").read_text())["labels"][3]["name"] == "triangle"


def test_usage_and_data_errors_are_one_line(run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["train", "segment", "model=fcn8s_resnet5"])
    assert (
        result.exit_code == 2
        and "did you mean fcn8s_resnet50" in result.output
        and "Traceback" not in result.output
    )
    result = runner.invoke(main, ["train", "segment", *TINY, "--out", str(run)])
    assert result.exit_code == 2 and "already holds a run" in result.output
    result = runner.invoke(main, ["eval", "segment", "num_val=2"])
    assert result.exit_code == 2 and "weights=PATH/model.pt (written by train segment)" in result.output
    root = export_shapes_segmentation(
        ShapesSegmentation(2, config=ShapesConfig(image_size=32, min_size=8, max_size=16)), tmp_path / "voc"
    )
    Image.fromarray(np.zeros((32, 32, 3), np.uint8), "RGB").save(root / "SegmentationClass" / "000001.png")
    result = runner.invoke(
        main,
        ["train", "segment", f"data=voc:{root}", "epochs=1", "batch_size=1", "--out", str(tmp_path / "bad")],
    )
    assert result.exit_code == 1 and "000001.png" in result.output and "RGB image" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(
        main,
        ["predict", f"weights={tmp_path / 'none.pt'}", str(tmp_path / "voc" / "JPEGImages" / "000000.png")],
    )
    assert result.exit_code == 1 and "no such file" in result.output
