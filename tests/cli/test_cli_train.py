"""`visionkit train classify`: run folder contents, override errors, resume, and the digits target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from visionkit.cli import main
from visionkit.engine.checkpoint import list_checkpoints
from visionkit.engine.classify import ClassifyRecipe, train_classifier


def test_classify_writes_run_folder_and_resumes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    arguments = [
        "train",
        "classify",
        "epochs=1",
        "batch_size=128",
        "progress=false",
        "optimizer=sgd",
        "--out",
        str(run),
    ]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    expected = {
        "config.json",
        "log.csv",
        "checkpoints",
        "learning_curves.png",
        "gradient_flow.png",
        "metrics.json",
    }
    assert expected <= {p.name for p in run.iterdir()}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert json.loads((run / "config.json").read_text())["optimizer"] == "sgd"
    # continue the same run for one more epoch
    arguments = [*arguments[:2], "epochs=2", *arguments[3:], "--resume", str(run / "checkpoints")]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 2
    assert len((run / "log.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs
    assert len(list_checkpoints(run / "checkpoints")) == 2


@pytest.mark.parametrize(
    ("override", "message"),
    [("epoch=3", "unknown key 'epoch'; valid keys: model, data"), ("lr=x", "expected float")],
)
def test_bad_override_is_a_usage_error(override: str, message: str) -> None:
    result = CliRunner().invoke(main, ["train", "classify", override])
    assert result.exit_code == 2 and message in result.output


def test_train_group_lists_classify() -> None:
    result = CliRunner().invoke(main, ["train", "--help"])
    assert result.exit_code == 0 and "classify" in result.output


@pytest.mark.slow
def test_small_resnet_reaches_97_percent_on_digits(tmp_path: Path) -> None:
    metrics = train_classifier(ClassifyRecipe(epochs=6, progress=False), tmp_path)
    assert metrics["test_accuracy"] >= 0.97
    assert metrics["gradient_flow"] == "healthy"


@pytest.mark.xdist_group("ddp")  # one multi-process run at a time: they share ports and cores
@pytest.mark.slow
def test_classify_with_two_processes(tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    arguments = [
        "train",
        "classify",
        "epochs=1",
        "batch_size=128",
        "progress=false",
        "threads=1",
        "--nproc",
        "2",
    ]
    result = CliRunner().invoke(main, [*arguments, "--out", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == -(
        -1258 // 128
    )  # ceil: the last smaller batch is kept
    state = torch.load(list_checkpoints(run / "checkpoints")[0], weights_only=True)
    assert not any(key.startswith("module.") for key in state["model"])  # portable between 1 and N processes


@pytest.mark.parametrize(("model", "size", "channels"), [("resnet_digits", 8, 1), ("resnet18", 32, 3)])
def test_registry_models_get_adapted_digits(model: str, size: int, channels: int) -> None:
    from visionkit.engine.classify import build_model

    adapted = build_model(ClassifyRecipe(model=model), num_classes=10)
    adapter = adapted[0]
    assert (adapter.size, adapter.channels) == (size, channels)
    images = torch.rand(2, 1, 8, 8)
    assert adapter(images).shape == (2, channels, size, size)
    assert adapted.eval()(images).shape == (2, 10)
