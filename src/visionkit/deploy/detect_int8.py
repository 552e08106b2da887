"""int8 detectors: trunk and heads quantized with our calibration, decoding and NMS in float (handbook §37).

Each graph of :func:`visionkit.deploy.onnx.onnx_parts` (trunk, dense head, Faster R-CNN's box head) is
calibrated on its own inputs, recorded while the fused float detector runs on the calibration images
(the padded batch, the pyramid levels, the pooled RoI features), and quantized with
:func:`visionkit.deploy.quantize.quantize_onnx`; its outputs (levels, raw logits and deltas) stay float.
The accuracy gate: COCO AP of the float graphs and of the int8 graphs, both in ONNX Runtime, on the run's
validation images; a drop above ``max_drop`` raises :class:`~visionkit.errors.ExportError` and nothing is
written.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from visionkit.deploy.kernels import tune_int8_kernels
from visionkit.deploy.onnx import MANIFEST, OnnxRuntimeDetector, export_onnx, model_kind
from visionkit.deploy.quantize import calibrate_onnx, quantize_onnx
from visionkit.errors import ExportError

__all__ = ["part_inputs", "quantize_detector"]


def part_inputs(
    detector: nn.Module, images: Sequence[Tensor], runner: nn.Module | None = None
) -> dict[str, list[tuple[Tensor, ...]]]:
    """The inputs each graph sees while ``detector`` (eval mode) runs on ``images``, one image at a time
    (through ``runner``, a :class:`~visionkit.models.detectors.ResizedInput` around it, when given):
    ``{"trunk": [(batch,)], "head": [(level, ...)], "box_head": [(pooled,)]}`` (the last for Faster R-CNN)."""
    seen: dict[str, list[tuple[Tensor, ...]]] = {"trunk": [], "head": []}
    head = detector.head if model_kind(detector) == "retinanet" else detector.rpn.head
    hooks = [
        detector.backbone.register_forward_pre_hook(lambda m, a: seen["trunk"].append((a[0].detach(),))),
        head.register_forward_pre_hook(lambda m, a: seen["head"].append(tuple(t.detach() for t in a[0]))),
    ]
    if model_kind(detector) == "faster_rcnn":
        seen["box_head"] = []
        box_head = detector.roi_heads.box_head
        hooks.append(
            box_head.register_forward_pre_hook(
                lambda m, a: seen["box_head"].append((a[0].detach(),)) if a[0].shape[0] else None
            )
        )
    try:
        with torch.no_grad():
            for image in images:
                (runner or detector)([image])
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def _coco_ap(runtime: nn.Module, dataset: Any, num_classes: int) -> float:
    from visionkit.engine.detect.evaluate import evaluate_predictions

    predictions, targets = [], []
    for index in range(len(dataset)):
        image, target = dataset[index]
        with torch.no_grad():
            predictions += runtime([image])
        targets.append(target)
    return float(evaluate_predictions(predictions, targets, num_classes).metrics["AP"])


def quantize_detector(
    detector: nn.Module,
    out: str | Path,
    *,
    calibration: Sequence[Tensor],
    validation: Any,
    calibrator: str = "percentile",
    percentile: float = 99.99,
    max_drop: float = 0.01,
    example_size: tuple[int, int] = (224, 224),
    scratch: str | Path,
    extra: dict | None = None,
    resize: nn.Module | None = None,
    activations: str = "uint8",
    tune_kernels: bool = True,
) -> dict[str, Any]:
    """Write the int8 graphs of the (fused, eval-mode) ``detector`` into ``out`` with ``export.json``.

    Args:
        calibration: images ``Tensor[3, H, W]`` in ``[0, 1]``.
        validation: a detection dataset (``(image, target)`` items) for the AP gate.
        scratch: a folder for the float graphs.
        resize: the :class:`~visionkit.models.detectors.ResizedInput` around ``detector`` (a run trained at
            a working scale): calibration and the gate then see resized images, as the model does.
        activations: ``"uint8"`` (ONNX Runtime) or ``"int8"`` (symmetric: TensorRT), as in
            :func:`~visionkit.deploy.quantize.quantize_onnx`.
        tune_kernels: choose each graph's int8 kernels by timing them on 4 calibration inputs
            (:func:`visionkit.deploy.kernels.tune_int8_kernels`; the numbers are the same either way;
            ``uint8`` graphs only: the GEMM path writes weight zero point −1, which TensorRT refuses).

    Returns:
        The manifest (AP of the float and int8 graphs, calibrator, calibrated tensors).
    """
    scratch, out = Path(scratch), Path(out)
    float_paths = export_onnx(detector, scratch / "float", example_size=example_size)
    inputs = part_inputs(detector, calibration, resize)
    (scratch / "int8").mkdir(parents=True, exist_ok=True)
    calibrated = 0
    for part, path in float_paths.items():
        if not inputs.get(part):
            raise ExportError(f"calibration: the {part} graph saw no input on the calibration images")
        ranges = calibrate_onnx(path, inputs[part], calibrator, percentile)
        calibrated += len(ranges)
        quantize_onnx(path, ranges, scratch / "int8" / path.name, activations)
    shutil.copyfile(scratch / "float" / MANIFEST, scratch / "int8" / MANIFEST)
    parts = {k: p.name for k, p in float_paths.items()}
    ap = {}
    for name in ("float", "int8"):
        runtime: nn.Module = OnnxRuntimeDetector(detector, scratch / name, parts)
        if resize is not None:
            runtime, runtime.detector = copy.copy(resize), runtime
        ap[name] = _coco_ap(runtime, validation, detector.num_classes)
    gate = {
        "AP_float": ap["float"],
        "AP_int8": ap["int8"],
        "validation_images": len(validation),
        "max_drop": max_drop,
    }
    if ap["float"] - ap["int8"] > max_drop:
        raise ExportError(
            f"int8 COCO AP {ap['int8']:.4f} is {ap['float'] - ap['int8']:.4f} below the float graphs' "
            f"{ap['float']:.4f} (max_drop={max_drop}): the int8 model was not written"
        )
    tuning = {}
    if tune_kernels and activations == "uint8":  # TensorRT takes weight zero point 0 only
        for part, name in parts.items():
            graph = scratch / "int8" / name
            tuning[part] = tune_int8_kernels(graph, inputs[part][:4], graph, threads=torch.get_num_threads())
    out.mkdir(parents=True, exist_ok=True)
    for name in parts.values():
        shutil.copyfile(scratch / "int8" / name, out / name)
    manifest = {"kind": model_kind(detector), "parts": parts, **(extra or {}), "calibrator": calibrator,
                "calibrated_tensors": calibrated, "calibration_images": len(calibration), **gate}  # fmt: skip
    if tuning:
        manifest["int8_kernels"] = tuning
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest
