"""A compressed run's ``model.pt`` (``visionkit compress``) is read by the task loaders of the engine, so
``eval detect``, ``predict`` and ``export`` take it like a trained run's; a corrupt or mismatched compressed
file is a :class:`~visionkit.errors.CheckpointError` naming the file.

The engine rebuilds the compressed model with plain layers and dense weights
(:mod:`visionkit.engine.compressed`); :mod:`visionkit.compress.io` rebuilds it with the codebook
parametrization. Both compute with the same weight tensors in the same layers, so their outputs are equal
exactly (``torch.equal``), not within a tolerance.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from visionkit.cli import main
from visionkit.compress.detect import load_compressed_detector
from visionkit.compress.run import load_compressed_classifier
from visionkit.engine.classify import load_classifier
from visionkit.engine.compressed import dense_state_dict, is_compressed
from visionkit.engine.detect import DetectRecipe, load_detector, run_recipe, train_detector
from visionkit.errors import CheckpointError, ConfigError

FAST = ["finetune_epochs=0", "latency_repeats=1", "threads=1"]
TINY = dict(num_train=8, num_val=4, image_size=64, batch_size=4, warmup_steps=1, fpn_channels=16,
            head_convs=1, threads=1, progress=False, tensorboard=False, epochs=1)  # fmt: skip
METHODS = {  # method: keys; each edit kind of visionkit.compress.io once
    "prune": ["ratio=0.5"],
    "sparse": ["structured=false", "ratio=0.8"],
    "share": ["bits=4"],
    "lowrank": ["factorization=tucker2", "energy=0.8"],
}


def _compress(weights: Path, name: str, out: Path) -> Path:
    method = "prune" if name == "sparse" else name
    result = CliRunner().invoke(
        main, ["compress", method, f"weights={weights}", *METHODS[name], *FAST, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out / "model.pt"


@pytest.fixture(scope="module")
def classifier(untrained_classifier: Path) -> Path:
    return untrained_classifier


@pytest.fixture(scope="module")
def detector_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("detector") / "run"
    train_detector(DetectRecipe(**TINY), run, log=lambda _: None)
    return run


@pytest.fixture(scope="module")
def pruned_detector(detector_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _compress(detector_run / "model.pt", "prune", tmp_path_factory.mktemp("pruned") / "run")


@pytest.mark.parametrize("name", sorted(METHODS))
def test_load_classifier_reads_a_compressed_classifier(classifier: Path, tmp_path: Path, name: str) -> None:
    path = _compress(classifier, name, tmp_path / "run")
    model, recipe = load_classifier(path)
    reference = load_compressed_classifier(path)  # compress's own loader (parametrized shared weights)
    assert recipe == load_classifier(classifier)[1] and not model.training
    assert not any("parametrizations" in key for key in model.state_dict())  # an ordinary module
    images = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(images), reference(images))


def test_export_a_compressed_classifier(classifier: Path, tmp_path: Path) -> None:
    path = _compress(classifier, "prune", tmp_path / "run")
    result = CliRunner().invoke(main, ["export", f"weights={path}", "fuse=true"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((path.parent / "export" / "export.json").read_text())
    assert manifest["kind"] == "classifier" and manifest["weights"] == str(path)
    from visionkit.deploy.onnx import load_onnx_runtime

    model, _ = load_classifier(path)
    assert load_onnx_runtime(model, path.parent / "export")(torch.rand(3, 1, 8, 8)).shape == (3, 10)


def test_predict_on_a_compressed_classifier_says_it_is_not_a_detector(
    classifier: Path, tmp_path: Path
) -> None:
    path = _compress(classifier, "share", tmp_path / "run")
    image = tmp_path / "a.png"
    Image.effect_noise((32, 32), 60).convert("RGB").save(image)
    result = CliRunner().invoke(
        main, ["predict", str(image), f"weights={path}", "--out", str(tmp_path / "p")]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert str(path) in result.output and "compressed 'classify' model" in result.output


@pytest.mark.parametrize("name", sorted(METHODS))
def test_load_detector_reads_a_compressed_detector(detector_run: Path, tmp_path: Path, name: str) -> None:
    path = _compress(detector_run / "model.pt", name, tmp_path / "run")
    detector, label_map = load_detector(path)
    reference = load_compressed_detector(path)
    assert label_map == load_detector(detector_run / "model.pt")[1] and not detector.training
    assert not any("parametrizations" in key for key in detector.state_dict())
    images = [torch.rand(3, 64, 48, generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        ours, theirs = detector(images)[0], reference(images)[0]
    assert all(torch.equal(ours[key], theirs[key]) for key in ("boxes", "scores", "labels"))
    soft, _ = load_detector(path, nms_method="soft_gaussian")  # overrides reach the base builder
    assert getattr(soft, "detector", soft).postprocess.nms_method == "soft_gaussian"


def test_eval_detect_predict_and_export_take_a_compressed_run(
    detector_run: Path, pruned_detector: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    assert run_recipe(pruned_detector) == run_recipe(detector_run / "model.pt")  # its source run's recipe
    metrics = tmp_path / "metrics.json"
    result = runner.invoke(main, ["eval", "detect", f"weights={pruned_detector}", "--json", str(metrics)])
    assert result.exit_code == 0, result.output
    report = json.loads((pruned_detector.parent / "report.json").read_text())
    assert json.loads(metrics.read_text())["AP"] == report["rows"]["compressed"]["AP"]  # the same images
    images = tmp_path / "images"
    images.mkdir()
    Image.effect_noise((64, 48), 60).convert("RGB").save(images / "a.png")
    result = runner.invoke(main, ["export", f"weights={pruned_detector}", "image_size=64"])
    assert result.exit_code == 0, result.output
    assert json.loads((pruned_detector.parent / "export" / "export.json").read_text())["kind"] == "retinanet"
    found = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / backend
        arguments = [
            "predict",
            str(images),
            f"weights={pruned_detector}",
            "--backend",
            backend,
            "--out",
            str(out),
        ]
        result = runner.invoke(main, arguments)
        assert result.exit_code == 0, result.output
        found[backend] = json.loads((out / "detections.json").read_text())
    # same detections; their numbers agree within the bound derived in tests/deploy/test_deploy_onnx.py
    assert [(d["image_id"], d["category_id"]) for d in found["torch"]] == [
        (d["image_id"], d["category_id"]) for d in found["onnxruntime"]
    ]


def _rewrite(path: Path, out: Path, change) -> Path:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    change(saved)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(saved, out)
    return out


def _edit(kind: str):
    def change(saved: dict) -> None:
        edit = next(e for e in saved["edits"] if e["kind"] == kind)
        if kind == "channels":
            name = next(iter(edit["shapes"]))
            edit["shapes"][name] = {**edit["shapes"][name], "out": edit["shapes"][name]["out"] + 1}
        else:
            edit["ranks"]["no.such.layer"] = 2

    return change


def _drop(key: str):
    return lambda saved: saved.pop(key)


def test_corrupt_or_mismatched_compressed_files_name_the_file(
    classifier: Path, pruned_detector: Path, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated" / "model.pt"
    truncated.parent.mkdir()
    truncated.write_bytes(pruned_detector.read_bytes()[:2000])
    lowrank = _compress(classifier, "lowrank", tmp_path / "lowrank")
    cases = {
        "detector, truncated": (load_detector, truncated),
        "detector, channels that do not fit the weights": (
            load_detector, _rewrite(pruned_detector, tmp_path / "wide" / "model.pt", _edit("channels"))),
        "detector, edit of an unknown kind": (load_detector, _rewrite(
            pruned_detector, tmp_path / "kind" / "model.pt", lambda s: s["edits"].append({"kind": "fold"}))),
        "detector, no packed weights": (
            load_detector, _rewrite(pruned_detector, tmp_path / "packed" / "model.pt", _drop("packed"))),
        "classifier, a layer that does not exist": (
            load_classifier, _rewrite(lowrank, tmp_path / "missing" / "model.pt", _edit("lowrank"))),
        "classifier, truncated": (load_classifier, truncated),
        "a compressed detector is not a classifier": (load_classifier, pruned_detector),
        "a compressed classifier is not a detector": (load_detector, lowrank),
    }  # fmt: skip
    for load, path in cases.values():  # each key says what is wrong with the file
        with pytest.raises(CheckpointError, match=re.escape(str(path))):
            load(path)
    result = CliRunner().invoke(
        main, ["eval", "detect", f"weights={cases['detector, no packed weights'][1]}"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output and "packed" in result.output


def test_a_compress_run_whose_source_is_gone_is_a_config_error(pruned_detector: Path, tmp_path: Path) -> None:
    moved = tmp_path / "moved"
    moved.mkdir()
    config = json.loads((pruned_detector.parent / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "weights": str(tmp_path / "gone" / "model.pt")}))
    (moved / "model.pt").write_bytes(pruned_detector.read_bytes())
    with pytest.raises(ConfigError, match="gone"):
        run_recipe(moved / "model.pt")
    assert is_compressed(torch.load(moved / "model.pt", weights_only=True))
    assert len(dense_state_dict(torch.load(moved / "model.pt", weights_only=True))) > 0


def test_a_compressed_classifier_teaches(classifier: Path, tmp_path: Path) -> None:
    teacher = _compress(classifier, "prune", tmp_path / "pruned")
    keys = ["epochs=1", "threads=1", "progress=false", "model=resnet_tiny_digits", f"teacher={teacher}"]
    result = CliRunner().invoke(main, ["train", "classify", *keys, "--out", str(tmp_path / "student")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "student" / "model.pt").is_file()
