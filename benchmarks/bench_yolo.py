"""YOLOv3 vs YOLOv2 (issue 14, handbook §18): accuracy of trained runs on the shapes validation split with a
paired bootstrap, and speed beside RetinaNet and Faster R-CNN on the same images.

    python benchmarks/bench_yolo.py accuracy RUN_A RUN_B [--resamples 1000]   # two `train detect` folders
    python benchmarks/bench_yolo.py speed [--repeats 10]

``accuracy``: both runs' ``model.pt`` predict the validation split of their recipe (shapes: the same
images for both, ``num_val`` images of seed ``seed + 1000``); COCO AP, AP50, AP75, AP_small, AP_medium per
run, and for AP and AP_small the paired-bootstrap 95% interval of ``B − A`` (each resample draws the
images with replacement and scores both runs on the same draw: the image-sampling noise of the split).

``speed``: the demo-size detectors (``*_plain``) with random weights on 8 shapes images of 128²: inference
ms per image (batch 8, eval mode, score threshold 0.05) and training images/s (one forward + backward +
AdamW step), median of ``repeats`` calls, one thread.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from timing import median_ms

from visionkit.data.shapes import ShapesConfig, ShapesDataset
from visionkit.engine.detect import load_detector
from visionkit.metrics.detection.coco import evaluate_coco
from visionkit.models import create_model

SPEED_MODELS = ("yolov3_plain", "yolov2_plain", "retinanet_plain_fpn", "fasterrcnn_plain_fpn")
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


def accuracy(run_a: Path, run_b: Path, resamples: int, seed: int = 0) -> None:
    dataset, other = _validation(run_a), _validation(run_b)
    if (len(other), other.seed, other.config) != (len(dataset), dataset.seed, dataset.config):
        raise SystemExit("the two runs validate on different splits")
    targets = [{k: v for k, v in dataset[i][1].items() if k != "image_id"} for i in range(len(dataset))]
    predictions = [_predict(run, dataset) for run in (run_a, run_b)]
    for run, found in zip((run_a, run_b), predictions, strict=True):
        print(run.name, {k: round(v, 4) for k, v in _scores(found, targets).items()})
    generator = np.random.default_rng(seed)
    gains: dict[str, list[float]] = {"AP": [], "APs": []}
    for _ in range(resamples):
        draw = generator.integers(0, len(dataset), len(dataset))
        drawn = [targets[i] for i in draw]
        a, b = (_scores([found[i] for i in draw], drawn) for found in predictions)
        for key in gains:
            gains[key].append(b[key] - a[key])
    full = [_scores(found, targets) for found in predictions]
    for key, values in gains.items():
        low, high = np.percentile(values, [2.5, 97.5])
        gain = full[1][key] - full[0][key]
        print(f"{key}: {run_b.name} - {run_a.name} = {gain:+.4f} (95% CI {low:+.4f} … {high:+.4f})")


def _speed_row(name: str, images: list, targets: list, repeats: int) -> str:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3)
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
    return f"| {name} | {count:,} | {infer_ms / len(images):.1f} | {len(images) / (train_ms / 1000):.1f} |"


def speed(repeats: int) -> None:
    torch.set_num_threads(1)
    dataset = ShapesDataset(8, seed=0)
    images, targets = (list(x) for x in zip(*[dataset[i] for i in range(8)], strict=True))
    print("| model | parameters | inference ms / image | training images / s |")
    print("|---|---:|---:|---:|")
    for name in SPEED_MODELS:
        print(_speed_row(name, images, targets, repeats))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("accuracy")
    compare.add_argument("run_a", type=Path)
    compare.add_argument("run_b", type=Path)
    compare.add_argument("--resamples", type=int, default=1000)
    timing = commands.add_parser("speed")
    timing.add_argument("--repeats", type=int, default=10)
    arguments = parser.parse_args()
    if arguments.command == "accuracy":
        accuracy(arguments.run_a, arguments.run_b, arguments.resamples)
    else:
        speed(arguments.repeats)


if __name__ == "__main__":
    main()
