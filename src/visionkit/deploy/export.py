"""``visionkit export``: a run's ``model.pt`` → ONNX graphs (float, fused, or int8 with our calibration).

The output folder holds the graphs of :func:`visionkit.deploy.onnx.export_onnx` and ``export.json`` (what was
exported and, for int8, the calibrator, the number of calibrated tensors and the accuracy gate's numbers).

int8, classifiers: the model is fused, exported in float, calibrated on ``calib_count`` images
(``calib_images=train``: the run's training split; or a folder of image files of the model's input size and
channels), quantized (:mod:`visionkit.deploy.quantize`) and checked on the test split: test accuracy of the
float graph and of the int8 graph, both in ONNX Runtime, and their top-1 agreement. If the accuracy drops by
more than ``max_drop`` nothing is written and :class:`~visionkit.errors.ExportError` says by how much.
``activations=``: the activation quantizer of the int8 graphs, ``uint8`` (asymmetric: ONNX Runtime's
integer kernels; ``auto``) or ``int8`` (symmetric, zero point 0, float biases: the graph TensorRT's
explicit quantization takes), both with per-channel ``int8`` weights and the same gate.
``format=tensorrt precision=fp32|fp16|int8`` (:mod:`visionkit.deploy.tensorrt`, where TensorRT and a CUDA
GPU exist): the same graphs (float16 ones for ``fp16``; ``int8`` with symmetric activations) and a
TensorRT engine for each, for batches up to ``max_batch`` and image sides ``min_size..max_size``.
int8, detectors: :mod:`visionkit.deploy.detect_int8` (trunk and heads in int8, gated by COCO AP on the
run's validation images; calibrated on its training images or a folder); YOLO and segmenters (FCN) are
exported in float only, as are Cascade R-CNN and RefineDet (``int8=true`` is refused by name).
``qat_epochs=N`` (classifiers): quantization-aware fine-tuning (:mod:`visionkit.deploy.qat`) of the fused
model for ``N`` epochs at ``qat_lr`` through the classify engine, with the calibrated scales kept; the
graph written carries those scales and the fine-tuned weights, gated the same way; ``out/qat/`` holds the
fine-tuning's log and curves.

Example::

    visionkit export weights=runs/digits/model.pt format=onnx int8=true --out runs/digits-int8
    visionkit export weights=runs/digits/model.pt format=tensorrt precision=fp16 --out runs/digits-trt
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from visionkit.deploy.fuse import fuse_model
from visionkit.deploy.kernels import KERNEL_MODES, tune_int8_kernels
from visionkit.deploy.onnx import MANIFEST, NMS_PLACES, add_nms_graph, export_onnx, model_kind, ort_session
from visionkit.deploy.quantize import ACTIVATIONS, CALIBRATORS, calibrate_onnx, quantize_onnx
from visionkit.engine.compressed import compressed_task
from visionkit.engine.config import check_types, require
from visionkit.errors import CheckpointError, ConfigError, DatasetError, ExportError, InputShapeError
from visionkit.torchfile import UnreadableFileError, load_weights_only

__all__ = [
    "ExportRecipe",
    "calibration_images",
    "detector_calibration_images",
    "export_run",
    "load_run_model",
]


@dataclass(frozen=True)
class ExportRecipe:
    """Settings of ``visionkit export``; every field can be overridden as ``key=value``."""

    weights: str = ""  # a run's model.pt (classify or detect)
    format: Literal["onnx", "tensorrt"] = "onnx"  # tensorrt: the ONNX graphs and an engine for each
    precision: Literal["auto", "fp32", "fp16", "int8"] = (
        "auto"  # tensorrt: auto = int8 if int8=true else fp32
    )
    opt_batch: int = 1  # tensorrt: the batch the engines are tuned for
    max_batch: int = 8  # tensorrt: the largest batch the engines take
    min_size: int = 0  # tensorrt: smallest image side the engines take (0: image_size / 2)
    max_size: int = 0  # tensorrt: largest image side the engines take (0: 2 · image_size)
    fuse: bool = False  # fold batch norms and merge sibling 1×1 convolutions before exporting
    int8: bool = False  # post-training quantization (classifiers: accuracy gate; detectors: COCO AP gate)
    calib: Literal["auto", "minmax", "percentile", "entropy"] = "auto"  # auto: calibrator_for(kind)
    percentile: float = 99.99  # calib=percentile only
    activations: Literal["auto", "uint8", "int8"] = "auto"  # int8 graphs: auto = uint8 (ONNX Runtime)
    calib_images: str = "train"  # "train" (the run's training split) or a folder of images
    calib_count: int = 256
    max_drop: float = 0.01  # int8: largest accepted test-accuracy drop against the float graph
    qat_epochs: int = 0  # int8 classifiers: quantization-aware fine-tuning epochs (0: post-training only)
    qat_lr: float = 0.01  # learning rate of the QAT fine-tuning
    nms: Literal["outside", "graph"] = "outside"  # detectors: final NMS ours (outside) or an ONNX graph
    image_size: int = 0  # example size for the export (0: the run's own; 224 for detectors and segmenters)
    int8_kernels: Literal["tuned", "symmetric"] = "tuned"  # int8: ONNX Runtime kernels chosen by timing

    def __post_init__(self) -> None:
        check_types(self)
        require(bool(self.weights), "weights", self.weights, "a run's model.pt (weights=RUN/model.pt)")
        require(
            self.calib in ("auto", *CALIBRATORS), "calib", self.calib, f"auto or one of {list(CALIBRATORS)}"
        )
        require(50 < self.percentile <= 100, "percentile", self.percentile, "a number in (50, 100]")
        require(
            self.activations in ("auto", *ACTIVATIONS),
            "activations",
            self.activations,
            f"auto or one of {list(ACTIVATIONS)}",
        )
        require(self.calib_count >= 1, "calib_count", self.calib_count, "an integer >= 1")
        require(0 <= self.max_drop <= 1, "max_drop", self.max_drop, "a number in [0, 1]")
        require(self.qat_epochs >= 0, "qat_epochs", self.qat_epochs, "an integer >= 0")
        require(self.qat_epochs == 0 or self.int8, "qat_epochs", self.qat_epochs, "0 unless int8=true")
        require(0 < self.qat_lr <= 10, "qat_lr", self.qat_lr, "a learning rate in (0, 10]")
        require(self.image_size >= 0, "image_size", self.image_size, "an integer >= 0")
        require(self.nms in NMS_PLACES, "nms", self.nms, f"one of {list(NMS_PLACES)}")
        kernels = self.int8_kernels
        require(kernels in KERNEL_MODES, "int8_kernels", kernels, f"one of {list(KERNEL_MODES)}")
        self._check_tensorrt()

    def _check_tensorrt(self) -> None:
        tensorrt = self.format == "tensorrt"
        require(self.opt_batch >= 1, "opt_batch", self.opt_batch, "an integer >= 1")
        require(self.max_batch >= self.opt_batch, "max_batch", self.max_batch, "an integer >= opt_batch")
        require(self.min_size >= 0, "min_size", self.min_size, "an integer >= 0 (0: image_size / 2)")
        require(self.max_size >= 0, "max_size", self.max_size, "an integer >= 0 (0: 2 · image_size)")
        require(
            tensorrt or self.precision == "auto", "precision", self.precision,
            "auto unless format=tensorrt (int8 ONNX graphs: int8=true)",
        )  # fmt: skip
        require(
            not (self.int8 and self.precision in ("fp32", "fp16")), "precision", self.precision,
            "int8 (or auto) with int8=true",
        )  # fmt: skip
        require(
            not (tensorrt and self.activations == "uint8"), "activations", self.activations,
            "int8 or auto with format=tensorrt (TensorRT quantizes with zero point 0 only)",
        )  # fmt: skip
        require(
            not (tensorrt and self.nms == "graph"), "nms", self.nms,
            "outside with format=tensorrt (the NMS graph runs in ONNX Runtime only)",
        )  # fmt: skip


def calibrator_for(calib: str, kind: str) -> str:
    """The calibrator of ``calib=auto`` for a model ``kind`` (:func:`visionkit.deploy.onnx.model_kind`):
    ``entropy`` for classifiers, ``percentile`` (99.99) for detectors; any other ``calib`` as given. Why
    (benchmarks/RESULTS.md, "Deployment"): on the shapes RetinaNet percentile 99.99 had the smallest COCO AP
    drop of the three in every measurement (0.0042, 0.0033) while min–max once missed the 0.01 gate
    (0.0101) and entropy dropped 0.0052–0.0075; on the digits classifier all three lose nothing.

    Example:
        >>> [calibrator_for("auto", "retinanet"), calibrator_for("auto", "classifier")]
        ['percentile', 'entropy']
        >>> calibrator_for("minmax", "retinanet")
        'minmax'
    """
    if calib != "auto":
        return calib
    return "entropy" if kind == "classifier" else "percentile"


def activations_for(recipe: ExportRecipe) -> str:
    """The activation quantizer of ``activations=auto``: ``uint8`` (asymmetric: ONNX Runtime's fast CPU
    kernels), ``int8`` with ``format=tensorrt`` (zero point 0: TensorRT's explicit quantization); a named
    one as given.

    Example:
        >>> activations_for(ExportRecipe(weights="m.pt")), activations_for(ExportRecipe(weights="m.pt",
        ...     activations="int8"))
        ('uint8', 'int8')
    """
    if recipe.activations != "auto":
        return recipe.activations
    return "int8" if recipe.format == "tensorrt" else "uint8"


def tunes_kernels(recipe: ExportRecipe) -> bool:
    """Whether the int8 graphs get ONNX Runtime kernels chosen by timing (:mod:`visionkit.deploy.kernels`):
    ``int8_kernels=tuned`` on ``uint8`` graphs only — the GEMM path it may pick writes weight zero point −1,
    and the symmetric ``int8`` graph is for TensorRT, which takes zero point 0 only.

    Example:
        >>> [tunes_kernels(ExportRecipe(weights="m.pt", activations=a)) for a in ("uint8", "int8")]
        [True, False]
    """
    return recipe.int8_kernels == "tuned" and activations_for(recipe) == "uint8"


def load_run_model(weights: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model of a run's ``model.pt`` (classifier, detector or segmenter; classifiers and detectors also
    compressed by ``visionkit compress``) in eval mode, and what is known about it (``task``, and for
    classifiers ``input_size``, ``channels`` and the recipe)."""
    path = Path(weights)
    from visionkit.engine.detect import load_detector
    from visionkit.engine.segment import FORMAT as SEGMENTER
    from visionkit.engine.segment import model_format

    if model_format(path) == SEGMENTER:
        from visionkit.engine.segment import load_segmenter

        segmenter, label_map = load_segmenter(path)
        return segmenter, {"task": "segment", "label_map": label_map}
    try:
        saved = load_weights_only(path) if path.is_file() else None  # a missing file: load_detector names it
    except UnreadableFileError as error:  # of no task: not "a detector", as load_detector would say
        raise CheckpointError(f"weights {str(path)!r}: not a readable visionkit model.pt ({error})") from None
    if isinstance(saved, dict) and "classify" in (saved.get("task"), compressed_task(saved)):
        from visionkit.data.digits import Digits
        from visionkit.engine.classify import load_classifier

        model, recipe = load_classifier(path)
        channels, height, _ = Digits("train", seed=recipe.seed)[0][0].shape  # the images the run reads
        return model, {"task": "classify", "recipe": recipe, "input_size": height, "channels": channels}
    detector, label_map = load_detector(path)
    return detector, {"task": "detect", "label_map": label_map}


def image_files(source: str, count: int) -> list[Path]:
    """The first ``count`` image files (``.png/.jpg/.jpeg/.bmp``, sorted) of the folder
    ``calib_images=source``; a :class:`~visionkit.errors.ConfigError` naming it when it is not a folder or
    holds no image."""
    folder = Path(source)
    if not folder.is_dir():
        raise ConfigError(f"calib_images={source}: expected 'train' or a folder of images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp"))
    if not files:
        raise ConfigError(f"calib_images={source}: the folder has no .png/.jpg/.bmp images")
    return files[:count]


def calibration_images(source: str, count: int, info: dict[str, Any]) -> Tensor:
    """``[N, C, H, W]`` calibration images: the run's training split (``"train"``) or a folder of images,
    each of the model's input channels and size.

    Raises:
        InputShapeError: an image of other channels or size (names the file, expected and given shape).
        DatasetError: an image file that cannot be read (names it).
        ConfigError: no such folder, or no images in it.
    """
    channels, size = info["channels"], info["input_size"]
    if source == "train":
        from visionkit.data.digits import Digits

        data = Digits("train", seed=info["recipe"].seed)
        return torch.stack([data[i][0] for i in range(min(count, len(data)))])
    from PIL import Image

    images = []
    for file in image_files(source, count):
        try:
            with Image.open(file) as picture:
                array = torch.from_numpy(np.array(picture, dtype=np.float32)) / 255
                shape = (len(picture.getbands()), picture.height, picture.width)
        except (OSError, SyntaxError, ValueError) as error:  # what Pillow raises for a broken file
            raise DatasetError(f"calibration image {file}: cannot read it ({error})") from error
        if shape != (channels, size, size):
            raise InputShapeError(
                f"calibration image {file}: expected {channels} channel(s) of {size}×{size}, got "
                f"{shape[0]} channel(s) of {shape[1]}×{shape[2]}"
            )
        images.append(array.reshape(shape[1], shape[2], shape[0]).permute(2, 0, 1))
    return torch.stack(images)


def export_run(recipe: ExportRecipe, out: str | Path) -> dict[str, Any]:
    """Export per ``recipe`` into ``out`` (module docstring); returns the manifest written there."""
    out = Path(out)
    if recipe.format == "tensorrt":
        return export_tensorrt(recipe, out)
    return _export_onnx(recipe, out, *load_run_model(recipe.weights))


def _export_onnx(recipe: ExportRecipe, out: Path, model: nn.Module, info: dict[str, Any]) -> dict[str, Any]:
    """:func:`export_run` with ``format=onnx``, of the already loaded ``model`` (:func:`load_run_model`)."""
    inner = getattr(model, "detector", model)  # a detector behind ResizedInput
    kind = model_kind(inner)
    if recipe.nms == "graph" and kind in ("classifier", "segmenter"):
        raise ConfigError(f"nms=graph: a {kind} has no detections to suppress (detectors only)")
    recipe = dataclasses.replace(
        recipe, calib=calibrator_for(recipe.calib, kind), activations=activations_for(recipe)
    )
    if recipe.qat_epochs and kind != "classifier":
        raise ConfigError(f"qat_epochs={recipe.qat_epochs}: quantization-aware training is for classifiers")
    images = (
        calibration_images(recipe.calib_images, recipe.calib_count, info)
        if recipe.int8 and kind == "classifier"
        else None
    )
    if recipe.fuse or recipe.int8:
        inner = fuse_model(inner)
    extra: dict[str, Any] = {
        "weights": str(recipe.weights),
        "fused": recipe.fuse or recipe.int8,
        "int8": recipe.int8,
    }
    if recipe.int8:
        extra["activations"] = recipe.activations
    if kind == "segmenter":
        if recipe.int8:
            raise ExportError(
                f"{recipe.weights}: int8=true is not supported for segmenters yet (float: int8=false)"
            )
        size = recipe.image_size or 224
        export_onnx(inner, out, example_size=(size, size), extra=extra)
        return json.loads((out / MANIFEST).read_text())
    if kind != "classifier":
        size = recipe.image_size or 224
        if recipe.int8 and kind in ("yolo", "cascade_rcnn", "refinedet"):
            family = {"yolo": "YOLO", "cascade_rcnn": "Cascade R-CNN", "refinedet": "RefineDet"}[kind]
            raise ExportError(
                f"{recipe.weights}: int8=true is not supported for {family} yet (float graphs: int8=false)"
            )
        if recipe.int8:
            manifest = _int8_detector(recipe, model, inner, out, extra, size)
            return add_nms_graph(out, inner.num_classes) if recipe.nms == "graph" else manifest
        export_onnx(inner, out, example_size=(size, size), extra=extra, nms=recipe.nms)
        return json.loads((out / MANIFEST).read_text())
    size = recipe.image_size or info["input_size"]
    if not recipe.int8:
        export_onnx(inner, out, example_size=(size, size), extra=extra)
        return json.loads((out / MANIFEST).read_text())
    with tempfile.TemporaryDirectory() as scratch:
        float_folder = Path(scratch) / "float"
        export_onnx(inner, float_folder, example_size=(size, size))
        assert images is not None
        batches = [(chunk,) for chunk in images.split(64)]
        ranges = calibrate_onnx(float_folder / "model.onnx", batches, recipe.calib, recipe.percentile)
        if recipe.qat_epochs:
            from visionkit.deploy.qat import export_qat, finetune_qat

            tuned, metrics = finetune_qat(
                model, info["recipe"], float_folder / "model.onnx", ranges, images[:64], out / "qat",
                recipe.qat_epochs, recipe.qat_lr, recipe.activations,
            )  # fmt: skip
            quantized = export_qat(tuned, ranges, Path(scratch) / "int8.onnx", size, recipe.activations)
            extra |= {"qat_epochs": recipe.qat_epochs, "qat_lr": recipe.qat_lr,
                      "qat_test_accuracy_eager": metrics["test_accuracy"]}  # fmt: skip
        else:
            quantized = quantize_onnx(
                float_folder / "model.onnx", ranges, Path(scratch) / "int8.onnx", recipe.activations
            )
        gate = accuracy_gate(float_folder / "model.onnx", quantized, info, recipe.max_drop)
        if tunes_kernels(recipe):
            tuning = tune_int8_kernels(quantized, [(images[:8],)], quantized, threads=torch.get_num_threads())
            extra["int8_kernels"] = tuning
        extra |= {"calibrator": recipe.calib, "calibrated_tensors": len(ranges),
                  "calibration_images": len(images), **gate}  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(quantized, out / "model.onnx")
    manifest = {"kind": kind, "parts": {"model": "model.onnx"}, **extra}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def export_tensorrt(recipe: ExportRecipe, out: Path) -> dict[str, Any]:
    """``format=tensorrt`` (:mod:`visionkit.deploy.tensorrt`): checks that TensorRT and a CUDA GPU are
    there before any work, writes the graphs of the ``precision`` (``fp32``: the float graphs; ``fp16``:
    the fused model's float16 graphs; ``int8``: the symmetric int8 graphs, calibrated and gated as
    ``format=onnx int8=true``), then an engine for each with the recipe's optimization profile."""
    from visionkit.deploy.tensorrt import build_engines, engine_profiles, export_fp16_onnx, require_tensorrt

    require_tensorrt()
    precision = "int8" if recipe.int8 else ("fp32" if recipe.precision == "auto" else recipe.precision)
    model, info = load_run_model(recipe.weights)
    inner = getattr(model, "detector", model)
    size, max_size = tensorrt_sizes(recipe, model, info)
    if precision == "fp16":
        extra = {"weights": str(recipe.weights), "fused": True, "int8": False}
        export_fp16_onnx(fuse_model(inner), out, example_size=(size, size), extra=extra)
    else:
        onnx_recipe = dataclasses.replace(
            recipe,
            format="onnx",
            precision="auto",
            int8=precision == "int8",
            activations=activations_for(recipe),
        )
        _export_onnx(onnx_recipe, out, model, info)  # the model loaded once
    profiles = engine_profiles(
        inner.eval(), image_size=size, min_size=recipe.min_size, max_size=max_size,
        opt_batch=recipe.opt_batch, max_batch=recipe.max_batch,
    )  # fmt: skip
    return build_engines(out, precision, profiles)


def tensorrt_sizes(recipe: ExportRecipe, model: nn.Module, info: dict[str, Any]) -> tuple[int, int]:
    """``(image_size, max_size)`` of the engines' profile: the recipe's where given; else a classifier's
    input size, a detector trained at a working scale (``ResizedInput``) its ``min_size`` and its
    ``max_size`` (uncapped, or below ``image_size``: 0, twice ``image_size``), any other model 224 and 0.

    Example:
        >>> from visionkit.models import create_model
        >>> from visionkit.models.detectors import ResizedInput
        >>> resized = ResizedInput(create_model("retinanet_plain_fpn", num_classes=3), 320, 512)
        >>> tensorrt_sizes(ExportRecipe(weights="m.pt", format="tensorrt"), resized, {"task": "detect"})
        (320, 512)
    """
    if info["task"] == "classify":
        default, largest = info["input_size"], 0
    elif hasattr(model, "detector") and hasattr(model, "min_size"):
        default, largest = model.min_size, model.max_size or 0
    else:
        default, largest = 224, 0
    size = recipe.image_size or default
    return size, recipe.max_size or (largest if largest >= size else 0)


def accuracy_gate(
    float_graph: Path, int8_graph: Path, info: dict[str, Any], max_drop: float
) -> dict[str, Any]:
    """Test accuracy of both graphs (ONNX Runtime) and their top-1 agreement; raises
    :class:`ExportError` when the int8 accuracy is lower by more than ``max_drop``."""
    from visionkit.data.digits import Digits

    data = Digits("test", seed=info["recipe"].seed)
    images = torch.stack([data[i][0] for i in range(len(data))])
    labels = torch.tensor([int(data[i][1]) for i in range(len(data))])
    predictions = {}
    for name, graph in (("float", float_graph), ("int8", int8_graph)):
        session = ort_session(graph)
        feed_name = session.get_inputs()[0].name
        logits = [
            torch.from_numpy(session.run(None, {feed_name: chunk.numpy()})[0]) for chunk in images.split(256)
        ]
        predictions[name] = torch.cat(logits).argmax(1)
    accuracy = {name: float((p == labels).float().mean()) for name, p in predictions.items()}
    report = {
        "test_images": len(labels),
        "accuracy_float": accuracy["float"],
        "accuracy_int8": accuracy["int8"],
        "top1_agreement": float((predictions["float"] == predictions["int8"]).float().mean()),
        "max_drop": max_drop,
    }
    drop = accuracy["float"] - accuracy["int8"]
    if drop > max_drop:
        raise ExportError(
            f"int8 accuracy {accuracy['int8']:.4f} is {drop:.4f} below the float graph's "
            f"{accuracy['float']:.4f} (max_drop={max_drop}): the int8 model was not written"
        )
    return report


def detector_calibration_images(run: Any, count: int) -> list[Tensor]:
    """The first ``count`` training images of the detect run recipe ``run`` as the model sees them at
    inference: without the training augmentation (random flips, scale jitter, mosaic), so that a detector's
    calibration — and its int8 gate — is the same on every export (on randomly augmented images the shapes
    RetinaNet's min–max AP drop was 0.0101 in one export and 0.0074 in another, benchmarks/RESULTS.md)."""
    from visionkit.engine.detect import build_datasets

    plain = dataclasses.replace(run, hflip=0.0, scale_jitter=(), mosaic=0.0)
    train = build_datasets(plain).train
    return [train[i][0] for i in range(min(count, len(train)))]


def _int8_detector(
    recipe: ExportRecipe, model: nn.Module, inner: nn.Module, out: Path, extra: dict[str, Any], size: int
) -> dict[str, Any]:
    """int8 graphs of a detector (:mod:`visionkit.deploy.detect_int8`), calibrated on the run's training
    images (or a folder) and gated by COCO AP on its validation images."""
    from visionkit.data.datasets import read_image
    from visionkit.deploy.detect_int8 import quantize_detector
    from visionkit.engine.detect import build_datasets, run_recipe

    resize = None
    if hasattr(model, "detector"):  # ResizedInput: images resized in PyTorch before the detector
        resize = copy.copy(model)
        resize.detector = inner
    from_run = recipe.calib_images in ("train", "shapes")
    files = [] if from_run else image_files(recipe.calib_images, recipe.calib_count)  # checked before work
    run = run_recipe(recipe.weights)  # a compressed detector: the recipe of the run it comes from
    if run is None:
        config = Path(recipe.weights).parent / "config.json"
        raise ConfigError(f"int8=true needs the run's {config} (its data: calibration and validation images)")
    data = build_datasets(run)
    if from_run:
        images = detector_calibration_images(run, recipe.calib_count)
    else:
        images = [read_image(path, index) for index, path in enumerate(files)]
    if not images:
        raise ConfigError(f"calib_images={recipe.calib_images}: no images")
    with tempfile.TemporaryDirectory() as scratch:
        return quantize_detector(
            inner, out, calibration=images, validation=data.val, calibrator=recipe.calib,
            percentile=recipe.percentile, max_drop=recipe.max_drop, example_size=(size, size),
            activations=recipe.activations, scratch=scratch, extra=extra, resize=resize,
            tune_kernels=tunes_kernels(recipe),
        )  # fmt: skip
