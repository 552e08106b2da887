"""The segmentation task (visionkit.engine.segment): recipe checks, the run folder, exact resume, time
budget, EMA, AMP, TensorBoard, the loss over void pixels, model files, VOC and COCO data."""

from __future__ import annotations

import dataclasses
import json
import shutil
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from visionkit.data.segmentation import ShapesSegmentation, export_shapes_segmentation
from visionkit.data.shapes import ShapesConfig
from visionkit.engine.config import load_recipe
from visionkit.engine.segment import (
    SegmentRecipe,
    build_datasets,
    evaluate_segmenter,
    load_segmenter,
    pixel_cross_entropy,
    recipe_from_overrides,
    save_segmenter,
    train_segmenter,
)
from visionkit.errors import CheckpointError, ConfigError, DatasetError, NonFiniteLossError
from visionkit.models import create_model

COCO128 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "coco128"
COCO128_JSON = COCO128 / "annotations" / "instances_train2017_first128.json"

#: a run of a few seconds: 8 images of 64², 2 steps per epoch, a narrow FCN-8s, one thread
TINY = dict(num_train=8, num_val=4, image_size=64, batch_size=4, warmup_steps=1, widths=(4, 8, 8, 16, 16),
            threads=1, progress=False, tensorboard=False)  # fmt: skip


def quiet(_: str) -> None:
    return None


def tiny(**changes: typing.Any) -> SegmentRecipe:
    return SegmentRecipe(**{**TINY, **changes})


INVALID = {
    "model": "fcn8s_resnet9000", "data": "VOC2012", "val_data": "val/", "image_set": "train",
    "val_image_set": "val", "image_root": "images", "num_train": 0, "num_val": -1, "image_size": 16,
    "crop_size": -1, "scale_jitter": (2.0, 1.0), "hflip": 1.5, "epochs": 0, "time_limit": -1.0,
    "batch_size": 0, "optimizer": "lbfgs", "lr": 0.0, "momentum": 1.0, "weight_decay": 2.0,
    "warmup_steps": -1, "clip_norm": 0.0, "ema_decay": 1.0, "alignment": "torch", "learn_upsampling": "yes",
    "width_multiplier": 0.5, "widths": (4, 8), "dropout": 1.0, "boundary_width": 0, "device": "gpu",
    "amp": "yes", "channels_last": 2, "backbone_weights": 3, "eval_every": 0, "patience": -1, "resume": 7,
    "tensorboard": "no", "on_corrupt": "ignore", "seed": 1.5, "workers": -1, "threads": -1, "progress": "yes",
}  # fmt: skip


def test_every_recipe_field_has_an_invalid_example() -> None:
    assert set(INVALID) == {field.name for field in dataclasses.fields(SegmentRecipe)}


@pytest.mark.parametrize("key", sorted(INVALID))
def test_an_invalid_value_of_any_field_is_a_config_error_naming_it(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}="):
        SegmentRecipe(**{key: INVALID[key]})


def test_model_options_and_data_forms_are_checked() -> None:
    with pytest.raises(ConfigError, match="not a segmentation model; did you mean fcn8s_resnet50"):
        SegmentRecipe(model="fcn8s_resnet5")
    with pytest.raises(ConfigError, match="alignment='caffe': model 'fcn8s_small' has no such option"):
        SegmentRecipe(alignment="caffe")
    assert SegmentRecipe(model="fcn8s_vgg16", alignment="caffe").alignment == "caffe"
    with pytest.raises(ConfigError, match="image_root='x': expected empty unless data=coco"):
        SegmentRecipe(data="voc:somewhere", image_root="x")
    with pytest.raises(DatasetError, match="data='voc:/no/such/folder': no such folder"):
        build_datasets(SegmentRecipe(data="voc:/no/such/folder"))


def test_resume_alone_takes_the_runs_recipe(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(
        json.dumps({"recipe": "SegmentRecipe", **dataclasses.asdict(tiny(epochs=3))})
    )
    assert recipe_from_overrides([f"resume={run}"]).epochs == 3


def test_pixel_loss_averages_over_non_void_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    masks = torch.randint(0, 3, (2, 4, 5))
    masks[0, 0] = 255
    # ATen's nll_loss2d sums in one loop for both reductions and divides by the count of non-void pixels
    # for "mean"; ours divides its "sum" by the same count: the same operations, so exactly equal
    expected = F.cross_entropy(logits, masks, ignore_index=255)
    assert torch.equal(pixel_cross_entropy(logits, masks), expected)
    void = pixel_cross_entropy(logits, torch.full((2, 4, 5), 255))
    void.backward()
    assert void.item() == 0.0 and logits.grad is not None  # nothing to learn from: 0, not NaN
    with pytest.raises(DatasetError, match=r"labels \[3, 7\] outside 0\.\.2"):
        pixel_cross_entropy(logits, torch.tensor([3, 7, 0, 1, 2] * 8).reshape(2, 4, 5))


def test_a_run_writes_its_folder_and_its_model_reproduces_its_metrics(tmp_path: Path) -> None:
    run = tmp_path / "run"
    metrics = train_segmenter(tiny(epochs=2, ema_decay=0.9), run, log=quiet)
    for name in ("config.json", "label_map.json", "log.csv", "steps.csv", "best.pt", "last.pt", "model.pt",
                 "metrics.json"):  # fmt: skip
        assert (run / name).is_file(), name
    assert metrics["steps"] == 4 and metrics["epochs"] == 2 and 0 <= metrics["mIoU"] <= 1
    assert json.loads((run / "metrics.json").read_text())["mIoU"] == metrics["mIoU"]
    assert load_recipe(SegmentRecipe, run / "config.json") == tiny(epochs=2, ema_decay=0.9)
    model, label_map = load_segmenter(run / "last.pt")
    assert label_map.names == ("background", "circle", "square", "triangle")
    again = evaluate_segmenter(model, build_datasets(tiny()).val, label_map.names).metrics
    assert again["mIoU"] == metrics["mIoU"] and again["boundary_mIoU"] == metrics["boundary_mIoU"]
    header = (run / "log.csv").read_text().splitlines()[0]
    assert "mIoU" in header and "boundary_mIoU" in header and "IoU/triangle" in header


def test_resume_from_the_first_epoch_ends_exactly_like_the_uninterrupted_run(tmp_path: Path) -> None:
    recipe = tiny(epochs=2, ema_decay=0.9)
    straight = train_segmenter(recipe, tmp_path / "straight", log=quiet)
    run = tmp_path / "interrupted"
    shutil.copytree(tmp_path / "straight", run)
    checkpoints = sorted((run / "checkpoints").glob("checkpoint_*.pt"))
    checkpoints[-1].unlink()  # as if killed during epoch 2
    for name in ("metrics.json", "model.pt", "last.pt"):
        (run / name).unlink()
    resumed = train_segmenter(dataclasses.replace(recipe, resume=str(run)), log=quiet)
    for key in ("mIoU", "boundary_mIoU", "pixel_accuracy", "best_mIoU", "steps", "epochs"):
        assert resumed[key] == straight[key], key  # same arithmetic in the same order: bit-identical
    weights = torch.load(run / "last.pt", weights_only=True)["state_dict"]
    expected = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    with pytest.raises(ConfigError, match=r"differs from the run's in lr"):
        train_segmenter(dataclasses.replace(recipe, resume=str(run), lr=0.5), log=quiet)


def test_time_limit_amp_channels_last_and_tensorboard(tmp_path: Path) -> None:
    metrics = train_segmenter(tiny(epochs=1000, time_limit=2.0), tmp_path / "budget", log=quiet)
    assert metrics["stopped_by_time_limit"] and metrics["epochs"] < 1000 and "mIoU" in metrics
    assert (tmp_path / "budget" / "model.pt").is_file()
    metrics = train_segmenter(tiny(epochs=1, amp=True, channels_last=True), tmp_path / "amp", log=quiet)
    assert np.isfinite(metrics["final"]["train_loss"])
    pytest.importorskip("tensorboard")
    train_segmenter(tiny(epochs=1, tensorboard=True), tmp_path / "tb", log=quiet)
    events = list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_a_non_finite_loss_stops_naming_the_iteration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import visionkit.engine.segment.train as train_module

    monkeypatch.setattr(
        train_module, "pixel_cross_entropy", lambda logits, masks: logits.sum() * float("nan")
    )
    with pytest.raises(NonFiniteLossError, match=r"iteration 0 .*loss=nan.*no checkpoint yet"):
        train_segmenter(tiny(epochs=1), tmp_path / "run", log=quiet)


def test_model_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        load_segmenter(tmp_path / "missing.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"broken\.pt.*not a readable"):
        load_segmenter(tmp_path / "broken.pt")
    torch.save({"format": "visionkit-detector", "model": "x"}, tmp_path / "detector.pt")
    with pytest.raises(CheckpointError, match=r"not a visionkit segmenter .*visionkit-detector"):
        load_segmenter(tmp_path / "detector.pt")
    from visionkit.data.datasets import LabelMap

    model = create_model("fcn8s_small", num_classes=3, widths=(4, 8, 8, 16, 16))
    arguments = {"num_classes": 3, "widths": (4, 8, 8, 16, 16)}
    label_map = LabelMap((0, 1, 2), ("bg", "a", "b"))
    path = save_segmenter(
        tmp_path / "m.pt", model, name="fcn8s_small", arguments=arguments, label_map=label_map
    )
    with pytest.raises(ConfigError, match="alignment: model 'fcn8s_small' has no such option"):
        load_segmenter(path, alignment="caffe")
    loaded, _ = load_segmenter(path)
    expected = model.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in loaded.state_dict().items())


def test_backbone_weights_load_into_the_encoder(tmp_path: Path) -> None:
    torch.save(create_model("mobilenet_v2", width_multiplier=0.35).state_dict(), tmp_path / "m.pth")
    recipe = tiny(
        model="fcn8s_mobilenet_v2", width_multiplier=0.35, widths=(), backbone_weights=str(tmp_path / "m.pth")
    )
    from visionkit.engine.segment import build_segmenter

    model, _ = build_segmenter(recipe, 4)
    saved = torch.load(tmp_path / "m.pth", weights_only=True)
    assert torch.equal(model.encoder.backbone.features[0][0].weight, saved["features.0.0.weight"])
    with pytest.raises(CheckpointError, match="backbone_weights"):
        build_segmenter(dataclasses.replace(recipe, backbone_weights=str(tmp_path / "none.pth")), 4)


def test_a_voc_folder_trains_with_crops_and_jitter_and_validates_on_its_split(tmp_path: Path) -> None:
    config = ShapesConfig(image_size=48, min_size=8, max_size=24)
    root = export_shapes_segmentation(ShapesSegmentation(6, seed=2, config=config), tmp_path / "voc", "train")
    export_shapes_segmentation(ShapesSegmentation(3, seed=9, config=config), tmp_path / "val", "val")
    recipe = tiny(data=f"voc:{root}", image_set="train", val_data=f"voc:{tmp_path / 'val'}", crop_size=40,
                  scale_jitter=(0.8, 1.2), epochs=1)  # fmt: skip
    data = build_datasets(recipe)
    assert (len(data.train), len(data.val)) == (6, 3) and data.label_map.names[0] == "background"
    image, mask = data.train[0]
    assert image.shape == (3, 40, 40) and mask.shape == (40, 40)
    metrics = train_segmenter(recipe, tmp_path / "run", log=quiet)
    assert metrics["steps"] == 2
    (tmp_path / "val" / "classes.txt").write_text("background\ncat\n")
    with pytest.raises(ConfigError, match=r"its classes .* differ"):
        build_datasets(recipe)


@pytest.mark.slow
@pytest.mark.skipif(not COCO128_JSON.is_file(), reason="../shared/data/coco128 not present")
def test_coco128_trains_one_epoch_on_rasterised_masks(tmp_path: Path) -> None:
    """The first 16 coco128 images (real polygons and crowd RLEs), their 80 categories kept."""
    data = json.loads(COCO128_JSON.read_text())
    keep = {image["id"] for image in data["images"][:16]}
    data["images"] = data["images"][:16]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    (tmp_path / "first16.json").write_text(json.dumps(data))
    recipe = tiny(data=f"coco:{tmp_path / 'first16.json'}", image_root=str(COCO128 / "images" / "train2017"),
                  crop_size=64, batch_size=8, epochs=1)  # fmt: skip
    metrics = train_segmenter(recipe, tmp_path / "run", log=quiet)
    assert metrics["steps"] == 2 and np.isfinite(metrics["final"]["train_loss"])
    names = json.loads((tmp_path / "run" / "label_map.json").read_text())["labels"]
    assert len(names) == 81 and names[0]["name"] == "background" and names[80]["category_id"] == 90


def test_model_format_tells_segmenters_from_detectors(tmp_path: Path) -> None:
    from visionkit.engine.segment import FORMAT, model_format

    torch.save({"format": "visionkit-detector"}, tmp_path / "detector.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    assert model_format(tmp_path / "detector.pt") == "visionkit-detector"
    assert model_format(tmp_path / "broken.pt") is None and model_format(tmp_path / "missing.pt") is None
    from visionkit.data.datasets import LabelMap

    model = create_model("fcn8s_small", num_classes=2, widths=(4, 8, 8, 16, 16))
    label_map = LabelMap((0, 1), ("bg", "a"))
    arguments = {"num_classes": 2, "widths": (4, 8, 8, 16, 16)}
    save_segmenter(tmp_path / "m.pt", model, name="fcn8s_small", arguments=arguments, label_map=label_map)
    assert model_format(tmp_path / "m.pt") == FORMAT
