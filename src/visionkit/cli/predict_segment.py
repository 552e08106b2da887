"""``visionkit predict`` for a segmenter's ``model.pt``: per image an overlay ``<stem>.png`` (classes in their
VOC colours over the image) and the class map ``<stem>_mask.png`` (a VOC palette PNG: pixel value = class
index), plus ``label_map.json`` (the classes) in the output folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import click
import torch

from visionkit.data.datasets import read_image
from visionkit.data.segmentation import write_mask_png
from visionkit.engine.segment import load_segmenter, predict
from visionkit.viz.masks import overlay_mask

__all__ = ["predict_masks"]


def predict_masks(
    images: Sequence[Path],
    weights: Path,
    out: Path,
    alpha: float = 0.5,
    onnx: Path | None = None,
    backend: str = "onnxruntime",
) -> None:
    """Segment ``images`` with the segmenter in ``weights`` and write the overlays and class maps to ``out``
    (which exists); ``onnx``: the folder of its exported graph (``visionkit export``), run in ONNX Runtime
    (``backend="onnxruntime"``) or as its TensorRT engine (``backend="tensorrt"``) instead of PyTorch."""
    model, label_map = load_segmenter(weights)
    if onnx is not None and backend == "tensorrt":
        from visionkit.deploy.tensorrt import load_tensorrt

        model = load_tensorrt(model, onnx)
    elif onnx is not None:
        from visionkit.deploy.onnx import load_onnx_runtime

        model = load_onnx_runtime(model, onnx)
    label_map.save(out / "label_map.json")
    for index, path in enumerate(images):
        image = read_image(path, index)
        (classes,) = predict(model, [image])
        overlay_mask(image, classes, alpha).save(out / f"{path.stem}.png")
        write_mask_png(classes, out / f"{path.stem}_mask.png")
        counts = torch.bincount(classes.flatten(), minlength=label_map.num_classes)
        shares = [
            f"{name} {100 * int(c) / classes.numel():.0f}%"
            for name, c in zip(label_map.names, counts.tolist(), strict=True)
            if c
        ]
        click.echo(f"{path.name}: {', '.join(shares)}")
    click.echo(f"wrote {len(images)} overlays and class maps to {out}")
