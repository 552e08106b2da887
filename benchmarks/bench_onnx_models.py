"""ONNX export of YOLO and FCN (issue 18): ONNX Runtime against eager, ms per image and parity.

For each model (random weights; the score layers of FCN, zero-initialized, and the detector heads drawn
from N(0, 0.05) so that scores spread), batch 1, one image of ``--size`` (and a second, different size for
the parity numbers), one intra-op thread in torch and ONNX Runtime, variants timed round-robin (one call
of each per round, medians)::

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_onnx_models.py --repeats 7

Detectors: eager, ONNX Runtime graphs with our NMS (``nms=outside``) and with the NMS graph
(``nms=graph``); parity = the largest raw head-output difference δ and whether the detections have the same
classes in the same order (with the largest box and score differences). Segmenters: eager and ONNX
Runtime; parity = the largest logit difference and the share of pixels with the same arg-max.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from visionkit.deploy.onnx import export_onnx, load_onnx_runtime, model_kind

DETECTORS = ("yolov3_plain", "yolov2_plain")
SEGMENTERS = ("fcn8s_small", "fcn32s_small")
PAPER = ("yolov3_darknet53", "yolov2_darknet19", "fcn8s_vgg16")


def _round_robin(variants: dict, repeats: int) -> dict[str, float]:
    for fn in variants.values():
        fn()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def _model(name: str) -> nn.Module:
    from visionkit.models import create_model

    torch.manual_seed(0)
    if name.startswith("fcn"):
        model = create_model(name, num_classes=4).eval()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.Conv2d) and module.out_channels == 4:
                    module.weight.normal_(0, 0.1)
        return model
    model = create_model(name, num_classes=3, score_threshold=0.05).eval()
    with torch.no_grad():
        for module in model.head.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0, 0.05)
    return model


def _detector_rows(name: str, size: int, repeats: int, scratch: Path) -> list[str]:
    model = _model(name)
    runtimes = {}
    for nms in ("outside", "graph"):
        export_onnx(model, scratch / f"{name}-{nms}", example_size=(size, size), nms=nms)
        runtimes[nms] = load_onnx_runtime(model, scratch / f"{name}-{nms}")
    image = [torch.rand(3, size, size)]
    with torch.no_grad():
        times = _round_robin(
            {
                "eager": lambda: model(image),
                "ORT, nms=outside": lambda: runtimes["outside"](image),
                "ORT, nms=graph": lambda: runtimes["graph"](image),
            },
            repeats,
        )
    second = [torch.rand(3, size - 37, size + 45)]
    rows = []
    with torch.no_grad():
        eager = model(second)[0]
        batch, _ = model.preprocess(second)
        levels = model.extract_features(batch)
        raw_eager = model.head([levels[n] for n in model.feature_names])
        inner = runtimes["outside"].model
        raw_ort = inner.head([inner.backbone(batch)[n] for n in model.feature_names])
        delta = max(float((a - b).abs().max()) for a, b in zip(raw_eager, raw_ort, strict=True))
        for nms, runtime in runtimes.items():
            got = runtime(second)[0]
            same = torch.equal(got["labels"], eager["labels"])
            box = float((got["boxes"] - eager["boxes"]).abs().max()) if same and len(got["boxes"]) else 0.0
            score = (
                float((got["scores"] - eager["scores"]).abs().max()) if same and len(got["scores"]) else 0.0
            )
            rows.append(
                f"| {name} | {size}² | {times['eager']:.1f} | {times[f'ORT, nms={nms}']:.1f} | nms={nms} | "
                f"{times['eager'] / times[f'ORT, nms={nms}']:.2f}× | δ={delta:.2e} | "
                f"{len(eager['labels'])} dets, same order {same}, |Δbox| {box:.1e}, |Δscore| {score:.1e} |"
            )
    return rows


def _segmenter_rows(name: str, size: int, repeats: int, scratch: Path) -> list[str]:
    model = _model(name)
    export_onnx(model, scratch / name, example_size=(size, size))
    runtime = load_onnx_runtime(model, scratch / name)
    image = torch.rand(1, 3, size, size)
    with torch.no_grad():
        times = _round_robin({"eager": lambda: model(image), "ORT": lambda: runtime(image)}, repeats)
        second = torch.rand(1, 3, size - 37, size + 45)
        eager, got = model(second), runtime(second)
    delta = float((eager - got).abs().max())
    agree = float((eager.argmax(1) == got.argmax(1)).float().mean())
    return [
        f"| {name} | {size}² | {times['eager']:.1f} | {times['ORT']:.1f} | — | "
        f"{times['eager'] / times['ORT']:.2f}× | max \\|Δlogit\\| {delta:.2e} | "
        f"arg-max agreement {agree:.4%} |"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--paper", action="store_true", help="also the paper-size models (slow)")
    parser.add_argument("--paper-size", type=int, default=320)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| model | image | eager ms | ORT ms | NMS | speed-up | raw parity | outputs |")
    print("|---|---|---:|---:|---|---:|---|---|")
    names = [(n, args.size) for n in (*DETECTORS, *SEGMENTERS)]
    names += [(n, args.paper_size) for n in PAPER] if args.paper else []
    with tempfile.TemporaryDirectory() as scratch:
        for name, size in names:
            kind = model_kind(_model(name))
            rows = (_segmenter_rows if kind == "segmenter" else _detector_rows)(
                name, size, args.repeats, Path(scratch)
            )
            print("\n".join(rows), flush=True)


if __name__ == "__main__":
    main()
