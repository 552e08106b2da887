"""`visionkit compress ... weights=<detector run>/model.pt`: the backbone is compressed, the neck and head
keep their channels, AP is reported before / after / after fine-tuning, the file reloads; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from visionkit.cli import main
from visionkit.compress.detect import load_compressed_detector
from visionkit.compress.run import CompressRecipe, compress_model, load_compressed_classifier
from visionkit.engine.classify import ClassifyRecipe, build_model, save_classifier
from visionkit.engine.config import load_recipe
from visionkit.engine.detect import (
    DetectRecipe,
    build_datasets,
    evaluate_detector,
    load_detector,
    train_detector,
)
from visionkit.errors import CheckpointError, ConfigError, ExportError

TINY = dict(num_train=8, num_val=4, image_size=64, batch_size=4, warmup_steps=1, fpn_channels=16,
            head_convs=1, threads=1, progress=False, tensorboard=False, epochs=1)  # fmt: skip
FAST = ["latency_repeats=1", "threads=1"]


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("detector") / "run"
    train_detector(DetectRecipe(**TINY), run, log=lambda _: None)
    return run


def _backbone_shapes(detector: torch.nn.Module, size: int = 64) -> dict[str, tuple[int, ...]]:
    with torch.no_grad():
        return {k: tuple(v.shape) for k, v in detector.backbone(torch.zeros(1, 3, size, size)).items()}


def test_pruning_a_detector_backbone_keeps_its_outputs_and_reports_ap(
    detector_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pruned"
    weights = detector_run / "model.pt"
    result = CliRunner().invoke(main, ["compress", "prune", f"weights={weights}", "ratio=0.5",
                                       "finetune_epochs=1", *FAST, "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    original, compressed = rows["original"], rows["compressed"]
    assert report["task"] == "detect" and compressed["backbone_parameters"] < original["backbone_parameters"]
    assert compressed["backbone_macs"] < original["backbone_macs"]
    removed = original["backbone_parameters"] - compressed["backbone_parameters"]
    assert original["parameters"] - compressed["parameters"] == removed  # neck and head untouched
    assert {"AP", "AP_before_finetune"} <= set(compressed) and "AP" in result.output
    detector, _ = load_detector(weights)  # the AP of the original is what `eval detect` gives
    data = build_datasets(load_recipe(DetectRecipe, detector_run / "config.json"))
    assert original["AP"] == evaluate_detector(detector, data.val, 3, batch_size=4).metrics["AP"]
    reloaded = load_compressed_detector(out / "model.pt")
    assert _backbone_shapes(reloaded) == _backbone_shapes(detector)
    found = reloaded([torch.rand(3, 64, 64)])[0]
    assert set(found) == {"boxes", "scores", "labels"}


def test_sharing_a_detector_backbone_reloads(detector_run: Path, tmp_path: Path) -> None:
    recipe = CompressRecipe(
        weights=str(detector_run / "model.pt"), bits=4, finetune_epochs=0, latency_repeats=1
    )
    report = compress_model("share", recipe, tmp_path / "s")
    assert report["details"]["storage"]["packed_ratio"] > 7
    assert report["rows"]["compressed"]["AP_before_finetune"] == report["rows"]["compressed"]["AP"]
    load_compressed_detector(tmp_path / "s" / "model.pt")


def test_detector_bad_input_names_what_is_wrong(
    detector_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = str(detector_run / "model.pt")
    with monkeypatch.context() as patch:  # a bad layer name is refused before the run's data is read
        patch.setattr("visionkit.compress.detect.build_datasets", lambda _: pytest.fail("data read first"))
        with pytest.raises(ConfigError, match=r"'nope' is not in the detector's backbone"):
            compress_model("prune", CompressRecipe(weights=weights, layers="nope"), tmp_path / "e")
    with pytest.raises(ConfigError, match=r"'head\.0' is not in the detector's backbone"):
        compress_model("prune", CompressRecipe(weights=weights, layers="head.0", **{"finetune_epochs": 0}),
                       tmp_path / "a")  # fmt: skip
    with pytest.raises(ConfigError, match="rounds=3"):
        compress_model("prune", CompressRecipe(weights=weights, structured=False, rounds=3), tmp_path / "f")
    with pytest.raises(ConfigError, match="factorization=svd"):
        compress_model("lowrank", CompressRecipe(weights=weights, factorization="svd"), tmp_path / "b")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "model.pt").write_bytes((detector_run / "model.pt").read_bytes())
    with pytest.raises(ConfigError, match=r"lonely/model\.pt.*no config\.json"):
        compress_model("prune", CompressRecipe(weights=str(lonely / "model.pt")), tmp_path / "c")
    with pytest.raises(ExportError, match=r"backbone: layer 'blocks\.0\.1\.0'.*protected"):  # it makes c2
        compress_model("prune", CompressRecipe(weights=weights, layers="backbone.blocks.0.1.0",
                                               finetune_epochs=0), tmp_path / "d")  # fmt: skip


def test_a_compressed_classifier_is_not_a_detector(tmp_path: Path) -> None:
    recipe = ClassifyRecipe()
    weights = save_classifier(build_model(recipe, 10), recipe, tmp_path / "model.pt")
    compress_model("share", CompressRecipe(weights=str(weights), finetune_epochs=0, latency_repeats=1),
                   tmp_path / "run")  # fmt: skip
    with pytest.raises(CheckpointError, match=r"run/model\.pt.*not a detector"):
        load_compressed_detector(tmp_path / "run" / "model.pt")
    assert load_compressed_classifier(tmp_path / "run" / "model.pt") is not None
