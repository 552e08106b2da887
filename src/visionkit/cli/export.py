"""``visionkit export weights=RUN/model.pt format=onnx [key=value ...]``: ONNX graphs of a trained model.

Example::

    visionkit export weights=runs/digits/model.pt format=onnx int8=true calib=entropy --out runs/digits-onnx
    visionkit export weights=runs/digits/model.pt format=onnx int8=true qat_epochs=2 --out runs/digits-qat
    visionkit export weights=runs/retina/model.pt format=onnx fuse=true --out runs/retina/export
    visionkit export weights=runs/retina/model.pt format=tensorrt precision=int8 --out runs/retina/export
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("overrides", nargs=-1)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder [default: RUN/export, beside model.pt].",
)
def export(overrides: tuple[str, ...], out: Path | None) -> None:
    """Export a trained classifier, detector or segmenter to ONNX (float, fused, or int8: our calibration)
    and, with format=tensorrt, to TensorRT engines.

    OVERRIDES are key=value pairs: weights= (required), format=onnx, fuse=true, int8=true,
    calib=auto|minmax|percentile|entropy (auto: entropy for classifiers, percentile for
    detectors), percentile=99.99, calib_images=train|FOLDER, calib_count=256,
    max_drop=0.01 (int8: largest accepted test-accuracy drop; a model over it is not written),
    activations=auto|uint8|int8 (int8 graphs: asymmetric uint8 for ONNX Runtime, or symmetric int8
    with zero point 0, the graph TensorRT takes),
    qat_epochs=0 / qat_lr=0.01 (int8 classifiers: quantization-aware fine-tuning epochs and rate),
    int8_kernels=tuned|symmetric (int8: ONNX Runtime's convolution kernels chosen by timing them on
    this machine, or its symmetric kernels; the numbers are the same; uint8 graphs only),
    nms=outside|graph (detectors: the final NMS in PyTorch, or as an ONNX NonMaxSuppression graph),
    image_size=... The folder gets the .onnx graphs and export.json; run it with
    `visionkit predict --backend onnxruntime` (detectors and segmenters).

    format=tensorrt (needs `pip install tensorrt` and an NVIDIA GPU) also builds a TensorRT engine per
    graph: precision=fp32|fp16|int8 (int8: symmetric int8 activations, calibrated and gated as above),
    opt_batch=1, max_batch=8, min_size=0 / max_size=0 (image sides the engines take; 0: half and twice
    image_size). Run it with `visionkit predict --backend tensorrt`.
    """
    from visionkit.cli.paths import output_folder
    from visionkit.deploy.export import ExportRecipe, export_run
    from visionkit.engine.config import apply_overrides
    from visionkit.errors import ConfigError

    if not any(item.startswith("weights=") for item in overrides):
        raise ConfigError("weights=: expected a run's model.pt (weights=RUN/model.pt)")
    recipe = apply_overrides(ExportRecipe(weights="?"), list(overrides))
    folder = output_folder(out or Path(recipe.weights).parent / "export", "--out")
    manifest = export_run(recipe, folder)
    click.echo(json.dumps(manifest, indent=2))
    click.echo(f"exported to {folder}")
