"""YOLOv3 vs YOLOv2 (issue 14, handbook §18): accuracy of trained runs on the shapes validation split with a
paired bootstrap, and speed beside RetinaNet and Faster R-CNN on the same images.

    python benchmarks/bench_yolo.py accuracy BASE RUN [RUN ...] [--resamples 1000]   # `train detect` folders
    python benchmarks/bench_yolo.py speed [--repeats 10]
    python benchmarks/bench_yolo.py nms RUN [RUN ...] --data FOLDER [--resamples 500]   # hard vs Soft-NMS

``accuracy``: every run's ``model.pt`` predicts the validation split of its recipe (shapes: the same
images for all, ``num_val`` images of seed ``seed + 1000``); a table of COCO AP, AP50, AP75, AP_small,
AP_medium per run, and for AP, AP75 and AP_small the paired-bootstrap 95% interval of ``RUN − BASE`` (each
resample draws the images with replacement and scores every run on the same draw: the image-sampling
noise of the split, not training-seed noise).

``nms``: every run's ``model.pt`` on the images of a YOLO-format ``--data`` folder (e.g. the issue's
validation split, or a held-out one the post-processing was not chosen on), decoded with its own hard NMS
and with Gaussian Soft-NMS (the same weights): COCO AP, AP50, AP75 of each and the paired-bootstrap 95%
interval of the Soft-NMS gain.

``speed``: the demo-size detectors (``*_plain``) with random weights on 8 shapes images of 128²: inference
ms per image (batch 8, eval mode, score threshold 0.05) and training images/s (one forward + backward +
AdamW step), median of ``repeats`` calls, one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from timing import median_ms

from visionkit.data.datasets import read_annotations
from visionkit.data.datasets.base import DetectionDataset
from visionkit.data.shapes import ShapesConfig, ShapesDataset
from visionkit.engine.detect import load_detector, predict
from visionkit.lab.demo import bootstrap_ap_gain
from visionkit.metrics.detection.coco import evaluate_coco
from visionkit.models import create_model

#: (row label, model, options): the papers' YOLOv3 and the shapes recipe (several anchors, GIoU) differ
#: only in the loss, so only their training speed can differ
SPEED_MODELS = (
    ("yolov3_plain", "yolov3_plain", {}),
    ("yolov3_plain (recipe)", "yolov3_plain", {"assign_threshold": 0.1, "box_loss": "giou"}),
    ("yolov2_plain", "yolov2_plain", {}),
    ("retinanet_plain_fpn", "retinanet_plain_fpn", {}),
    ("fasterrcnn_plain_fpn", "fasterrcnn_plain_fpn", {}),
)
KEYS = ("AP", "AP50", "AP75", "APs", "APm")


def _validation(run: Path) -> ShapesDataset:
    recipe = json.loads((run / "config.json").read_text(encoding="utf-8"))
    if recipe.get("data", "shapes") != "shapes":
        raise SystemExit(f"{run}: accuracy compares shapes runs only")
    config = ShapesConfig(image_size=recipe["image_size"])
    return ShapesDataset(recipe["num_val"], seed=recipe["seed"] + 1000, config=config)


def _predict(run: Path, dataset: ShapesDataset) -> list[dict]:
    detector, _ = load_detector(run / "model.pt")
    predictions = []
    with torch.no_grad():
        for start in range(0, len(dataset), 16):
            images = [dataset[i][0] for i in range(start, min(start + 16, len(dataset)))]
            predictions += detector(images)
    return predictions


def _scores(predictions: list[dict], targets: list[dict]) -> dict[str, float]:
    return {
        k: v for k, v in evaluate_coco(predictions, targets, num_classes=3).as_dict().items() if k in KEYS
    }


def nms(runs: list[Path], data: Path, resamples: int) -> None:
    """Hard NMS vs Gaussian Soft-NMS on the same trained weights (module docstring)."""
    dataset = DetectionDataset(read_annotations(data, "yolo"))
    images = [dataset[i][0] for i in range(len(dataset))]
    targets = [
        {k: v for k, v in dataset[i][1].items() if k in ("boxes", "labels")} for i in range(len(dataset))
    ]
    print("| run | NMS | AP | AP50 | AP75 | Soft − hard AP (95% CI) |")
    print("|---|---|---:|---:|---:|---|")
    for run in runs:
        detector, _ = load_detector(run / "model.pt")
        found = {}
        for method in ("hard", "soft_gaussian"):
            detector.postprocess = dataclasses.replace(detector.postprocess, nms_method=method)
            found[method] = predict(detector, images)
            scores = _scores(found[method], targets)
            gain = ""
            if method != "hard":
                interval = bootstrap_ap_gain(found["hard"], found[method], dataset, resamples)
                gain = f"{interval['low']:+.3f} … {interval['high']:+.3f}"
            row = (
                f"| {run.name} | {method} | {scores['AP']:.4f} | {scores['AP50']:.4f} | {scores['AP75']:.4f}"
            )
            print(f"{row} | {gain} |")


def _steps(run: Path) -> int:
    rows = (run / "log.csv").read_text(encoding="utf-8").splitlines()
    return int(float(rows[-1].split(",")[1])) if len(rows) > 1 else 0


def accuracy(base: Path, others: list[Path], resamples: int, seed: int = 0) -> None:
    """A markdown table: each run's scores and, for every run after ``base``, the paired-bootstrap 95%
    interval of its gain over ``base`` in AP, AP75 and AP_small (all runs scored on the same draws)."""
    runs = [base, *others]
    dataset = _validation(base)
    for run in others:
        other = _validation(run)
        if (len(other), other.seed, other.config) != (len(dataset), dataset.seed, dataset.config):
            raise SystemExit(f"{run} validates on another split than {base}")
    targets = [{k: v for k, v in dataset[i][1].items() if k != "image_id"} for i in range(len(dataset))]
    predictions = [_predict(run, dataset) for run in runs]
    full = [_scores(found, targets) for found in predictions]
    generator = np.random.default_rng(seed)
    gained = ("AP", "AP75", "APs")
    gains = {(r, k): [] for r in range(1, len(runs)) for k in gained}
    for _ in range(resamples):
        draw = generator.integers(0, len(dataset), len(dataset))
        drawn = [targets[i] for i in draw]
        scored = [_scores([found[i] for i in draw], drawn) for found in predictions]
        for (r, key), values in gains.items():
            values.append(scored[r][key] - scored[0][key])
    head = "| run | steps | AP | AP50 | AP75 | AP_small | AP_medium "
    print(head + "| Δ AP (95% CI) | Δ AP75 (95% CI) | Δ AP_small (95% CI) |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---|")
    for r, run in enumerate(runs):
        cells = [f"{full[r][k]:.3f}" for k in KEYS]
        deltas = []
        for key in gained:
            if r == 0:
                deltas.append("(base)")
                continue
            low, high = np.percentile(gains[(r, key)], [2.5, 97.5])
            deltas.append(f"{full[r][key] - full[0][key]:+.3f} ({low:+.3f} … {high:+.3f})")
        print(f"| {run.name} | {_steps(run)} | " + " | ".join(cells + deltas) + " |")


def _speed_row(label: str, name: str, options: dict, images: list, targets: list, repeats: int) -> str:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **options)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)

    def train_step() -> None:
        model.train()
        losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(images)

    train_ms = median_ms(train_step, repeats)
    infer_ms = median_ms(infer, repeats)
    count = sum(p.numel() for p in model.parameters())
    return f"| {label} | {count:,} | {infer_ms / len(images):.1f} | {len(images) / (train_ms / 1000):.1f} |"


def speed(repeats: int) -> None:
    torch.set_num_threads(1)
    dataset = ShapesDataset(8, seed=0)
    images, targets = (list(x) for x in zip(*[dataset[i] for i in range(8)], strict=True))
    print("| model | parameters | inference ms / image | training images / s |")
    print("|---|---:|---:|---:|")
    for label, name, options in SPEED_MODELS:
        print(_speed_row(label, name, options, images, targets, repeats))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("accuracy")
    compare.add_argument("base", type=Path)
    compare.add_argument("runs", type=Path, nargs="+")
    compare.add_argument("--resamples", type=int, default=1000)
    soft = commands.add_parser("nms")
    soft.add_argument("runs", type=Path, nargs="+")
    soft.add_argument("--data", type=Path, required=True, help="a YOLO-format folder (images/ + labels/)")
    soft.add_argument("--resamples", type=int, default=500)
    timing = commands.add_parser("speed")
    timing.add_argument("--repeats", type=int, default=10)
    arguments = parser.parse_args()
    if arguments.command == "accuracy":
        accuracy(arguments.base, arguments.runs, arguments.resamples)
    elif arguments.command == "nms":
        nms(arguments.runs, arguments.data, arguments.resamples)
    else:
        speed(arguments.repeats)


if __name__ == "__main__":
    main()
