"""No traceback reaches a user: every class of bad input ends in one ``Error:`` line naming the key, file
or index (exit 1, or 2 for usage errors); ``--debug`` shows the traceback; no result is computed and lost."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from visionkit.cli import main
from visionkit.data.shapes import ShapesDataset, export_shapes
from visionkit.engine.classify import ClassifyRecipe
from visionkit.errors import ConfigError

SMALL_DETECT = [
    "num_train=4",
    "num_val=2",
    "image_size=64",
    "batch_size=2",
    "fpn_channels=16",
    "head_convs=1",
    "warmup_steps=1",
    "tensorboard=false",
    "progress=false",
    "threads=1",
]


def run(*arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(arguments))
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("arguments", "code", "named"),
    [
        (["train", "detect", "epochs=-1"], 2, "epochs=-1: expected an integer >= 1"),
        (["train", "detect", "lr=nan"], 2, "lr=nan"),
        (["train", "detect", "model=retinanet_resnet9000"], 2, "model='retinanet_resnet9000': unknown"),
        (["train", "detect", "nms_threshold=1.5"], 2, "nms_threshold=1.5"),
        (["train", "detect", "device=cuda:7"], 2, "device='cuda:7'"),
        (["train", "detect", "scale_jitter=2,1"], 2, "scale_jitter=(2.0, 1.0)"),
        (["train", "detect", "width_multiplier=0.5"], 2, "model 'retinanet_plain_fpn' has no such option"),
        (["train", "classify", "epochs=0"], 2, "epochs=0"),
        (["train", "classify", "model=resnet19"], 2, "did you mean resnet18"),
        (["train", "classify", "lr=-1"], 2, "lr=-1.0"),
    ],
)
def test_bad_recipe_values_are_usage_errors_naming_the_key(
    arguments: list[str], code: int, named: str
) -> None:
    exit_code, output = run(*arguments)
    assert exit_code == code and named in output and "Traceback" not in output, output


INVALID_CLASSIFY = {
    "model": "resnet19", "data": "cifar", "epochs": 0, "batch_size": 0, "lr": 0.0, "optimizer": "lion",
    "momentum": 1.0, "weight_decay": -1.0, "schedule": "wave", "warmup_epochs": 10, "step_size": 0,
    "milestones": (8, 5), "gamma": 0.0, "decay_k": -1.0, "clip_norm": 0.0, "accumulation_steps": 0,
    "amp": "yes", "ema_decay": 1.0, "early_stopping_patience": -1, "image_size": -8, "seed": 0.5,
    "threads": -1, "progress": 1, "teacher": 3, "temperature": 0.0, "alpha": 1.5,
    "hint": "one_layer", "hint_weight": -1.0,
}  # fmt: skip


def test_every_classify_recipe_field_refuses_an_invalid_value() -> None:
    assert set(INVALID_CLASSIFY) == {field.name for field in dataclasses.fields(ClassifyRecipe)}
    for key, value in INVALID_CLASSIFY.items():
        with pytest.raises(ConfigError, match=f"^{key}="):
            ClassifyRecipe(**{key: value})


def test_a_diverging_loss_names_the_iteration_and_the_terms_without_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import visionkit.models.detectors.retinanet as retinanet

    original, calls = retinanet.retinanet_loss, []

    def diverging(*args, **kwargs):  # the 5th batch (epoch 3, after two checkpoints) has a NaN loss
        losses = original(*args, **kwargs)
        calls.append(1)
        if len(calls) == 5:
            return {**losses, "classification": losses["classification"] * float("nan")}
        return losses

    monkeypatch.setattr(retinanet, "retinanet_loss", diverging)
    out = tmp_path / "r"
    exit_code, output = run("train", "detect", *SMALL_DETECT, "epochs=4", "--out", str(out))
    assert exit_code == 1 and "Traceback" not in output, output
    assert "loss is not finite at iteration 4" in output and "classification=nan" in output
    assert (
        "last good checkpoint" in output and "checkpoint_00000004.pt" in output and f"resume={out}" in output
    )
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint_00000002.pt", "checkpoint_00000004.pt"]  # no NaN checkpoint written


def test_debug_shows_the_traceback_of_a_visionkit_error(monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(main, ["--debug", "train", "detect", "epochs=-1"])
    assert isinstance(result.exception, ConfigError)
    monkeypatch.setenv("VISIONKIT_DEBUG", "1")
    result = CliRunner().invoke(main, ["train", "detect", "epochs=-1"])
    assert isinstance(result.exception, ConfigError)


def test_an_unreadable_resume_checkpoint_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "checkpoint_00000001.pt"
    bad.write_bytes(b"garbage")
    exit_code, output = run("train", "classify", "epochs=1", "progress=false", "--resume", str(bad),
                            "--out", str(tmp_path / "r"))  # fmt: skip
    assert exit_code == 1 and "checkpoint_00000001.pt" in output and "Traceback" not in output, output


def test_output_paths_are_created_before_the_work(tmp_path: Path) -> None:
    dataset = ShapesDataset(2, seed=0)
    annotation = export_shapes(dataset, tmp_path / "gt", ("coco",))["coco"]
    detections = [{"image_id": 0, "category_id": 1, "bbox": [1.0, 1.0, 5.0, 5.0], "score": 0.5}]
    results = tmp_path / "dets.json"
    results.write_text(json.dumps(detections))
    report = tmp_path / "no" / "such" / "dir" / "report.json"
    exit_code, output = run("eval", str(results), "--gt", str(annotation), "--json", str(report))
    assert exit_code == 0 and report.is_file(), output
    blocked = tmp_path / "file"
    blocked.write_text("")
    exit_code, output = run("eval", str(results), "--gt", str(annotation), "--json", str(blocked / "r.json"))
    assert exit_code == 2 and "--json" in output and "Traceback" not in output, output


def test_a_non_numeric_score_names_the_file_and_the_entry(tmp_path: Path) -> None:
    annotation = export_shapes(ShapesDataset(2, seed=0), tmp_path / "gt", ("coco",))["coco"]
    results = tmp_path / "dets.json"
    rows = [{"image_id": 0, "category_id": 1, "bbox": [1.0, 1.0, 5.0, 5.0], "score": 0.5},
            {"image_id": 1, "category_id": 1, "bbox": [1.0, 1.0, 5.0, 5.0], "score": "high"}]  # fmt: skip
    results.write_text(json.dumps(rows))
    exit_code, output = run("eval", str(results), "--gt", str(annotation))
    assert exit_code == 1 and "dets.json" in output and "entry 1 has score 'high'" in output, output


def test_an_inverted_voc_box_is_refused_naming_file_and_object(tmp_path: Path) -> None:
    folder = export_shapes(ShapesDataset(2, seed=0), tmp_path, ("voc",))["voc"]
    xml = sorted((folder / "Annotations").glob("*.xml"))[0]
    text = xml.read_text()
    start = text.index("<xmax>") + len("<xmax>")
    xml.write_text(text[:start] + "1" + text[text.index("</xmax>") :])
    exit_code, output = run("data", "info", str(folder), "--format", "voc")
    assert exit_code == 1 and xml.name in output and "object 0" in output and "inverted" in output, output


def test_corrupt_images_raise_by_default_and_are_counted_with_skip(tmp_path: Path) -> None:
    folder = export_shapes(ShapesDataset(4, seed=0), tmp_path / "data", ("yolo",))["yolo"]
    broken = sorted((folder / "images").iterdir())[1]
    broken.write_bytes(broken.read_bytes()[:60])
    out = tmp_path / "run"
    common = [f"data={folder}", *SMALL_DETECT[2:], "epochs=1"]
    exit_code, output = run("train", "detect", *common, "--out", str(out))
    assert exit_code == 1 and broken.name in output and "Traceback" not in output, output
    exit_code, output = run("train", "detect", *common, "on_corrupt=skip", "--out", str(tmp_path / "run2"))
    assert exit_code == 0, output
    assert "skipped" in output and broken.name in (tmp_path / "run2" / "skipped.txt").read_text()
