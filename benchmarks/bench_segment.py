"""Semantic segmentation (issue 16, handbook §22): the FCN targets, measured.

Three parts (all by default; one with ``--part``)::

    python benchmarks/bench_segment.py --part target   # small FCN-8s on shapes, 5 minutes of CPU training
    python benchmarks/bench_segment.py --part skips    # FCN-32s vs 16s vs 8s, same steps, bootstrap intervals
    python benchmarks/bench_segment.py --part speed    # inference ms/image at 128² and 512²
    python benchmarks/bench_segment.py --part memory   # peak memory of a 512² forward per model

* **target**: ``fcn8s_small`` trained on ``shapes`` with ``time_limit`` seconds (default 300) on one thread;
  its validation mIoU (128 images) against the target 0.85, with the steps, seconds and machine load.
* **skips**: ``fcn32s_small``, ``fcn16s_small``, ``fcn8s_small`` — one encoder, the same recipe, seed, data
  order and number of steps — scored on 256 validation images: mIoU and the mIoU of a 3-pixel band around
  class edges; each gain with a paired-bootstrap 95 % interval over images
  (:func:`visionkit.metrics.segmentation_compare.bootstrap_gain`, 2000 draws).
* **speed**: every registered FCN, batch 1, timed in interleaved rounds in one process (medians), beside
  torchvision's dilated ``fcn_resnet50`` when torchvision is importable (``.venv-bench``).
* **memory**: per model, a fresh process builds it and runs one 512² forward; its peak resident memory
  (``VmHWM``) after building and after the forward.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from visionkit.engine.segment import (
    SegmentRecipe,
    build_datasets,
    evaluate_segmenter,
    load_segmenter,
    train_segmenter,
)
from visionkit.metrics.segmentation_compare import bootstrap_gain
from visionkit.models import create_model
from visionkit.models.segmentation import list_segmenters

SPEED_SIZES = (128, 512)


def _load() -> str:
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def part_target(seconds: float) -> None:
    recipe = SegmentRecipe(model="fcn8s_small", num_train=1024, num_val=128, epochs=40, time_limit=seconds,
                           eval_every=2, threads=1, progress=False, tensorboard=False)  # fmt: skip
    load_before = _load()
    with tempfile.TemporaryDirectory() as folder:
        metrics = train_segmenter(recipe, Path(folder) / "run", log=lambda _: None)
    load = f"load before {load_before}, after {_load()}"
    print(f"\n### target: fcn8s_small, time_limit={seconds:g} s, 1 thread ({load})\n")
    print("| steps | epochs | train s | val mIoU | pixel acc. | boundary mIoU | target mIoU ≥ 0.85 |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    met = "**met**" if metrics["mIoU"] >= 0.85 else "not met"
    cells = [metrics["steps"], metrics["epochs"], f"{metrics['train_seconds']:.0f}", f"{metrics['mIoU']:.4f}"]
    cells += [f"{metrics['pixel_accuracy']:.4f}", f"{metrics['boundary_mIoU']:.4f}", met]
    print("| " + " | ".join(map(str, cells)) + " |")


def _train_and_score(model: str, epochs: int, folder: Path) -> tuple[dict, object]:
    recipe = SegmentRecipe(model=model, num_train=1024, num_val=256, epochs=epochs, eval_every=epochs,
                           threads=1, progress=False, tensorboard=False)  # fmt: skip
    start = time.perf_counter()
    metrics = train_segmenter(recipe, folder / model, log=lambda _: None)
    segmenter, label_map = load_segmenter(folder / model / "last.pt")
    evaluation = evaluate_segmenter(segmenter, build_datasets(recipe).val, label_map.names, boundary_width=3)
    return {**metrics, "wall": time.perf_counter() - start}, evaluation


def part_skips(epochs: int, resamples: int) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for model in ("fcn32s_small", "fcn16s_small", "fcn8s_small"):
            results[model] = _train_and_score(model, epochs, Path(folder))
    budget = f"{epochs} epochs × 1024 images (same steps), 256 validation images, 1 thread"
    print(f"\n### skips: {budget} (load {_load()})\n")
    print("| model | steps | train s | mIoU | pixel acc. | boundary mIoU (3 px) | boundary acc. |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for model, (metrics, evaluation) in results.items():
        result, band = evaluation.result, evaluation.boundary  # type: ignore[attr-defined]
        print(f"| {model} | {metrics['steps']} | {metrics['train_seconds']:.0f} | {result.mean_iou:.4f} | "
              f"{result.pixel_accuracy:.4f} | {band.mean_iou:.4f} | {band.pixel_accuracy:.4f} |")  # fmt: skip
    print("\n| gain | mIoU gain [95 % CI] | P(gain ≤ 0) | boundary mIoU gain [95 % CI] | P(gain ≤ 0) |")
    print("|---|---:|---:|---:|---:|")
    for low, high in (
        ("fcn32s_small", "fcn16s_small"),
        ("fcn16s_small", "fcn8s_small"),
        ("fcn32s_small", "fcn8s_small"),
    ):
        base, cand = results[low][1], results[high][1]
        whole = bootstrap_gain(base.matrices, cand.matrices, resamples=resamples)  # type: ignore[attr-defined]
        band = bootstrap_gain(base.boundary_matrices, cand.boundary_matrices, resamples=resamples)  # type: ignore[attr-defined]
        cells = [f"{low.removesuffix('_small')} → {high.removesuffix('_small')}"]
        for gain in (whole, band):
            cells += [
                f"{gain['gain']:+.4f} [{gain['low']:+.4f}, {gain['high']:+.4f}]",
                f"{gain['below_zero']:.3f}",
            ]
        print("| " + " | ".join(cells) + " |")


def _torchvision_fcn() -> torch.nn.Module | None:
    try:
        from torchvision.models.segmentation import fcn_resnet50
    except ImportError:
        return None
    return fcn_resnet50(weights=None, weights_backbone=None, num_classes=21, aux_loss=False).eval()


def _peak_mib() -> float:
    """This process's peak resident memory: ``VmHWM`` (reset by ``exec``, unlike ``ru_maxrss``, which a
    child inherits from the parent that forked it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(name: str, size: int) -> None:
    """Run in a fresh process: print the peak RSS (MiB) after building ``name`` and after one forward."""
    model = _torchvision_fcn() if name == "torchvision_fcn_resnet50" else create_model(name).eval()
    built = _peak_mib()
    with torch.no_grad():
        model(torch.rand(1, 3, size, size))
    print(json.dumps({"built": built, "peak": _peak_mib()}))


def _memory(name: str, size: int) -> dict:
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_segment; " \
           f"bench_segment._memory_child({name!r}, {size})"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _models() -> dict[str, torch.nn.Module]:
    models = {name: create_model(name).eval() for name in list_segmenters()}
    reference = _torchvision_fcn()
    if reference is not None:
        models["torchvision_fcn_resnet50"] = reference
    return models


def part_memory() -> None:
    print("\n### memory: a fresh process per model builds it and runs one 512² forward (batch 1)\n")
    print("| model | params (M) | peak RSS after building (MiB) | peak RSS after the forward (MiB) | added |")
    print("|---|---:|---:|---:|---:|")
    for name, model in _models().items():
        memory = _memory(name, 512)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        cells = [name, f"{params:.1f}", f"{memory['built']:.0f}", f"{memory['peak']:.0f}"]
        print("| " + " | ".join([*cells, f"{memory['peak'] - memory['built']:.0f}"]) + " |")


def part_speed(repeats: int) -> None:
    models = _models()
    samples: dict[tuple[str, int], list[float]] = {(n, s): [] for n in models for s in SPEED_SIZES}
    inputs = {size: torch.rand(1, 3, size, size) for size in SPEED_SIZES}
    with torch.no_grad():
        for model in models.values():  # warm-up
            model(inputs[SPEED_SIZES[0]])
        for _ in range(repeats):  # interleaved rounds: every model sees the same machine noise
            for size in SPEED_SIZES:
                for name, model in models.items():
                    start = time.perf_counter()
                    model(inputs[size])
                    samples[(name, size)].append((time.perf_counter() - start) * 1000)
    setting = f"batch 1, {torch.get_num_threads()} thread(s), medians of {repeats} interleaved rounds"
    print(f"\n### speed: {setting} (load {_load()})\n")
    print("| model | ms / image 128² | ms / image 512² |")
    print("|---|---:|---:|")
    for name in models:
        times = [statistics.median(samples[(name, size)]) for size in SPEED_SIZES]
        print(f"| {name} | {times[0]:.1f} | {times[1]:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("target", "skips", "speed", "memory", "all"), default="all")
    parser.add_argument("--seconds", type=float, default=300.0, help="target: training budget")
    parser.add_argument("--epochs", type=int, default=8, help="skips: epochs of 1024 images per model")
    parser.add_argument("--resamples", type=int, default=2000, help="skips: bootstrap draws")
    parser.add_argument("--repeats", type=int, default=5, help="speed: interleaved rounds")
    parser.add_argument("--threads", type=int, default=1, help="speed: torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")  # fmt: skip
    if args.part in ("target", "all"):
        part_target(args.seconds)
    if args.part in ("skips", "all"):
        part_skips(args.epochs, args.resamples)
    if args.part in ("speed", "all"):
        part_speed(args.repeats)
    if args.part in ("memory", "all"):
        part_memory()


if __name__ == "__main__":
    main()
