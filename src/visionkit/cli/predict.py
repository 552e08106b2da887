"""``visionkit predict``: run a trained detector on image files, draw the boxes, write COCO results JSON.

Example::

    visionkit predict --weights runs/retina/model.pt images/*.png --out runs/predict
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import torch
from PIL import Image
from torch import Tensor

from visionkit.data.datasets import DatasetError, LabelMap, read_image
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
        rows.append({"image_id": image_id, "category_id": label_map.category_of(int(label)),
                     "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})  # fmt: skip
    return rows


@click.command("predict", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument(
    "images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--weights", required=True, type=click.Path(exists=True, path_type=Path), help="model.pt of a run."
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/predict"))
@click.option("--score-threshold", type=float, default=0.3, show_default=True, help="Drawn boxes only.")
@click.option("--nms", type=click.Choice(["hard", "soft_linear", "soft_gaussian"]), help="Override the NMS.")
@click.option("--scale", type=click.IntRange(1, 8), default=2, show_default=True, help="Enlarge drawings.")
def predict(images: tuple[Path, ...], weights: Path, out: Path, score_threshold: float, nms: str | None,
            scale: int) -> None:  # fmt: skip
    """Detect objects in IMAGES: PNG drawings and detections.json (COCO results format) in --out."""
    from visionkit.cli.train_detect import load_detector

    detector, label_map = load_detector(weights, **({"nms_method": nms} if nms else {}))
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    image_ids = image_ids_from_names([path.name for path in images])
    for index, (path, image_id) in enumerate(zip(images, image_ids, strict=True)):
        try:
            image = read_image(path, index)
        except DatasetError as error:
            raise click.ClickException(str(error)) from error
        with torch.no_grad():
            detection = detector([image])[0]
        draw_detections(image, detection, label_map.names, score_threshold, scale).save(
            out / f"{path.stem}.png"
        )
        results += coco_results(detection, image_id, label_map)
        kept = int((detection["scores"] >= score_threshold).sum())
        click.echo(f"{path.name}: {kept} objects (score >= {score_threshold})")
    (out / "detections.json").write_text(json.dumps(results), encoding="utf-8")
    click.echo(f"wrote {len(images)} drawings and {len(results)} detections to {out}")
