"""The files users already have: an ultralytics data.yaml, cfg= recipe files, predict on folders and globs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from visionkit.cli import main
from visionkit.data.datasets import DatasetError, read_data_yaml, read_yolo
from visionkit.data.shapes import ShapesDataset, export_shapes
from visionkit.engine.classify import ClassifyRecipe
from visionkit.engine.config import apply_overrides, save_recipe
from visionkit.engine.detect import DetectRecipe, build_datasets
from visionkit.errors import ConfigError


def yolo_split(root: Path, name: str, count: int, seed: int) -> Path:
    """``root/images/<name>`` and ``root/labels/<name>`` of ``count`` shapes images."""
    folder = export_shapes(ShapesDataset(count, seed=seed), root / f"tmp-{name}", ("yolo",))["yolo"]
    for kind in ("images", "labels"):
        shutil.move(str(folder / kind), str(root / kind / name))
    return root / "images" / name


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "shapes"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    yolo_split(root, "train", 6, 0)
    yolo_split(root, "val", 3, 1)
    return root


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_data_yaml_with_names_as_a_list_or_a_mapping_and_a_relative_path(
    dataset: Path, tmp_path: Path
) -> None:
    reference = read_yolo(dataset / "images" / "train", classes=["circle", "square", "triangle"])
    for names in ("[circle, square, triangle]", "{0: circle, 1: square, 2: triangle}"):
        config = write_yaml(
            tmp_path / "data.yaml",
            f"path: shapes\ntrain: images/train\nval: images/val\nnames: {names}\nnc: 3\n",
        )
        train = read_data_yaml(config, "train")
        assert train.label_map.names == ("circle", "square", "triangle")
        assert [r.boxes.tolist() for r in train.records] == [r.boxes.tolist() for r in reference.records]
        assert len(read_data_yaml(config, "val").records) == 3


def test_data_yaml_list_files_and_lists_of_sources(dataset: Path, tmp_path: Path) -> None:
    images = sorted((dataset / "images" / "val").iterdir())
    listing = dataset / "val.txt"
    listing.write_text("\n".join(f"images/val/{p.name}" for p in images[:2]) + "\n")
    config = write_yaml(
        tmp_path / "data.yaml",
        f"path: {dataset}\ntrain: [images/train, val.txt]\nval: val.txt\nnames: [circle, square, triangle]\n",
    )
    assert len(read_data_yaml(config, "train").records) == 6 + 2
    assert len(read_data_yaml(config, "val").records) == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: images/train\nnames: [a]\nepochs: 3\n", "unknown key(s) ['epochs']"),
        ("train: nowhere\nnames: [a]\n", "key 'train' names"),
        ("train: images/train\nnames: {1: a, 2: b}\n", "key 'names' must number the classes 0..1"),
        ("train: images/train\nnames: [a, b]\nnc: 3\n", "key 'nc' is 3 but 'names' has 2"),
        ("names: [a]\n", "key 'val' is missing"),
    ],
)
def test_data_yaml_errors_name_the_file_and_the_key(dataset: Path, text: str, message: str) -> None:
    config = write_yaml(dataset / "bad.yaml", text)
    with pytest.raises(DatasetError, match=r"bad\.yaml") as error:
        read_data_yaml(config, "val" if "key 'val'" in message else "train")
    assert message in str(error.value)


def test_train_detect_and_data_info_take_a_data_yaml(dataset: Path, tmp_path: Path) -> None:
    config = write_yaml(
        dataset / "data.yaml", "train: images/train\nval: images/val\nnames: [circle, square, triangle]\n"
    )
    data = build_datasets(DetectRecipe(data=str(config)))
    assert len(data.train) == 6 and len(data.val) == 3
    result = CliRunner().invoke(main, ["data", "info", str(config), "--split", "val"])
    assert result.exit_code == 0 and result.output.startswith("3 images"), result.output


def test_cfg_files_are_cast_and_checked_and_the_command_line_wins(tmp_path: Path) -> None:
    yaml_file = write_yaml(
        tmp_path / "recipe.yaml", "epochs: 3\nlr: '0.05'\nanchor_sizes: [16, 32, 64, 128, 256]\n"
    )
    recipe = apply_overrides(DetectRecipe(), [f"cfg={yaml_file}", "epochs=5"])
    assert (recipe.epochs, recipe.lr, recipe.anchor_sizes) == (5, 0.05, (16.0, 32.0, 64.0, 128.0, 256.0))
    with pytest.raises(ConfigError, match=r"recipe\.yaml'?: unknown key 'epochz'"):
        apply_overrides(DetectRecipe(), [f"cfg={write_yaml(tmp_path / 'recipe.yaml', 'epochz: 3')}"])
    with pytest.raises(ConfigError, match="lr=-1"):
        apply_overrides(DetectRecipe(), [f"cfg={write_yaml(tmp_path / 'recipe.yaml', 'lr: -1')}"])
    saved = save_recipe(DetectRecipe(epochs=7, nms_method="soft_gaussian"), tmp_path / "run" / "config.json")
    assert apply_overrides(DetectRecipe(), [f"cfg={saved}"]) == DetectRecipe(
        epochs=7, nms_method="soft_gaussian"
    )
    with pytest.raises(ConfigError, match="holds a DetectRecipe, not a ClassifyRecipe"):
        apply_overrides(ClassifyRecipe(), [f"cfg={saved}"])
    result = CliRunner().invoke(main, ["train", "detect", f"cfg={tmp_path / 'missing.yaml'}"])
    assert result.exit_code == 2 and "missing.yaml" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_predict_takes_folders_and_globs_and_skips_non_images(dataset: Path, tmp_path: Path) -> None:
    from visionkit.engine.detect import train_detector

    run = tmp_path / "run"
    recipe = DetectRecipe(
        num_train=4,
        num_val=2,
        image_size=64,
        batch_size=2,
        epochs=1,
        fpn_channels=16,
        head_convs=1,
        threads=1,
        progress=False,
        tensorboard=False,
    )
    train_detector(recipe, run, log=lambda _: None)
    assert (
        apply_overrides(DetectRecipe(), [f"cfg={run / 'config.json'}"]) == recipe
    )  # config.json round trips
    config = write_yaml(
        dataset / "data.yaml", "train: images/train\nval: images/val\nnames: [circle, square, triangle]\n"
    )
    json_file = tmp_path / "metrics.json"
    result = CliRunner().invoke(
        main, ["eval", "detect", f"weights={run / 'model.pt'}", f"data={config}", "--json", str(json_file)]
    )
    # the yaml's val split; whitespace normalised: the console wraps the line where the tmp path is long
    assert result.exit_code == 0 and "(3 images)" in " ".join(result.output.split()), result.output
    assert {"AP", "AP50"} <= set(json.loads(json_file.read_text()))
    folder = dataset / "images" / "val"
    (folder / "notes.txt").write_text("not an image")
    result = CliRunner().invoke(
        main, ["predict", str(folder), f"weights={run / 'model.pt'}", "--out", str(tmp_path / "a")]
    )
    assert result.exit_code == 0 and "skipped 1 non-image file" in result.output, result.output
    assert len(list((tmp_path / "a").glob("*.png"))) == 3
    pattern = str(dataset / "images" / "*" / "00000[01].png")
    result = CliRunner().invoke(
        main, ["predict", pattern, f"weights={run / 'model.pt'}", "--out", str(tmp_path / "b")]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "b" / "detections.json").read_text())
    assert len(list((tmp_path / "b").glob("*.png"))) == 4 and isinstance(rows, list)  # 2 per split folder
    result = CliRunner().invoke(
        main, ["predict", str(dataset / "nothing*.png"), f"weights={run / 'model.pt'}"]
    )
    assert result.exit_code == 2 and "matches no file" in result.output
