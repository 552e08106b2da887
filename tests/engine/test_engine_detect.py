"""The detection task (visionkit.engine.detect): recipe checks, run folder, resume, pretrained backbones,
frozen stages, time budget, TensorBoard, model files, evaluation over processes."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import torch

from visionkit.engine.config import load_recipe
from visionkit.engine.detect import (
    DetectRecipe,
    build_datasets,
    build_detector,
    evaluate_detector,
    load_detector,
    resolve_device,
    train_detector,
)
from visionkit.engine.detect.recipe import recipe_from_overrides
from visionkit.errors import CheckpointError, ConfigError, DatasetError
from visionkit.models import create_model

#: a run that takes a few seconds: 8 tiny images, 2 steps per epoch, one thread (bit-reproducible)
TINY = dict(num_train=8, num_val=4, image_size=64, batch_size=4, warmup_steps=1, fpn_channels=16,
            head_convs=1, threads=1, progress=False, tensorboard=False)  # fmt: skip


def quiet(_: str) -> None:
    return None


def tiny(**changes: typing.Any) -> DetectRecipe:
    return DetectRecipe(**{**TINY, **changes})


# --------------------------------------------------------------------------------------------- the recipe
INVALID = {
    "model": "retinanet_resnet9000", "data": " ", "data_format": "xml", "num_train": 0, "num_val": -1,
    "num_crowded": -2, "image_size": 16, "min_size": -1, "max_size": -5, "epochs": 0, "time_limit": -1.0,
    "batch_size": 0, "optimizer": "lbfgs", "lr": float("nan"), "momentum": 1.0, "weight_decay": -0.1,
    "warmup_steps": -1, "clip_norm": 0.0, "ema_decay": 1.0, "hflip": 1.5, "scale_jitter": (1.5, 0.5),
    "mosaic": -0.1, "width_multiplier": 0.35, "fpn_channels": 0, "head_convs": 0,
    "representation_size": 64, "anchor_sizes": (0.0, 1.0), "box_loss": "l2", "roi_op": "warp",
    "refine_anchors": "yes", "negative_filtering": 1,
    "score_threshold": 1.0, "nms_method": "fast",
    "nms_threshold": 1.5, "soft_nms_sigma": 0.0, "detections_per_image": 0, "device": "gpu", "amp": "yes",
    "channels_last": 2, "backbone_weights": 3, "freeze_at": 5, "eval_every": 0, "patience": -1,
    "resume": 7, "tensorboard": "no", "val_data": "val/", "crowded": "yes", "on_corrupt": "ignore",
    "seed": 1.5, "workers": -1, "threads": -1, "progress": "yes",
    "anchors": (10.0, 13.0, 16.0), "anchor_kmeans": "yes", "fusion": "add", "ignore_threshold": 1.5,
    "objectness_prior": 1.0, "xy_loss": "l2",
    "class_activation": "tanh", "anchor_count": -1, "assign_threshold": 1.5, "fpn": "yes",
    "neck_widths": (8, 8), "scales": 2,
    "letterbox": "yes", "multiscale": (160, 96), "multiscale_every": 0,
}  # fmt: skip


def test_every_recipe_field_has_an_invalid_example() -> None:
    assert set(INVALID) == {field.name for field in dataclasses.fields(DetectRecipe)}


@pytest.mark.parametrize("key", sorted(INVALID))
def test_an_invalid_value_of_any_field_is_a_config_error_naming_it(key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}="):
        DetectRecipe(**{key: INVALID[key]})


def test_close_model_names_are_suggested_and_resolve_device_lists_what_exists() -> None:
    with pytest.raises(ConfigError, match="did you mean retinanet_resnet50_fpn"):
        DetectRecipe(model="retinanet_resnet5_fpn")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device='cuda': not available on this machine; available: cpu"):
            resolve_device("cuda")


def test_resume_alone_takes_the_runs_recipe(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(
        json.dumps({"recipe": "DetectRecipe", **dataclasses.asdict(tiny(epochs=3))})
    )
    assert recipe_from_overrides([f"resume={run}"]).epochs == 3
    with pytest.raises(ConfigError, match="not a run folder"):
        recipe_from_overrides([f"resume={tmp_path / 'nothing'}"])


# ------------------------------------------------------------------------------------------------ the run
def test_a_run_writes_its_folder_and_its_model_reproduces_its_metrics(tmp_path: Path) -> None:
    metrics = train_detector(tiny(epochs=2, ema_decay=0.9), tmp_path / "run", log=quiet)
    run = tmp_path / "run"
    for name in ("config.json", "label_map.json", "log.csv", "steps.csv", "best.pt", "last.pt", "model.pt",
                 "metrics.json"):  # fmt: skip
        assert (run / name).is_file(), name
    assert metrics["steps"] == 4 and metrics["epochs"] == 2
    assert json.loads((run / "metrics.json").read_text())["AP"] == metrics["AP"]
    assert load_recipe(DetectRecipe, run / "config.json") == tiny(epochs=2, ema_decay=0.9)
    detector, label_map = load_detector(run / "last.pt")
    data = build_datasets(tiny())
    again = evaluate_detector(detector, data.val, label_map.num_classes).metrics
    assert again["AP"] == metrics["AP"]  # last.pt holds the (EMA) weights evaluated at the end: same numbers
    assert len((run / "steps.csv").read_text().splitlines()) == 1 + 4
    # every builder argument is saved, defaults included: a later change of a default cannot break the file
    import inspect

    from visionkit.models import get_model_builder

    saved = torch.load(run / "model.pt", weights_only=True)["arguments"]
    assert set(saved) == set(inspect.signature(get_model_builder("retinanet_plain_fpn")).parameters)


def test_time_limit_stops_cleanly_then_evaluates_and_saves(tmp_path: Path) -> None:
    start = time.perf_counter()
    metrics = train_detector(tiny(epochs=1000, time_limit=2.0), tmp_path / "run", log=quiet)
    assert metrics["stopped_by_time_limit"] and metrics["epochs"] < 1000
    assert time.perf_counter() - start < 120
    assert (tmp_path / "run" / "model.pt").is_file() and "AP" in metrics


def test_best_model_keeps_the_best_ap_and_stops_after_patience() -> None:
    from types import SimpleNamespace

    from visionkit.engine.detect.train import BestModel

    saved: list[str] = []
    hook = BestModel(saved.append, patience=2)
    hook.trainer = SimpleNamespace(history=[], epoch=0, should_stop=False)
    for epoch, ap in enumerate([0.2, 0.5, None, 0.4, 0.5, 0.1], start=1):
        hook.trainer.epoch = epoch
        hook.trainer.history.append({} if ap is None else {"AP": ap})
        hook.after_epoch()
        if hook.trainer.should_stop:
            break
    # 0.5 at epoch 2 is the best; an epoch without evaluation counts for nothing; equal is not better
    assert (hook.best, hook.best_epoch, epoch, saved) == (0.5, 2, 5, ["best.pt", "best.pt"])


def test_tensorboard_event_files_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    train_detector(tiny(epochs=1, tensorboard=True), tmp_path / "run", log=quiet)
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_an_existing_run_folder_is_not_overwritten_and_resume_checks_the_recipe(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from visionkit.cli import main

    run = tmp_path / "run"
    train_detector(tiny(epochs=1), run, log=quiet)
    keys = [f"{k}={v}" for k, v in TINY.items()] + ["epochs=1"]
    result = CliRunner().invoke(main, ["train", "detect", *keys, "--out", str(run)])
    assert result.exit_code == 2 and "already holds a run" in result.output
    result = CliRunner().invoke(main, ["train", "detect", f"resume={run}", "lr=0.5"])
    assert result.exit_code == 2 and "differs from the run's in lr" in result.output
    assert "Traceback" not in result.output


def _cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "visionkit.cli.train", "detect", *arguments]


@pytest.mark.slow
def test_kill_9_then_resume_ends_exactly_like_an_uninterrupted_run(tmp_path: Path) -> None:
    recipe = tiny(epochs=4, ema_decay=0.9, num_train=16)
    keys = [f"{k}={v}" for k, v in dataclasses.asdict(recipe).items() if getattr(DetectRecipe, k) != v]
    straight = train_detector(recipe, tmp_path / "straight", log=quiet)
    run = tmp_path / "killed"
    process = subprocess.Popen(
        _cli(*keys, "--out", str(run)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 600
    while not list((run / "checkpoints").glob("checkpoint_*.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "metrics.json").exists(), "killed too late: the run had finished"
    result = subprocess.run(_cli(f"resume={run}"), capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    resumed = json.loads((run / "metrics.json").read_text())
    for key in ("AP", "AP50", "AP75", "VOC07_mAP", "VOC12_mAP", "best_AP", "steps", "epochs"):
        assert resumed[key] == straight[key], key  # same arithmetic in the same order: bit-identical
    weights = torch.load(run / "last.pt", weights_only=True)["state_dict"]
    expected = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], expected[k]) for k in expected)


def test_resume_falls_back_past_a_truncated_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_detector(tiny(epochs=2), run, log=quiet)
    newest = sorted((run / "checkpoints").glob("checkpoint_*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])
    (run / "metrics.json").unlink()
    messages: list[str] = []
    with pytest.warns(RuntimeWarning, match=r"checkpoint_00000004\.pt is truncated"):
        metrics = train_detector(dataclasses.replace(tiny(epochs=2), resume=str(run)), log=messages.append)
    assert any("checkpoint_00000002.pt" in m for m in messages)  # the epoch-1 checkpoint, after 2 steps
    assert metrics["steps"] == 4


def test_a_truncated_or_foreign_model_file_is_named(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_detector(tiny(epochs=1), run, log=quiet)
    broken = tmp_path / "broken.pt"
    broken.write_bytes((run / "model.pt").read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"broken\.pt"):
        load_detector(broken)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match=r"foreign.pt.*not a visionkit detector"):
        load_detector(foreign)
    with pytest.raises(ConfigError, match=r"nms_sigma: model 'retinanet_plain_fpn' has no such option"):
        load_detector(run / "model.pt", nms_sigma=0.3)


# ------------------------------------------------------------------------ pretrained backbones and freezing
def test_backbone_weights_load_strictly_and_other_architectures_are_named(tmp_path: Path) -> None:
    classifier = create_model("mobilenet_v2", width_multiplier=0.35, num_classes=10)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(classifier.state_dict(), path)  # a torchvision-format classification checkpoint
    recipe = tiny(model="retinanet_mobilenet_v2_fpn", width_multiplier=0.35, backbone_weights=str(path))
    detector, _ = build_detector(recipe, num_classes=3)
    for name, value in detector.backbone.state_dict().items():
        assert torch.equal(value, classifier.state_dict()[name]), name
    wider = tmp_path / "wider.pth"
    torch.save(create_model("mobilenet_v2", width_multiplier=0.5).state_dict(), wider)
    with pytest.raises(
        CheckpointError,
        match=r"different shapes \(features\.2\.conv\.2\.weight: \(16, 48, 1, 1\) in the file, "
        r"\(8, 48, 1, 1\) in the model",
    ):
        build_detector(dataclasses.replace(recipe, backbone_weights=str(wider)), num_classes=3)
    with pytest.raises(CheckpointError, match="no such file"):
        build_detector(
            dataclasses.replace(recipe, backbone_weights=str(tmp_path / "none.pth")), num_classes=3
        )


def test_freeze_at_freezes_the_stem_and_stages_and_training_leaves_them_unchanged(tmp_path: Path) -> None:
    from visionkit.nn.norm import FrozenBatchNorm2d

    detector, _ = build_detector(tiny(freeze_at=2), num_classes=3)
    stages = detector.backbone.stages()
    assert all(not p.requires_grad for stage in stages[:3] for p in stage.parameters())
    assert all(p.requires_grad for stage in stages[3:] for p in stage.parameters())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in detector.backbone.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in detector.backbone.modules())
    run = tmp_path / "run"
    train_detector(tiny(epochs=1, freeze_at=2), run, log=quiet)  # builds after torch.manual_seed(seed)
    torch.manual_seed(0)
    fresh, _ = build_detector(tiny(freeze_at=2), num_classes=3)
    trained, _ = load_detector(run / "last.pt")
    for part in ("stem", "blocks.0", "blocks.1"):  # frozen: bit for bit the initial weights
        for name, value in trained.backbone.get_submodule(part).state_dict().items():
            assert torch.equal(value, fresh.backbone.get_submodule(part).state_dict()[name]), (part, name)
    changed = [not torch.equal(v, fresh.backbone.blocks[3].state_dict()[k])
               for k, v in trained.backbone.blocks[3].state_dict().items()]  # fmt: skip
    assert any(changed)


# ------------------------------------------------------------------------------------- data and devices
def test_file_datasets_are_detected_and_scanned(tmp_path: Path) -> None:
    from visionkit.data.shapes import ShapesDataset, export_shapes

    written = export_shapes(ShapesDataset(5, seed=4), tmp_path, ("coco", "voc", "yolo"))
    for kind, path in written.items():
        data = build_datasets(tiny(data=str(path)))
        assert len(data.train) == 5 and data.scan["objects"] > 0, kind
    with pytest.raises(DatasetError, match="no such file or folder"):
        build_datasets(tiny(data=str(tmp_path / "missing")))


def test_mosaic_and_scale_jitter_keep_valid_targets() -> None:
    data = build_datasets(tiny(mosaic=1.0, scale_jitter=(0.5, 1.5)))
    torch.manual_seed(0)
    for index in range(len(data.train)):
        image, target = data.train[index]
        assert image.shape[1] <= 64 and image.shape[2] <= 64
        boxes = target["boxes"]
        assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
        assert bool(
            (boxes >= 0).all()
            and (boxes[:, 2] <= image.shape[2]).all()
            and (boxes[:, 3] <= image.shape[1]).all()
        )
        assert target["labels"].shape[0] == boxes.shape[0]


def test_amp_and_channels_last_train_on_the_cpu(tmp_path: Path) -> None:
    metrics = train_detector(tiny(epochs=1, amp=True, channels_last=True), tmp_path / "run", log=quiet)
    assert metrics["steps"] == 2 and metrics["AP"] >= 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_amp_run(tmp_path: Path) -> None:  # pragma: no cover - GPU machines only
    metrics = train_detector(tiny(epochs=1, amp=True, device="cuda"), tmp_path / "run", log=quiet)
    assert metrics["steps"] == 2


@pytest.mark.xdist_group("ddp")  # one multi-process run at a time: they share ports and cores
@pytest.mark.slow
def test_two_process_gloo_run_writes_one_folder_and_gathers_the_evaluation(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from visionkit.cli import main

    run = tmp_path / "run"
    keys = [f"{k}={v}" for k, v in TINY.items()] + ["epochs=2", "hflip=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = CliRunner(env=env).invoke(main, ["train", "detect", *keys, "--nproc", "2", "--out", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["steps"] == 4  # global batch 4 = 2 processes x 2 images
    detector, label_map = load_detector(run / "last.pt")
    # each rank predicted its 2 images in one batch of 2; one process in batches of 2 as well (same kernels,
    # each image's arithmetic independent of its batch neighbours): the same detections, the same numbers
    val = build_datasets(tiny()).val
    single = evaluate_detector(detector, val, label_map.num_classes, batch_size=2).metrics
    assert single["AP"] == metrics["AP"]


def test_fpn_false_trains_a_single_level_retinanet_whose_file_reloads_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^fpn=False: model 'fasterrcnn_plain_fpn' has no such option"):
        tiny(model="fasterrcnn_plain_fpn", fpn=False)
    assert recipe_from_overrides(["fpn=false"]).fpn is False
    metrics = train_detector(tiny(epochs=1, fpn=False), tmp_path / "single", log=quiet)
    assert metrics["steps"] == 2
    detector, _ = load_detector(tmp_path / "single" / "model.pt")
    assert detector.feature_names == ["p5"] and detector.anchor_generator.strides == (32,)


def test_an_option_value_the_model_refuses_leaves_no_run_folder(tmp_path: Path) -> None:
    """`box_loss=l1` is a valid recipe value (RetinaNet's) that YOLOv3's builder refuses: the ConfigError
    comes before anything is written, so the same --out can be used again at once."""
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"box_loss='l1': expected one of .* for YOLOv3"):
        train_detector(
            tiny(model="yolov3_plain", box_loss="l1", fpn_channels=None, head_convs=None), run, log=quiet
        )
    assert not run.exists()
    train_detector(tiny(model="yolov3_plain", epochs=1, fpn_channels=None, head_convs=None), run, log=quiet)
    assert (run / "config.json").exists()


def test_a_foreign_weights_file_is_one_line_naming_it(tmp_path: Path) -> None:
    """torch's weights-only refusal is a dozen lines of advice; the error is one line with the reason."""
    from visionkit.engine.classify import load_classifier
    from visionkit.engine.segment import load_segmenter

    foreign = tmp_path / "bad.pt"
    foreign.write_bytes(b"garbage\n")
    for load in (load_detector, load_segmenter, load_classifier):
        with pytest.raises(CheckpointError, match=r"bad\.pt") as raised:
            load(foreign)
        assert "\n" not in str(raised.value) and len(str(raised.value)) < 400, str(raised.value)
