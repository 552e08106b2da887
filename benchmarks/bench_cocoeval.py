"""Speed of COCO box evaluation: pycocotools vs faster-coco-eval (C++) vs visionkit, same data, one process.

Run: ``python benchmarks/bench_cocoeval.py [--images 500]``. Workload (issue #4): 500 images, 80 classes,
~7 ground-truth boxes and ~100 detections per image (≈3.5 k boxes, ≈50 k detections): jittered true
positives, duplicates, wrong-class hits and random false positives, 2 % crowd regions. Each library runs
its whole path from the in-memory GT dict and results list (index, load results, evaluate, accumulate,
summarize); the stats of all three must be identical. Reference libraries are skipped when not installed
(``.venv-bench`` has faster-coco-eval). Times: median of ``--repeats`` runs, seconds, Python GC on.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from visionkit.metrics.detection.coco import evaluate_coco_sets
from visionkit.metrics.detection.io import load_coco_ground_truth, load_coco_results


def make_workload(num_images: int, num_classes: int = 80, seed: int = 0) -> tuple[dict, list[dict]]:
    """A COCO GT dict and a results list with the statistics named in the module docstring."""
    rng = np.random.default_rng(seed)
    gt: dict[str, Any] = {
        "images": [],
        "annotations": [],
        "categories": [{"id": c + 1} for c in range(num_classes)],
    }
    results: list[dict[str, Any]] = []
    for image_id in range(1, num_images + 1):
        gt["images"].append({"id": image_id, "width": 640, "height": 480})
        count = int(rng.poisson(7))
        xy = rng.random((count, 2)) * [560, 400]
        wh = np.exp(rng.uniform(np.log(8), np.log(300), (count, 2)))
        labels = rng.integers(1, num_classes + 1, count)
        for box_xy, box_wh, label in zip(xy, wh, labels, strict=True):
            area = float(box_wh[0] * box_wh[1] * rng.uniform(0.5, 0.9))  # segmentation area < box area
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [*map(float, box_xy), *map(float, box_wh)],
                    "area": area,
                    "iscrowd": int(rng.random() < 0.02),
                }
            )
            for _ in range(int(rng.integers(1, 6))):  # true positive plus duplicates / wrong class
                jitter = rng.normal(0, 0.1, 4) * np.r_[box_wh, box_wh]
                wrong = rng.random() < 0.1
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": int(rng.integers(1, num_classes + 1)) if wrong else int(label),
                        "bbox": [
                            float(box_xy[0] + jitter[0]),
                            float(box_xy[1] + jitter[1]),
                            float(max(box_wh[0] + jitter[2], 1)),
                            float(max(box_wh[1] + jitter[3], 1)),
                        ],
                        "score": float(rng.random()),
                    }
                )
        for _ in range(max(0, 100 - 3 * count)):  # background false positives
            x, y = rng.random(2) * [600, 440]
            w, h = np.exp(rng.uniform(np.log(4), np.log(250), 2))
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, num_classes + 1)),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "score": float(rng.random() * 0.6),
                }
            )
    return gt, results


def run_pycocotools(gt: dict, results: list[dict], module: str) -> np.ndarray:
    if module == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval as Evaluator
    else:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as Evaluator
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluator = Evaluator(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats[:12], dtype=np.float64)


def run_visionkit(gt: dict, results: list[dict]) -> np.ndarray:
    ground_truth = load_coco_ground_truth(gt)
    return evaluate_coco_sets(ground_truth, load_coco_results(results, ground_truth)).stats


def timed(function: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    samples, stats = [], np.zeros(12)
    for _ in range(repeats):
        start = time.perf_counter()
        stats = function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gt, results = make_workload(args.images)
    print(
        f"{args.images} images, 80 classes, {len(gt['annotations'])} ground-truth boxes, "
        f"{len(results)} detections"
    )
    rows: dict[str, tuple[float, np.ndarray]] = {}
    for name, module in (("pycocotools", "pycocotools"), ("faster-coco-eval", "faster_coco_eval")):
        try:
            __import__(module)
        except ImportError:
            print(f"{name}: not installed, skipped")
            continue
        rows[name] = timed(
            lambda module=module: run_pycocotools(gt, results, module),
            1 if module == "pycocotools" else args.repeats,
        )
    rows["visionkit"] = timed(lambda: run_visionkit(gt, results), args.repeats)
    base = rows.get("pycocotools", rows["visionkit"])[0]
    print(
        f"{'library':<18}{'seconds':>10}{'speed-up':>10}  {'AP':>8}{'AP50':>8}"
        f"{'max |Δstats| vs visionkit':>28}"
    )
    for name, (seconds, stats) in rows.items():
        difference = np.abs(stats - rows["visionkit"][1]).max()
        print(
            f"{name:<18}{seconds:>10.3f}{base / seconds:>9.1f}×  {stats[0]:>8.4f}{stats[1]:>8.4f}"
            f"{difference:>28.2e}"
        )


if __name__ == "__main__":
    main()
