"""Detection data loading and detector speed: visionkit vs torchvision, side by side in one process.

    .venv-bench/bin/python benchmarks/bench_detection.py      # with torchvision
    .venv/bin/python benchmarks/bench_detection.py            # visionkit only

1. Reading coco128 (128 JPEGs + COCO JSON → float image tensor and box targets): visionkit
   ``CocoDetection`` vs ``torchvision.datasets.CocoDetection`` + tensor conversion (images/s).
2. RetinaNet-ResNet50-FPN and Faster R-CNN-ResNet50-FPN, random weights, 2 images of 320×320 (no resize
   in either library): inference and one training step (forward + backward), median milliseconds.
   Both use 91 classes, 1000 pre-NMS / 1000 post-NMS RPN proposals at test time, 512 RoIs per image.
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("reading coco128 ...", flush=True)
    rows = bench_loading()
    print("timing detectors ...", flush=True)
    rows += bench_models(args.repeats)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"torchvision {torchvision.__version__ if torchvision else 'absent'}")  # fmt: skip
    print(f"| {'case':40s} | {'visionkit':>10s} | {'torchvision':>11s} |")
    print(f"|{'-' * 42}|{'-' * 12}|{'-' * 13}|")
    for case, ours, theirs in rows:
        print(f"| {case:40s} | {ours:>10s} | {theirs:>11s} |")


if __name__ == "__main__":
    main()
