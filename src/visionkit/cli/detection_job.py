"""The detection main job behind ``make demo``: shapes → RetinaNet and Faster R-CNN → metrics → report.

:func:`run_detection_job` trains both detectors on the generated ``shapes`` data (no download), evaluates
them (COCO AP, VOC07 11-point and VOC12 all-point mAP@0.5), compares hard NMS with linear and Gaussian
Soft-NMS on the crowded split, measures inference speed and the foreground:background anchor ratio, and
writes ``report.html`` with training curves, PR curves per class and a grid of predictions, plus
``summary.json``. The ``visionkit demo`` command can call it; :func:`render_table` prints the numbers.
"""

from __future__ import annotations

import csv
import html
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from visionkit.cli.predict import draw_detections
from visionkit.cli.train_detect import DetectRecipe, load_detector, shapes_config, train_detector
from visionkit.data.shapes import ShapesConfig, ShapesDataset
from visionkit.metrics.detection.coco import evaluate_coco
from visionkit.metrics.detection.voc import evaluate_voc
from visionkit.models.detectors._common import batch_images
from visionkit.ops.boxes import box_iou

__all__ = ["JobSettings", "render_table", "run_detection_job"]

NMS_METHODS = ("hard", "soft_linear", "soft_gaussian")


@dataclass(frozen=True)
class JobSettings:
    """Sizes of the main job (defaults: the full demo; the tests use tiny ones)."""

    models: tuple[str, ...] = ("retinanet_mobilenet_v2_fpn", "fasterrcnn_mobilenet_v2_fpn")
    num_train: int = 512
    num_val: int = 128
    num_crowded: int = 64
    image_size: int = 128
    epochs: int = 12
    batch_size: int = 8
    seed: int = 0
    recipe_overrides: tuple[tuple[str, Any], ...] = ()


def _recipe(settings: JobSettings, model: str) -> DetectRecipe:
    values = {"model": model, "num_train": settings.num_train, "num_val": settings.num_val,
              "image_size": settings.image_size, "epochs": settings.epochs, "batch_size": settings.batch_size,
              "seed": settings.seed, **dict(settings.recipe_overrides)}  # fmt: skip
    return DetectRecipe(**values)


def _set_nms(detector: nn.Module, method: str) -> None:
    owner = getattr(detector, "roi_heads", detector)
    owner.nms_method = method


@torch.no_grad()
def predict_dataset(
    detector: nn.Module, dataset: ShapesDataset, batch_size: int = 16
) -> tuple[list, list, float]:
    """Predictions and targets over ``dataset``, and the mean inference milliseconds per image."""
    predictions, targets, seconds = [], [], 0.0
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        begin = time.perf_counter()
        predictions += detector([image for image, _ in items])
        seconds += time.perf_counter() - begin
        targets += [target for _, target in items]
    return predictions, targets, 1000 * seconds / max(1, len(dataset))


@torch.no_grad()
def anchor_balance(detector: nn.Module, dataset: ShapesDataset, count: int = 16) -> dict[str, float]:
    """Foreground and background anchors per image under the detector's own matcher (§16: the imbalance a
    one-stage detector faces, which the RPN's sampler hides from the two-stage one)."""
    images, targets = zip(*[dataset[i] for i in range(min(count, len(dataset)))], strict=True)
    model: Any = detector
    batch, _ = batch_images(list(images), model.image_mean, model.image_std, model.size_divisible)
    if hasattr(model, "rpn"):
        pyramid = model.neck(model.backbone(batch))
        levels = [pyramid[name] for name in model.rpn_feature_names]
        generator, matcher = model.rpn.anchor_generator, model.rpn.matcher
    else:
        levels, generator, matcher = model.features(batch), model.anchor_generator, model.matcher
    anchors = generator(batch, levels)
    foreground = background = 0
    for image_anchors, target in zip(anchors, targets, strict=True):
        matches = matcher(box_iou(target["boxes"], image_anchors))
        foreground += int((matches >= 0).sum())
        background += int((matches == -1).sum())
    return {"anchors_per_image": anchors[0].shape[0], "foreground_per_image": foreground / len(images),
            "background_per_image": background / len(images),
            "background_per_foreground": background / max(1, foreground)}  # fmt: skip


def _evaluate(predictions: list, targets: list, num_classes: int) -> dict[str, Any]:
    coco = evaluate_coco(predictions, targets, num_classes=num_classes).as_dict()
    voc07 = evaluate_voc(predictions, targets, interpolation="11point", num_classes=num_classes)
    voc12 = evaluate_voc(predictions, targets, interpolation="all", num_classes=num_classes)
    return {"coco": coco, "voc07_mAP": voc07.mean_average_precision,
            "voc12_mAP": voc12.mean_average_precision, "voc12": voc12}  # fmt: skip


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _plot_curves(run_dir: Path, name: str, path: Path) -> None:
    plt = _pyplot()
    with (run_dir / "log.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    epochs = [float(r["epoch"]) for r in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    left.plot(epochs, [float(r["train_loss"]) for r in rows], marker="o")
    left.set(title=f"{name}: training loss", xlabel="epoch", ylabel="sum of losses")
    for key in ("AP", "AP50", "VOC07_mAP"):
        if key in rows[0]:
            right.plot(epochs, [float(r[key]) for r in rows], marker="o", label=key)
    right.set(title="validation", xlabel="epoch", ylim=(0, 1))
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _plot_pr(voc12: Any, name: str, path: Path) -> None:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 3.5))
    for label, (precision, recall) in enumerate(zip(voc12.precision, voc12.recall, strict=True)):
        if len(recall):
            ap = float(voc12.average_precision[label])
            axis.plot(recall, precision, label=f"{voc12.category_names[label]} (AP {ap:.2f})")
    axis.set(title=f"{name}: PR at IoU 0.5", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    if axis.get_legend_handles_labels()[0]:  # no curve at all when nothing was detected
        axis.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _prediction_grid(dataset: ShapesDataset, predictions: list, names: tuple[str, ...], path: Path) -> None:
    tiles = [
        draw_detections(dataset[i][0], predictions[i], names, 0.3, scale=2)
        for i in range(min(8, len(dataset)))
    ]
    width, height = tiles[0].size
    grid = Image.new("RGB", (width * 4, height * ((len(tiles) + 3) // 4)), "white")
    for index, tile in enumerate(tiles):
        grid.paste(tile, ((index % 4) * width, (index // 4) * height))
    grid.save(path)


def run_detection_job(
    out_dir: str | Path, settings: JobSettings | None = None, progress: bool = True
) -> dict:
    """Train, evaluate and compare the detectors of ``settings``; write report.html and summary.json."""
    settings = settings or JobSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"settings": asdict(settings), "models": {}}
    figures: dict[str, list[str]] = {}
    for model in settings.models:
        recipe = _recipe(settings, model)
        run_dir = out / model
        train_detector(recipe, run_dir, progress=progress)
        detector, label_map = load_detector(run_dir / "model.pt")
        val = ShapesDataset(settings.num_val, seed=settings.seed + 1000, config=shapes_config(recipe))
        predictions, targets, milliseconds = predict_dataset(detector, val)
        evaluation = _evaluate(predictions, targets, label_map.num_classes)
        crowded = ShapesDataset(settings.num_crowded, seed=settings.seed + 2000,
                                config=ShapesConfig.crowded_preset(settings.image_size))  # fmt: skip
        nms = {}
        for method in NMS_METHODS:
            _set_nms(detector, method)
            crowd_predictions, crowd_targets, _ = predict_dataset(detector, crowded)
            result = evaluate_coco(
                crowd_predictions, crowd_targets, num_classes=label_map.num_classes
            ).as_dict()
            nms[method] = {"AP": result["AP"], "AP50": result["AP50"]}
        _set_nms(detector, recipe.nms_method)
        names = [f"{model}_curves.png", f"{model}_pr.png", f"{model}_predictions.png"]
        _plot_curves(run_dir, model, out / names[0])
        _plot_pr(evaluation["voc12"], model, out / names[1])
        _prediction_grid(val, predictions, label_map.names, out / names[2])
        figures[model] = names
        summary["models"][model] = {
            "coco": evaluation["coco"], "voc07_mAP": evaluation["voc07_mAP"],
            "voc12_mAP": evaluation["voc12_mAP"],
            "ms_per_image": milliseconds, "crowded_nms": nms, "anchors": anchor_balance(detector, val),
            "parameters": sum(p.numel() for p in detector.parameters()),
            "train_seconds": json.loads((run_dir / "metrics.json").read_text())["train_seconds"],
        }  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    (out / "report.html").write_text(_html(summary, figures), encoding="utf-8")
    return summary


def table_rows(summary: dict) -> list[tuple[str, ...]]:
    """One row per model: the numbers the report and the terminal table show."""
    rows: list[tuple[str, ...]] = []
    for model, entry in summary["models"].items():
        nms = entry["crowded_nms"]
        coco = entry["coco"]
        rows.append((model, f"{coco['AP']:.3f}", f"{coco['AP50']:.3f}", f"{entry['voc07_mAP']:.3f}",
                     f"{entry['voc12_mAP']:.3f}", f"{nms['hard']['AP']:.3f}",
                     f"{nms['soft_linear']['AP']:.3f}",
                     f"{nms['soft_gaussian']['AP']:.3f}", f"{entry['ms_per_image']:.1f}",
                     f"{entry['anchors']['background_per_foreground']:.0f}:1",
                     f"{entry['train_seconds']:.0f}"))  # fmt: skip
    return rows


HEADERS = ("model", "COCO AP", "AP50", "VOC07 mAP", "VOC12 mAP", "crowded AP hard NMS", "soft linear",
           "soft gaussian", "ms/image", "bg:fg anchors", "train s")  # fmt: skip


def render_table(summary: dict) -> Any:
    """The summary as a ``rich`` table (print it with ``rich.print``)."""
    from rich.table import Table

    table = Table(title="shapes: one-stage vs two-stage")
    for header in HEADERS:
        table.add_column(header, justify="left" if header == "model" else "right")
    for row in table_rows(summary):
        table.add_row(*row)
    return table


def _html(summary: dict, figures: dict[str, list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADERS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table_rows(summary)
    )
    sections = "".join(
        f"<h2>{html.escape(model)}</h2>"
        + "".join(f'<img src="{html.escape(name)}" alt="{html.escape(name)}">' for name in names)
        for model, names in figures.items()
    )
    settings = html.escape(json.dumps(summary["settings"]))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>visionkit detection report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{margin:4px;max-width:100%}</style>"
        f"</head><body><h1>Detection on shapes</h1><p>settings: <code>{settings}</code></p>"
        f"<table><tr>{head}</tr>{body}</table>{sections}</body></html>\n"
    )
