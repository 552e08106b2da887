"""``visionkit export`` and ``visionkit predict --backend onnxruntime`` end to end, and their errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from visionkit.cli import main

TINY_DETECT = [
    *("model=retinanet_plain_fpn", "head_convs=1", "num_train=8", "num_val=4", "image_size=64", "epochs=1"),
    *("batch_size=4", "fpn_channels=16", "warmup_steps=1", "tensorboard=false"),
]


@pytest.fixture(scope="module")
def classifier(untrained_classifier: Path) -> Path:
    return untrained_classifier


def test_export_classifier_float_and_fused(classifier: Path, tmp_path: Path) -> None:
    out = tmp_path / "onnx"
    result = CliRunner().invoke(main, ["export", f"weights={classifier}", "format=onnx", "fuse=true",
                                       "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["kind"] == "classifier" and manifest["fused"] and (out / "model.onnx").is_file()
    from visionkit.deploy.onnx import load_onnx_runtime
    from visionkit.engine.classify import load_classifier

    model, _ = load_classifier(classifier)
    assert load_onnx_runtime(model, out)(torch.rand(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["format=onnx"], 2, "weights="),
        (["weights=W", "format=tflite"], 2, "format"),
        (["weights=W", "calib=kl", "int8=true"], 2, "calib"),
        (["weights=W", "max_drop=2"], 2, "max_drop"),
        (["weights=W", "int8=true", "calib_images=/no/such/folder"], 2, "calib_images"),
        (["weights=W", "qat_epochs=1"], 2, "qat_epochs"),  # QAT is an int8 export
        (["weights=W", "int8=true", "qat_epochs=-1"], 2, "qat_epochs"),
        (["weights=W", "precision=fp16"], 2, "precision"),  # format=tensorrt only
        (["weights=W", "format=tensorrt", "activations=uint8"], 2, "activations"),  # zero point 0 only
        (["weights=W", "format=tensorrt", "nms=graph"], 2, "nms"),
        (["weights=W", "format=tensorrt", "max_batch=0"], 2, "max_batch"),
    ],
)
def test_export_usage_errors(classifier: Path, arguments: list[str], code: int, message: str) -> None:
    arguments = [a.replace("weights=W", f"weights={classifier}") for a in arguments]
    result = CliRunner().invoke(main, ["export", *arguments, "--out", "/tmp/visionkit-export-never"])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None and torch.cuda.is_available(),
    reason="TensorRT and a CUDA GPU are here: nothing is missing",
)
def test_tensorrt_without_tensorrt_is_one_error_line(classifier: Path, tmp_path: Path) -> None:
    """``format=tensorrt`` / ``predict --backend tensorrt`` where TensorRT or the GPU is missing: one
    ``Error:`` line naming what is missing and how to get it, exit 1, before any work (no file)."""
    out = tmp_path / "trt"
    result = CliRunner().invoke(
        main, ["export", f"weights={classifier}", "format=tensorrt", "--out", str(out)]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "Error: TensorRT engines need" in result.output and "pip install tensorrt" in result.output
    assert not out.exists() or not any(out.iterdir())
    from visionkit.data.datasets import LabelMap
    from visionkit.engine.detect import save_detector
    from visionkit.models import create_model

    arguments = {"num_classes": 2, "fpn_channels": 16, "head_convs": 1}
    weights = save_detector(
        tmp_path / "model.pt", create_model("retinanet_plain_fpn", **arguments), model="retinanet_plain_fpn",
        arguments=arguments, label_map=LabelMap((0, 1), ("a", "b")),
    )  # fmt: skip
    Image.new("RGB", (32, 32)).save(tmp_path / "image.png")
    (tmp_path / "export").mkdir()
    result = CliRunner().invoke(main, ["predict", str(tmp_path / "image.png"), f"weights={weights}",
                                       "--backend", "tensorrt", "--out", str(tmp_path / "p")])  # fmt: skip
    assert result.exit_code == 1 and "no TensorRT engines here" in result.output, result.output


def test_broken_calibration_image_is_named_and_nothing_is_written(classifier: Path, tmp_path: Path) -> None:
    folder = tmp_path / "calib"
    folder.mkdir()
    Image.new("L", (8, 8), 128).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"not a png")
    out = tmp_path / "o"
    result = CliRunner().invoke(
        main, ["export", f"weights={classifier}", "int8=true", f"calib_images={folder}", "--out", str(out)]
    )
    assert result.exit_code == 1 and "b.png" in result.output and "Traceback" not in result.output
    assert not (out / "model.onnx").exists()


def test_detector_calibration_folder_is_checked_before_any_work(tmp_path: Path) -> None:
    """A detector file without its run folder: the missing calib_images folder is what the error names."""
    from visionkit.data.datasets import LabelMap
    from visionkit.engine.detect import save_detector
    from visionkit.models import create_model

    arguments = {"num_classes": 2, "fpn_channels": 16, "head_convs": 1}
    detector = create_model("retinanet_plain_fpn", **arguments)
    weights = save_detector(
        tmp_path / "model.pt", detector, model="retinanet_plain_fpn", arguments=arguments,
        label_map=LabelMap((0, 1), ("a", "b")),
    )  # fmt: skip
    out = tmp_path / "o"
    result = CliRunner().invoke(
        main, ["export", f"weights={weights}", "int8=true", "calib_images=/no/such/folder", "--out", str(out)]
    )
    assert result.exit_code == 2 and "calib_images=/no/such/folder" in result.output, result.output
    assert "Traceback" not in result.output and not (out / "model.onnx").exists()


def test_export_int8_with_quantization_aware_training(classifier: Path, tmp_path: Path) -> None:
    """``qat_epochs=1``: one epoch of fake-quantized fine-tuning through the classify engine (its log in
    ``out/qat``), then the QDQ graph with the kept scales, gated as post-training int8 (opened here: the
    fixture's weights are random)."""
    out = tmp_path / "qat"
    keys = ["int8=true", "calib=minmax", "calib_count=64", "qat_epochs=1", "max_drop=1"]
    result = CliRunner().invoke(main, ["export", f"weights={classifier}", *keys, "--out", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["qat_epochs"] == 1 and manifest["int8"] and "accuracy_int8" in manifest
    assert (out / "model.onnx").is_file() and (out / "qat" / "log.csv").is_file()
    assert not (out / "qat" / "model.pt").exists()  # the fused state dict is not a loadable run model
    import onnx

    ops = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "Relu" not in ops


def test_detector_refuses_quantization_aware_training(tmp_path: Path) -> None:
    from visionkit.data.datasets import LabelMap
    from visionkit.engine.detect import save_detector
    from visionkit.models import create_model

    arguments = {"num_classes": 2, "fpn_channels": 16, "head_convs": 1}
    weights = save_detector(
        tmp_path / "model.pt", create_model("retinanet_plain_fpn", **arguments), model="retinanet_plain_fpn",
        arguments=arguments, label_map=LabelMap((0, 1), ("a", "b")),
    )  # fmt: skip
    result = CliRunner().invoke(
        main, ["export", f"weights={weights}", "int8=true", "qat_epochs=1", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "qat_epochs=1" in result.output and "classifiers" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o" / "model.onnx").exists()


def test_export_missing_weights_is_an_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["export", f"weights={tmp_path / 'none.pt'}", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "none.pt" in result.output and "Traceback" not in result.output


def test_export_corrupt_weights_is_one_line_of_no_task(tmp_path: Path) -> None:
    """A corrupt file is named as a model.pt, not as "a detector": export cannot know its task."""
    (tmp_path / "junk.pt").write_bytes(b"junk")
    result = CliRunner().invoke(
        main, ["export", f"weights={tmp_path / 'junk.pt'}", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert "junk.pt': not a readable visionkit model.pt (" in result.output
    assert "detector" not in result.output
    assert not any((tmp_path / "o").iterdir())  # the output folder is checked (made) first, and stays empty


@pytest.mark.slow
def test_export_detector_and_predict_with_onnxruntime(tmp_path: Path) -> None:
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(main, ["train", "detect", *TINY_DETECT, "--out", str(run), "--no-progress"])
    assert result.exit_code == 0, result.output
    weights = run / "model.pt"
    # int8: trunk and head quantized, calibrated on 4 training images, gated by COCO AP on the val images
    int8 = tmp_path / "int8"
    keys = ["int8=true", "calib=minmax", "calib_count=4", "max_drop=1", "image_size=64"]
    result = runner.invoke(main, ["export", f"weights={weights}", *keys, "--out", str(int8)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((int8 / "export.json").read_text())
    assert manifest["int8"] and set(manifest["parts"]) == {"trunk", "head"} and "AP_int8" in manifest
    assert set(manifest["int8_kernels"]) == {"trunk", "head"}  # each graph's kernels chosen by timing
    import onnx

    for part in manifest["parts"].values():
        ops = {node.op_type for node in onnx.load(str(int8 / part)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    result = runner.invoke(main, ["export", f"weights={weights}", "fuse=true", "image_size=64"])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "export" / "export.json").read_text())["kind"] == "retinanet"
    images = tmp_path / "images"
    images.mkdir()
    Image.effect_noise((64, 48), 60).convert("RGB").save(images / "a.png")
    outputs = {}
    for backend in ("torch", "onnxruntime", "int8"):
        out = tmp_path / backend
        engine = (
            ["--backend", "onnxruntime", "--onnx", str(int8)] if backend == "int8" else ["--backend", backend]
        )
        result = runner.invoke(
            main, ["predict", str(images), f"weights={weights}", *engine, "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        outputs[backend] = json.loads((out / "detections.json").read_text())
    # the same detections (the numbers agree within the derived bound of tests/deploy/test_deploy_onnx.py)
    assert [(d["image_id"], d["category_id"]) for d in outputs["torch"]] == [
        (d["image_id"], d["category_id"]) for d in outputs["onnxruntime"]
    ]
    nowhere = ["--onnx", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]
    result = runner.invoke(
        main, ["predict", str(images), f"weights={weights}", "--backend", "onnxruntime", *nowhere]
    )
    assert result.exit_code == 1 and "export.json" in result.output


def _saved_detector(name: str, folder: Path, **arguments) -> Path:
    """A detector's model.pt (random weights, head outputs spread so that scores have no near-ties)."""
    from visionkit.data.datasets import LabelMap
    from visionkit.engine.detect import save_detector
    from visionkit.models import create_model

    torch.manual_seed(0)
    detector = create_model(name, **arguments)
    with torch.no_grad():
        for module in getattr(detector, "head", torch.nn.Identity()).modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0, 0.05)
    names = tuple(f"c{i}" for i in range(arguments["num_classes"]))
    label_map = LabelMap(tuple(range(len(names))), names)
    return save_detector(folder / "model.pt", detector, model=name, arguments=arguments, label_map=label_map)


def _predict_both_backends(runner: CliRunner, images: Path, weights: Path, tmp_path: Path) -> dict[str, Path]:
    """`visionkit predict` of ``images`` with the torch and the onnxruntime backend: each output folder."""
    outs = {}
    for backend in ("torch", "onnxruntime"):
        outs[backend] = tmp_path / backend
        result = runner.invoke(main, ["predict", str(images), f"weights={weights}", "--backend", backend,
                                      "--out", str(outs[backend])])  # fmt: skip
        assert result.exit_code == 0, result.output
    return outs


@pytest.mark.parametrize(("name", "nms"), [("yolov3_plain", "outside"), ("yolov2_plain", "graph")])
def test_export_yolo_and_predict_with_onnxruntime(name: str, nms: str, tmp_path: Path) -> None:
    """YOLOv3 / YOLOv2 through the commands: trunk and head graphs (and with nms=graph the NMS graph), and
    `predict --backend onnxruntime` keeps the eager detections (same images and classes in the same order;
    their numbers are bounded in tests/deploy/test_deploy_onnx.py)."""
    runner = CliRunner()
    weights = _saved_detector(name, tmp_path, num_classes=2, score_threshold=0.2, detections_per_image=5)
    result = runner.invoke(main, ["export", f"weights={weights}", "image_size=96", f"nms={nms}"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "export" / "export.json").read_text())
    parts = {"trunk", "head"} | ({"nms"} if nms == "graph" else set())
    assert manifest["kind"] == "yolo" and set(manifest["parts"]) == parts and manifest["nms"] == nms
    images = tmp_path / "images"
    images.mkdir()
    Image.effect_noise((80, 56), 60).convert("RGB").save(images / "a.png")
    Image.effect_noise((40, 130), 60).convert("RGB").save(images / "b.png")
    outputs = {}
    for backend, out in _predict_both_backends(runner, images, weights, tmp_path).items():
        outputs[backend] = json.loads((out / "detections.json").read_text())
    assert outputs["torch"], "no detections to compare"
    result = runner.invoke(main, ["export", f"weights={weights}", "int8=true", "--out", str(tmp_path / "q")])
    assert result.exit_code == 1 and "int8=true is not supported for YOLO" in result.output, result.output
    key = [(d["image_id"], d["category_id"]) for d in outputs["torch"]]
    assert key == [(d["image_id"], d["category_id"]) for d in outputs["onnxruntime"]]


def test_export_segmenter_and_predict_with_onnxruntime(tmp_path: Path) -> None:
    """An FCN through the commands: one graph, `predict --backend onnxruntime` writes the class maps of the
    ONNX Runtime logits; they equal eager's wherever eager's two best logits are further apart than twice
    the largest logit difference between the runtimes (the only pixels where the arg-max could differ)."""
    from visionkit.data.datasets import LabelMap, read_image
    from visionkit.data.segmentation.masks import read_mask_png
    from visionkit.deploy.onnx import load_onnx_runtime
    from visionkit.engine.segment import save_segmenter
    from visionkit.models import create_model

    torch.manual_seed(0)
    model = create_model("fcn8s_small", num_classes=3).eval()
    with torch.no_grad():
        for module in model.modules():  # score layers are zero-initialized: give them weights
            if isinstance(module, torch.nn.Conv2d) and module.out_channels == 3:
                module.weight.normal_(0, 0.1)
    weights = save_segmenter(tmp_path / "model.pt", model, name="fcn8s_small", arguments={"num_classes": 3},
                             label_map=LabelMap((0, 1, 2), ("background", "a", "b")))  # fmt: skip
    runner = CliRunner()
    result = runner.invoke(main, ["export", f"weights={weights}", "image_size=48"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "export" / "export.json").read_text())
    assert manifest["kind"] == "segmenter" and set(manifest["parts"]) == {"model"}
    images = tmp_path / "images"
    images.mkdir()
    Image.effect_noise((70, 45), 60).convert("RGB").save(images / "a.png")
    masks = {}
    for backend, out in _predict_both_backends(runner, images, weights, tmp_path).items():
        masks[backend] = read_mask_png(out / "a_mask.png")
    image = read_image(images / "a.png", 0)[None]
    with torch.no_grad():
        eager, ort = model(image)[0], load_onnx_runtime(model, tmp_path / "export")(image)[0]
    assert torch.equal(masks["torch"], eager.argmax(0)) and torch.equal(masks["onnxruntime"], ort.argmax(0))
    top2 = eager.topk(2, dim=0).values
    clear = top2[0] - top2[1] > 2 * float((ort - eager).abs().max())
    assert clear.float().mean() > 0.5  # the comparison covers most pixels
    assert torch.equal(masks["onnxruntime"][clear], masks["torch"][clear])
    result = runner.invoke(main, ["export", f"weights={weights}", "int8=true", "--out", str(tmp_path / "q")])
    assert result.exit_code == 1 and "not supported for segmenters" in result.output, result.output
    result = runner.invoke(main, ["export", f"weights={weights}", "nms=graph", "--out", str(tmp_path / "q")])
    assert result.exit_code == 2 and "nms=graph: a segmenter has no detections" in result.output


@pytest.mark.parametrize(
    ("name", "family"), [("cascade_rcnn_plain_fpn", "Cascade R-CNN"), ("refinedet_plain", "RefineDet")]
)
def test_int8_cascade_rcnn_and_refinedet_are_refused_by_name(name: str, family: str, tmp_path: Path) -> None:
    """Cascade R-CNN and RefineDet export in float (tests/deploy); int8=true names what is not supported,
    before any work, and writes nothing."""
    weights = _saved_detector(name, tmp_path, num_classes=2)
    out = tmp_path / "q"
    result = CliRunner().invoke(main, ["export", f"weights={weights}", "int8=true", "--out", str(out)])
    assert result.exit_code == 1 and f"not supported for {family}" in result.output, result.output
    assert not (out / "export.json").exists()
