"""darknet's letterbox and multi-scale training through the detection task: recipe keys, the scale saved in
``model.pt`` (eval detect, predict, compress and export load through ``load_detector``), exact resume."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import torch

from visionkit.engine.detect import DetectRecipe, load_detector, save_detector, train_detector
from visionkit.engine.detect.model import build_detector, input_scale, with_input_scale
from visionkit.engine.detect.recipe import recipe_from_overrides
from visionkit.errors import CheckpointError, ConfigError
from visionkit.models import create_model
from visionkit.models.detectors import ResizedInput

#: seconds: 8 images of 64², 2 steps per epoch, one thread (bit-reproducible)
TINY = dict(num_train=8, num_val=4, image_size=64, batch_size=4, warmup_steps=1, fpn_channels=16,
            head_convs=1, threads=1, progress=False, tensorboard=False, min_size=64, letterbox=True,
            multiscale=(32, 96), multiscale_every=1)  # fmt: skip


def quiet(_: str) -> None:
    return None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"letterbox": True}, "^letterbox=True: expected false unless min_size > 0"),
        (
            {"letterbox": True, "min_size": 64, "max_size": 96},
            "^letterbox=True: expected false with max_size",
        ),
        ({"multiscale": (32, 96)}, r"^multiscale=\(32, 96\): expected .* with min_size > 0"),
        ({"multiscale": (40, 96), "min_size": 64}, r"^multiscale=\(40, 96\): expected .*multiples of 32"),
        ({"multiscale": (0, 96), "min_size": 64}, r"^multiscale=\(0, 96\)"),
        ({"multiscale": (32,), "min_size": 64}, r"^multiscale=\(32,\)"),
        ({"multiscale_every": -3}, "^multiscale_every=-3: expected an integer >= 1"),
    ],
)
def test_bad_scale_keys_are_config_errors_naming_them(changes: dict[str, typing.Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DetectRecipe(**changes)


def test_keys_from_the_command_line_and_the_saved_scale() -> None:
    recipe = recipe_from_overrides(
        ["min_size=128", "letterbox=true", "multiscale=96,160", "multiscale_every=5"]
    )
    assert (recipe.letterbox, recipe.multiscale, recipe.multiscale_every) == (True, (96, 160), 5)
    scale = input_scale(dataclasses.replace(recipe, seed=3))
    assert scale == {"min_size": 128, "max_size": 0, "letterbox": True, "multiscale": [96, 160],
                     "multiscale_every": 5, "seed": 3}  # fmt: skip
    model = with_input_scale(create_model("yolov3_plain", num_classes=3), scale)
    assert isinstance(model, ResizedInput) and model.letterbox and model.multiscale == (96, 160)
    assert (model.multiscale_every, model.seed, model.min_size, model.max_size) == (5, 3, 128, None)
    assert input_scale(DetectRecipe(min_size=64, max_size=96)) == [64, 96]  # the plain resize: as before
    with pytest.raises(CheckpointError, match="input_scale="):
        with_input_scale(create_model("yolov3_plain", num_classes=3), {"min_size": 64})


def test_a_letterbox_model_file_loads_and_predicts_the_same_boxes(tmp_path: Path) -> None:
    from visionkit.data.datasets import LabelMap

    recipe = DetectRecipe(
        model="yolov3_plain", min_size=96, letterbox=True, multiscale=(64, 128), score_threshold=0.0
    )
    torch.manual_seed(0)
    detector, arguments = build_detector(recipe, num_classes=3)
    labels = LabelMap((0, 1, 2), ("circle", "square", "triangle"))
    path = save_detector(tmp_path / "model.pt", detector, model=recipe.model, arguments=arguments,
                         label_map=labels, scale=input_scale(recipe))  # fmt: skip
    loaded, _ = load_detector(path)
    assert isinstance(loaded, ResizedInput) and loaded.letterbox and not loaded.training
    images = [torch.rand(3, 70, 130), torch.rand(3, 120, 50)]
    with torch.no_grad():
        want = detector.eval()(images)
        got = loaded(images)
    for a, b in zip(got, want, strict=True):
        assert a["boxes"].numel() > 0
        assert all(torch.equal(a[key], b[key]) for key in ("boxes", "scores", "labels"))
        assert bool((a["boxes"][:, 3] <= 120).all())


def test_a_multiscale_run_resumes_exactly_and_its_model_loads(tmp_path: Path) -> None:
    recipe = DetectRecipe(**TINY, epochs=2)
    straight = train_detector(recipe, tmp_path / "straight", log=quiet)
    run = tmp_path / "resumed"
    train_detector(recipe, run, log=quiet)
    newest = sorted((run / "checkpoints").glob("checkpoint_*.pt"))[-1]
    newest.unlink()  # back to the end of epoch 1: the second epoch is trained again
    (run / "metrics.json").unlink()
    resumed = train_detector(dataclasses.replace(recipe, resume=str(run)), log=quiet)
    assert resumed["steps"] == straight["steps"] == 4 and resumed["AP"] == straight["AP"]
    weights = torch.load(run / "last.pt", weights_only=True)["state_dict"]
    expected = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    saved = torch.load(run / "model.pt", weights_only=True)["input_scale"]
    assert saved["letterbox"] is True and saved["multiscale"] == [32, 96]
    model, _ = load_detector(run / "model.pt")
    assert isinstance(model, ResizedInput) and model.working_size() == 64


def test_the_onnx_runtime_of_a_letterbox_model_letterboxes_and_maps_back(tmp_path: Path) -> None:
    from visionkit.deploy.onnx import export_onnx, load_onnx_runtime
    from visionkit.models.detectors.resize import letterbox, letterbox_to_original

    torch.manual_seed(0)
    detector = create_model("retinanet_plain_fpn", num_classes=3, head_norm=None, score_threshold=0.0)
    scale = input_scale(DetectRecipe(min_size=64, letterbox=True, multiscale=(32, 96)))
    model = with_input_scale(detector, scale).eval()
    export_onnx(model.detector, tmp_path, example_size=(64, 64))
    runtime = load_onnx_runtime(model, tmp_path)  # as `predict --backend onnxruntime` builds it
    assert isinstance(runtime, ResizedInput) and runtime.letterbox and runtime.detector is not detector
    image = torch.rand(3, 40, 90)
    with torch.no_grad():
        found = runtime([image])[0]
        inner = runtime.detector([letterbox(image, {}, 64)[0]])[0]
    assert found["boxes"].numel() > 0
    assert torch.equal(found["boxes"], letterbox_to_original(inner["boxes"], 40, 90, 64))


def test_a_compressed_letterbox_detector_keeps_its_scale(tmp_path: Path) -> None:
    from visionkit.compress.detect import load_compressed_detector
    from visionkit.compress.run import CompressRecipe, compress_model

    run = tmp_path / "run"
    train_detector(DetectRecipe(**{**TINY, "multiscale": ()}, epochs=1), run, log=quiet)
    recipe = CompressRecipe(weights=str(run / "model.pt"), bits=4, finetune_epochs=0, latency_repeats=1)
    compress_model("share", recipe, tmp_path / "shared")
    for model in (load_compressed_detector(tmp_path / "shared" / "model.pt"),
                  load_detector(tmp_path / "shared" / "model.pt")[0]):  # fmt: skip
        assert isinstance(model, ResizedInput) and model.letterbox and model.min_size == 64
        found = model([torch.rand(3, 30, 80)])[0]
        assert bool((found["boxes"][:, 3] <= 30).all())
