"""The demo's figures: training curves, PR curves per class, predicted boxes, hard vs Soft-NMS grids."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from visionkit.data.shapes import SHAPE_CLASSES
from visionkit.viz import draw_boxes, image_grid, plot_pr_curves, plot_training_curves, to_pil

__all__ = ["prediction_grid", "write_figures"]

SCALE = 2  # drawings are enlarged so 128-pixel images and their captions stay readable
DRAW_THRESHOLD = 0.3


def prediction_grid(
    dataset: Any, predictions: Sequence[Mapping[str, Any]], count: int, columns: int = 4
) -> Image.Image:
    """The first ``count`` images of ``dataset`` with their predicted boxes scoring at least 0.3."""
    tiles = []
    for index in range(min(count, len(dataset), len(predictions))):
        image = to_pil(dataset[index][0])
        image = image.resize((image.width * SCALE, image.height * SCALE), Image.Resampling.NEAREST)
        detection = predictions[index]
        tiles.append(draw_boxes(image, detection["boxes"] * SCALE, detection["labels"], detection["scores"],
                                SHAPE_CLASSES, score_threshold=DRAW_THRESHOLD))  # fmt: skip
    return image_grid(tiles, columns=columns)


def write_figures(
    out_dir: Path,
    models: Mapping[str, Mapping[str, Any]],
    val: Any,
    crowded: Any,
    crowded_predictions: Mapping[str, Sequence[Mapping[str, Any]]],
    grid_images: int,
) -> dict[str, list[dict[str, str]]]:
    """Write every figure under ``out_dir/figures`` and return ``{section: [{src, caption}]}``.

    Args:
        models: key -> ``title``, ``history`` (per-step log), ``coco`` (a ``CocoResult``) and
            ``predictions`` (on ``val``).
        crowded_predictions: ``"<model key>/<nms method>"`` -> predictions on ``crowded``.
    """
    figures: dict[str, list[dict[str, str]]] = {"training": [], "pr": [], "predictions": [], "nms": []}
    folder = out_dir / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    for key, model in models.items():
        terms = [name for name in model["history"][0] if name not in ("step", "lr", "loss")]
        plot_training_curves(model["history"], folder / f"{key}_training.png", losses=terms,
                             title=f"{model['title']}: loss terms and learning rate")  # fmt: skip
        figures["training"].append({"src": f"figures/{key}_training.png", "caption": model["title"]})
        coco = model["coco"]
        curves = {SHAPE_CLASSES[k]: coco.pr_curve(k) for k in range(len(coco.category_ids))}
        ap50 = {SHAPE_CLASSES[k]: row["AP50"] for k, row in enumerate(coco.per_class())}
        plot_pr_curves(curves, folder / f"{key}_pr.png", title=model["title"], average_precision=ap50)
        figures["pr"].append({"src": f"figures/{key}_pr.png", "caption": f"{model['title']}, legend: AP50"})
        prediction_grid(val, model["predictions"], grid_images).save(folder / f"{key}_predictions.png")
        figures["predictions"].append({
            "src": f"figures/{key}_predictions.png",
            "caption": f"{model['title']}: detections scoring ≥ {DRAW_THRESHOLD} on validation images",
        })  # fmt: skip
    for name, predictions in crowded_predictions.items():
        file_name = name.replace("/", "_") + "_crowded.png"
        prediction_grid(crowded, predictions, min(grid_images, 4)).save(folder / file_name)
        figures["nms"].append({"src": f"figures/{file_name}", "caption": f"crowded split: {name}"})
    return figures
