"""The default detection recipe against a fixed wall-clock budget, and each of its parts switched on / off.

    .venv/bin/python benchmarks/bench_detect_recipe.py                 # 300 s per variant, ~40 min
    .venv/bin/python benchmarks/bench_detect_recipe.py --seconds 60 --variants default no_ema
    .venv/bin/python benchmarks/bench_detect_recipe.py --epochs 8 --threads 1   # step-matched, any load

The data are the issue's YOLO-folder split of ``shapes``: 1280 training images (``visionkit data shapes
--num-images 1280 --seed 0 --format yolo``) and 128 validation images (``--seed 1000``), exported into a
temporary folder. Every variant trains ``visionkit train detect`` with ``time_limit`` = the budget (the
schedule ends with the budget), then is evaluated on the validation split. Each variant's COCO AP is
compared with the default recipe's on the same images by a paired bootstrap (95% interval of the gain,
``visionkit.lab.demo.bootstrap_ap_gain``). Run it on a quiet machine: the budget is wall-clock time.

``--epochs N`` gives every variant the same number of optimizer steps instead (N epochs of 1280 images; the
schedule ends with them): the comparison then does not depend on the machine's load, and the table's
``ms/step`` column (measured, so load-dependent) says what a wall-clock budget would buy. The first variant
listed is the baseline of the interval column; ``--keep DIR`` keeps the run folders, and ``--runs A B ...``
compares finished run folders (named by variant) without training, e.g. runs of different budgets.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from visionkit.data.datasets import read_annotations
from visionkit.data.datasets.base import DetectionDataset
from visionkit.engine.detect import DetectRecipe, load_detector, predict, train_detector
from visionkit.lab.demo import bootstrap_ap_gain
from visionkit.metrics.detection.coco import evaluate_coco

#: variant -> overrides of the default recipe (each switches one part on or off, or changes one choice)
VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "ema": {"ema_decay": 0.999},
    "scale_jitter": {"scale_jitter": (0.75, 1.25)},
    "mosaic": {"mosaic": 0.5},
    "giou_box_loss": {"box_loss": "giou"},
    "no_warmup": {"warmup_steps": 0},
    "no_flip": {"hflip": 0.0},
    "faster_rcnn": {"model": "fasterrcnn_plain_fpn"},
    # YOLOv3 with the papers' loss, and with darknet's later keys (several anchors per object, GIoU),
    # RetinaNet's objectness prior and Soft-NMS: the shapes recipe of docs/guides/yolo.md
    "yolov3_paper": {"model": "yolov3_plain"},
    "yolov3": {
        "model": "yolov3_plain",
        "objectness_prior": 0.01,
        "assign_threshold": 0.1,
        "box_loss": "giou",
        "nms_method": "soft_gaussian",
    },
}


def export(folder: Path) -> tuple[Path, Path]:
    for name, count, seed in (("train", 1280, 0), ("val", 128, 1000)):
        command = [
            sys.executable,
            "-m",
            "visionkit.cli",
            "data",
            "shapes",
            "--num-images",
            str(count),
            "--seed",
            str(seed),
            "--format",
            "yolo",
            "--out",
            str(folder / name),
        ]
        subprocess.run(command, check=True, capture_output=True)
    return folder / "train" / "yolo", folder / "val" / "yolo"


def table(results: dict[str, tuple[dict, list]], val_set: DetectionDataset, resamples: int) -> None:
    """Print one row per run; the first run is the baseline of the paired-bootstrap column."""
    targets = [val_set[i][1] for i in range(len(val_set))]
    names = list(results)
    base = results[names[0]][1]
    base_ap = evaluate_coco(base, targets, num_classes=3).as_dict()["AP"]
    print(f"| variant | steps | ms/step | COCO AP | AP50 | AP75 | AP − {names[0]} (95% CI) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for name, (metrics, found) in results.items():
        coco = evaluate_coco(found, targets, num_classes=3).as_dict()
        gain = ""
        if name != names[0]:
            interval = bootstrap_ap_gain(base, found, val_set, resamples)
            low, high = interval["low"], interval["high"]
            gain = f"{coco['AP'] - base_ap:+.4f} ({low:+.4f} … {high:+.4f})"
        numbers = f"{coco['AP']:.4f} | {coco['AP50']:.4f} | {coco['AP75']:.4f}"
        per_step = 1000 * metrics["train_seconds"] / max(metrics["steps"], 1)
        print(f"| {name} | {metrics['steps']} | {per_step:.0f} | {numbers} | {gain} |")


def evaluate_runs(runs: list[Path], val_set: DetectionDataset) -> dict[str, tuple[dict, list]]:
    """Predictions of finished run folders (``model.pt``, ``metrics.json``) on the validation split."""
    images = [val_set[i][0] for i in range(len(val_set))]
    results: dict[str, tuple[dict, list]] = {}
    for run in runs:
        detector, _ = load_detector(run / "model.pt")
        metrics = json.loads((run / "metrics.json").read_text())
        results[run.name] = (metrics, predict(detector, images))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="training budget per variant")
    parser.add_argument("--epochs", type=int, default=0, help="> 0: a budget in epochs instead of seconds")
    parser.add_argument(
        "--variants",
        nargs="*",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        help="variants to train, in order; the first is the baseline of the interval column",
    )
    parser.add_argument("--keep", type=Path, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument(
        "--runs",
        type=Path,
        nargs="*",
        help="compare finished run folders instead of training (first: baseline)",
    )
    parser.add_argument("--resamples", type=int, default=500)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        train, val = export(Path(folder))
        val_set = DetectionDataset(read_annotations(val, "yolo"))
        if args.runs:
            results = evaluate_runs(args.runs, val_set)
        else:
            results = train_variants(args, train, val, val_set, args.keep or Path(folder) / "runs")
        budget = f"{args.epochs} epochs" if args.epochs else f"{args.seconds:.0f} s"
        budget = "each run's own (steps column)" if args.runs else budget
        print(f"\ntorch {torch.__version__}, threads {torch.get_num_threads()}, budget {budget} per variant")
        table(results, val_set, args.resamples)


def train_variants(
    args: argparse.Namespace, train: Path, val: Path, val_set: DetectionDataset, runs: Path
) -> dict[str, tuple[dict, list]]:
    images = [val_set[i][0] for i in range(len(val_set))]
    results: dict[str, tuple[dict, list]] = {}
    for name in dict.fromkeys(args.variants):
        recipe = DetectRecipe(
            data=str(train),
            val_data=str(val),
            time_limit=0.0 if args.epochs else args.seconds,
            epochs=args.epochs or 1000,
            eval_every=args.epochs or 1000,
            progress=False,
            tensorboard=False,
            threads=args.threads,
            **VARIANTS[name],
        )  # type: ignore[arg-type]
        metrics = train_detector(recipe, runs / name, log=lambda _: None)
        detector, _ = load_detector(runs / name / "model.pt")
        results[name] = (metrics, predict(detector, images))
        seconds = metrics["train_seconds"]
        print(f"{name}: {metrics['steps']} steps in {seconds:.0f} s, AP {metrics['AP']:.4f}", flush=True)
    return results


if __name__ == "__main__":
    main()
