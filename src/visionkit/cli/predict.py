"""``visionkit predict``: run a trained detector on image files, draw the boxes, write COCO results JSON;
given a segmenter's ``model.pt``, write mask overlays and class-map PNGs
(:mod:`visionkit.cli.predict_segment`).

Example::

    visionkit predict --weights runs/retina/model.pt images/*.png --out runs/predict
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import torch
from PIL import Image
from torch import Tensor

from visionkit.data.datasets import LabelMap, read_image
from visionkit.data.datasets.records import image_ids_from_names
from visionkit.viz import draw_boxes, to_pil

__all__ = ["coco_results", "draw_detections", "predict"]


def draw_detections(
    image: Tensor,
    detection: dict[str, Tensor],
    names: Sequence[str],
    score_threshold: float = 0.3,
    scale: int = 1,
) -> Image.Image:
    """Draw boxes with ``name score`` captions on a ``Tensor[3, H, W]`` image in [0, 1] (enlarged ``scale``×).

    A thin wrapper over :func:`visionkit.viz.draw_boxes` that enlarges small images first so the captions
    stay legible.

    Example:
        >>> picture = draw_detections(torch.rand(3, 32, 32), {"boxes": torch.tensor([[2.0, 2, 20, 20]]),
        ...     "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}, ["circle"])
        >>> picture.size
        (32, 32)
    """
    picture = to_pil(image)
    if scale != 1:
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    return draw_boxes(
        picture,
        detection["boxes"].detach().float().cpu() * scale,
        detection["labels"],
        detection["scores"],
        class_names=list(names),
        width=max(1, scale),
        score_threshold=score_threshold,
    )


def coco_results(detection: dict[str, Tensor], image_id: int, label_map: LabelMap) -> list[dict[str, Any]]:
    """One image's detections as COCO results rows (``bbox`` ``[x, y, w, h]``, dataset category ids)."""
    rows = []
    for box, score, label in zip(detection["boxes"], detection["scores"], detection["labels"], strict=True):
        x1, y1, x2, y2 = box.tolist()
        rows.append(
            {
                "image_id": image_id,
                "category_id": label_map.category_of(int(label)),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score),
            }
        )
    return rows


def _split_arguments(items: tuple[str, ...]) -> tuple[list[Path], dict[str, str]]:
    """Image sources, and ``key=value`` items (``weights=...``, ``nms=...``) in ultralytics' style."""
    paths, keys = [], {}
    for item in items:
        key, separator, value = item.partition("=")
        if separator and key in PREDICT_KEYS and not Path(item).exists():
            keys[key] = value
        else:
            paths.append(Path(item))
    return paths, keys


def expand_images(sources: list[Path]) -> tuple[list[Path], int]:
    """Image files of ``sources`` — files, folders (their images, sorted) and glob patterns (sorted) — and
    how many non-image files were skipped. A source that names nothing is a :class:`ConfigError`."""
    from visionkit.data.datasets.yolo import IMAGE_SUFFIXES
    from visionkit.errors import ConfigError

    found: list[Path] = []
    for source in sources:
        if source.is_dir():
            found += sorted(p for p in source.iterdir() if p.is_file())
        elif any(char in str(source) for char in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(source)) if Path(p).is_file())
            if not matches:
                raise ConfigError(f"{source}: the pattern matches no file")
            found += matches
        elif source.is_file():
            found.append(source)
        else:
            raise ConfigError(f"{source}: no such image file, folder or pattern")
    images = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES]
    return images, len(found) - len(images)


#: ``key=value`` items ``predict`` takes beside its options.
PREDICT_KEYS = ("weights", "nms", "score_threshold", "out")


@click.command("predict", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("items", nargs=-1, required=True)
@click.option("--weights", type=click.Path(path_type=Path), default=None, help="model.pt of a run.")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder [default: runs/predict].",
)
@click.option(
    "--score-threshold", type=click.FloatRange(0, 1), default=0.3, show_default=True, help="Drawn boxes only."
)
@click.option("--nms", type=click.Choice(["hard", "soft_linear", "soft_gaussian"]), help="Override the NMS.")
@click.option("--scale", type=click.IntRange(1, 8), default=2, show_default=True, help="Enlarge drawings.")
@click.option(
    "--backend",
    type=click.Choice(["torch", "onnxruntime", "tensorrt"]),
    default="torch",
    show_default=True,
    help="onnxruntime: run the graphs of `visionkit export` (RUN/export, or --onnx) with ONNX Runtime; "
    "tensorrt: its engines (export format=tensorrt; an NVIDIA GPU) (detectors and segmenters).",
)
@click.option("--onnx", "onnx_folder", type=click.Path(path_type=Path), default=None, help="Exported folder.")
def predict(
    items: tuple[str, ...],
    weights: Path | None,
    out: Path | None,
    score_threshold: float,
    nms: str | None,
    scale: int,
    backend: str = "torch",
    onnx_folder: Path | None = None,
) -> None:
    """Detect objects in images: PNG drawings and detections.json (COCO results format) in --out.
    With a segmenter's model.pt (train segment): overlays NAME.png and class maps NAME_mask.png.

    ITEMS are image files, folders (their images, sorted) or glob patterns, and optionally
    weights=RUN/model.pt (same as --weights), nms=..., score_threshold=..., out=...
    """
    from visionkit.cli.paths import output_folder
    from visionkit.engine.detect import load_detector
    from visionkit.errors import ConfigError

    sources, keys = _split_arguments(items)
    weights = Path(keys["weights"]) if "weights" in keys else weights
    if weights is None:
        raise ConfigError("give the detector as weights=RUN/model.pt (or --weights)")
    out = output_folder(Path(keys.get("out") or out or "runs/predict"), "--out")
    nms = keys.get("nms", nms)
    if "score_threshold" in keys:
        score_threshold = float(keys["score_threshold"])
    images, skipped = expand_images(sources)
    if not images:
        raise ConfigError(f"no images among {', '.join(map(str, sources)) or 'the arguments'}")
    if skipped:
        click.echo(f"skipped {skipped} non-image file(s)")
    from visionkit.engine.segment import FORMAT as SEGMENTER
    from visionkit.engine.segment import model_format

    if model_format(weights) == SEGMENTER:  # a segmenter's model.pt: overlays and class maps
        from visionkit.cli.predict_segment import predict_masks

        onnx = (onnx_folder or Path(weights).parent / "export") if backend != "torch" else None
        predict_masks(images, weights, out, onnx=onnx, backend=backend)
        return
    detector, label_map = load_detector(weights, **({"nms_method": nms} if nms else {}))
    if backend == "onnxruntime":
        from visionkit.deploy.onnx import load_onnx_runtime

        detector = load_onnx_runtime(detector, onnx_folder or Path(weights).parent / "export")
    elif backend == "tensorrt":
        from visionkit.deploy.tensorrt import load_tensorrt

        detector = load_tensorrt(detector, onnx_folder or Path(weights).parent / "export")
    results: list[dict[str, Any]] = []
    image_ids = image_ids_from_names([path.name for path in images])
    stems = [path.stem for path in images]
    names = [f"{stem}_{i}" if stems.count(stem) > 1 else stem for i, stem in enumerate(stems)]
    for index, (path, image_id) in enumerate(zip(images, image_ids, strict=True)):
        image = read_image(path, index)
        with torch.no_grad():
            detection = detector([image])[0]
        draw_detections(image, detection, label_map.names, score_threshold, scale).save(
            out / f"{names[index]}.png"
        )
        results += coco_results(detection, image_id, label_map)
        kept = int((detection["scores"] >= score_threshold).sum())
        click.echo(f"{path.name}: {kept} objects (score >= {score_threshold})")
    (out / "detections.json").write_text(json.dumps(results), encoding="utf-8")
    click.echo(f"wrote {len(images)} drawings and {len(results)} detections to {out}")
