"""Detection data loading and detector speed: visionkit vs torchvision, side by side in one process.

    .venv-bench/bin/python benchmarks/bench_detection.py      # with torchvision
    .venv/bin/python benchmarks/bench_detection.py            # visionkit only

1. Reading coco128 (128 JPEGs + COCO JSON → float image tensor and box targets): visionkit
   ``CocoDetection`` vs ``torchvision.datasets.CocoDetection`` + tensor conversion (images/s).
2. RetinaNet-ResNet50-FPN and Faster R-CNN-ResNet50-FPN, random weights, 2 images of 320×320 (no resize
   in either library): inference and one training step (forward + backward), median milliseconds.
   Both use 91 classes, 1000 pre-NMS / 1000 post-NMS RPN proposals at test time, 512 RoIs per image.
3. The demo-size detectors (``retinanet_plain_fpn``, ``fasterrcnn_plain_fpn``) on 8 shapes images of 128²:
   one training step and inference, median milliseconds (visionkit only: torchvision has no such model).
4. Data-parallel training through ``visionkit train detect --nproc 2`` (gloo, one thread per process) vs
   one process, the same global batch of 8: seconds per optimizer step over a fixed number of steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from timing import median_ms

from visionkit.data.datasets import CocoDetection
from visionkit.models import create_model

try:
    import torchvision
    from torchvision.models import detection as tv_detection
except ImportError:  # the benchmark also runs without the reference library
    torchvision = None

COCO128 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "coco128"


def bench_loading() -> list[tuple[str, str, str]]:
    annotation = COCO128 / "annotations" / "instances_train2017_first128.json"
    if not annotation.is_file():
        return [("coco128 loading", "skipped (no ../shared/data/coco128)", "")]
    images = COCO128 / "images" / "train2017"
    ours = CocoDetection(images, annotation)

    def read_ours() -> None:
        for index in range(len(ours)):
            ours[index]

    rows = [("coco128 read, images/s", f"{len(ours) / (median_ms(read_ours, 2) / 1000):.0f}", "")]
    if torchvision is not None:
        import contextlib
        import io

        from torchvision.transforms.functional import pil_to_tensor

        with contextlib.redirect_stdout(io.StringIO()):
            reference = torchvision.datasets.CocoDetection(str(images), str(annotation))

        def read_reference() -> None:
            for index in range(len(reference)):
                image, annotations = reference[index]
                pil_to_tensor(image.convert("RGB")).float().div(255)
                torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)

        rows[0] = (rows[0][0], rows[0][1], f"{len(reference) / (median_ms(read_reference, 2) / 1000):.0f}")
    return rows


def _targets() -> list[dict[str, torch.Tensor]]:
    boxes = torch.tensor(
        [[20.0, 30.0, 120.0, 160.0], [150.0, 40.0, 300.0, 200.0], [60.0, 200.0, 110.0, 260.0]]
    )
    return [{"boxes": boxes.clone(), "labels": torch.tensor([1, 5, 17])} for _ in range(2)]


def _tv_model(name: str) -> torch.nn.Module:
    builder = getattr(tv_detection, name)
    return builder(weights=None, weights_backbone=None, num_classes=91, min_size=320, max_size=320)


def bench_models(repeats: int) -> list[tuple[str, str, str]]:
    torch.manual_seed(0)
    images = [torch.rand(3, 320, 320) for _ in range(2)]
    rows = []
    for name, tv_name in (("retinanet_resnet50_fpn", "retinanet_resnet50_fpn"),
                          ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn")):  # fmt: skip
        models = {"visionkit": create_model(name, num_classes=91)}
        if torchvision is not None:
            models["torchvision"] = _tv_model(tv_name)
        inference, training = {}, {}
        for library, model in models.items():
            model.eval()
            with torch.no_grad():
                inference[library] = median_ms(lambda m=model: m(images), repeats)
            model.train()

            def step(m: torch.nn.Module = model) -> None:
                sum(m(images, _targets()).values()).backward()

            training[library] = median_ms(step, repeats)
        reference = torchvision is not None
        rows.append((f"{name} inference ms", f"{inference['visionkit']:.0f}",
                     f"{inference['torchvision']:.0f}" if reference else ""))  # fmt: skip
        rows.append((f"{name} train step ms", f"{training['visionkit']:.0f}",
                     f"{training['torchvision']:.0f}" if reference else ""))  # fmt: skip
    return rows


def bench_small(repeats: int) -> list[tuple[str, str, str]]:
    from visionkit.data.shapes import ShapesDataset

    dataset = ShapesDataset(8, seed=0)
    images, targets = [dataset[i][0] for i in range(8)], [dataset[i][1] for i in range(8)]
    rows = []
    for name in ("retinanet_plain_fpn", "fasterrcnn_plain_fpn"):
        torch.manual_seed(0)
        model = create_model(name, num_classes=3)

        def step(m: torch.nn.Module = model) -> None:
            sum(m.train()(images, targets).values()).backward()

        rows.append((f"{name} train step (8 × 128²) ms", f"{median_ms(step, repeats):.0f}", ""))
        with torch.no_grad():
            rows.append(
                (
                    f"{name} inference (8 × 128²) ms",
                    f"{median_ms(lambda m=model: m.eval()(images), repeats):.0f}",
                    "",
                )
            )
    return rows


def bench_data_parallel(epochs: int = 2) -> list[tuple[str, str, str]]:
    rows = []
    keys = ["num_train=64", "num_val=8", f"epochs={epochs}", "batch_size=8", "threads=1", "progress=false",
            "tensorboard=false", "eval_every=100"]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    for processes in (1, 2):
        with tempfile.TemporaryDirectory() as folder:
            command = [sys.executable, "-m", "visionkit.cli", "train", "detect", *keys, "--nproc",
                       str(processes), "--out", f"{folder}/run"]  # fmt: skip
            subprocess.run(command, check=True, env=environment, capture_output=True)
            metrics = json.loads(Path(f"{folder}/run/metrics.json").read_text())
        per_step = metrics["train_seconds"] / metrics["steps"]
        rows.append((f"train detect, {processes} process(es), s/step", f"{per_step:.3f}", ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("reading coco128 ...", flush=True)
    rows = bench_loading()
    print("timing detectors ...", flush=True)
    rows += bench_models(args.repeats)
    print("timing the demo-size detectors and data-parallel training ...", flush=True)
    rows += bench_small(args.repeats) + bench_data_parallel()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"torchvision {torchvision.__version__ if torchvision else 'absent'}")  # fmt: skip
    print(f"| {'case':40s} | {'visionkit':>10s} | {'torchvision':>11s} |")
    print(f"|{'-' * 42}|{'-' * 12}|{'-' * 13}|")
    for case, ours, theirs in rows:
        print(f"| {case:40s} | {ours:>10s} | {theirs:>11s} |")


if __name__ == "__main__":
    main()
