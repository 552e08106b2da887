"""TensorRT engines against eager CUDA (issue 18, TensorRT part): one prepared run for a machine with an
NVIDIA GPU and TensorRT.

Rows, every variant in one process, timed round-robin (one call of each per round), medians of CUDA-
synchronised calls:

* ``resnet18`` (ImageNet shape, random weights, fused), batch 8, 224²: eager CUDA fp32 (TF32 off, as
  the fp32 engine), eager CUDA fp16 (``torch.autocast``), TensorRT fp32 / fp16 / int8 engines of our graphs
  (:mod:`visionkit.deploy.tensorrt`: fp32 with TF32 off; fp16 from the float16 graph; int8 from our
  symmetric QDQ graph, min–max calibrated on 4 random batches — speed does not depend on the ranges);
* a shapes-sized RetinaNet (``retinanet_plain_fpn``, 3 classes, random weights, fused), batch 1, 256²: its
  dense parts — trunk (backbone + FPN) and head — eager CUDA fp32 / fp16 and the TensorRT engines of the
  same two graphs (the anchors, decoding and NMS around them are the same PyTorch code in every variant).

Agreement with eager fp32 on 64 other images (resnet18: 8 batches): the largest ``|Δ|`` of the outputs
relative to the largest ``|output|``, and for resnet18 the top-1 agreement of the logits.

Where TensorRT or a CUDA GPU is missing it prints why and exits 0 (``make bench`` runs every script).

Command (TensorRT's libraries come from NVIDIA's package index: ``pip install tensorrt`` fetches them
there through PyPI's ``tensorrt`` / ``tensorrt-cu12`` / ``tensorrt-cu13`` packages, so it needs a machine
that reaches that index; it needs a CUDA build of PyTorch matching the driver)::

    python -m pip install tensorrt            # or tensorrt-cu12 / tensorrt-cu13, as PyTorch's CUDA
    pip install -e '.[deploy]'                # onnx, onnxruntime, onnxscript
    PYTHONPATH=src python benchmarks/bench_tensorrt.py --repeats 50
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from timing import median_ms

from visionkit.deploy.fuse import fuse_model
from visionkit.deploy.onnx import export_onnx, onnx_parts
from visionkit.deploy.quantize import calibrate_onnx, quantize_onnx
from visionkit.deploy.tensorrt import (
    TensorRTModule,
    build_engine,
    engine_profiles,
    export_fp16_onnx,
    require_tensorrt,
)
from visionkit.errors import BackendUnavailableError
from visionkit.models import create_model


def _engines(
    part: str,
    graphs: dict[str, Path],
    profile: dict,
    scratch: Path,
    calibration: list[tuple[torch.Tensor, ...]],
) -> dict[str, TensorRTModule]:
    """fp32 / fp16 / int8 engines of one exported part (its float graph ``graphs["fp32"]``)."""
    ranges = calibrate_onnx(graphs["fp32"], calibration, "minmax")
    graphs["int8"] = quantize_onnx(graphs["fp32"], ranges, scratch / f"{part}-int8.onnx", activations="int8")
    engines = {}
    for precision, graph in graphs.items():
        path = build_engine(graph, scratch / f"{part}-{precision}.engine", profile)
        engines[precision] = TensorRTModule(path, "tuple")
    return engines


def _round_robin(variants: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms of each variant, one call of each per round (shared noise)."""
    for run in variants.values():
        run()  # warm-up (kernel selection, autocast caches)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            samples[name].append(median_ms(run, 1, device="cuda", warmup=False))
    return {name: sorted(values)[len(values) // 2] for name, values in samples.items()}


def _agreement(reference: list[torch.Tensor], outputs: list[torch.Tensor]) -> float:
    """max |Δ| over the outputs relative to the largest |reference output|."""
    largest = max(float(r.abs().max()) for r in reference)
    return (
        max(float((o.float() - r.float()).abs().max()) for r, o in zip(reference, outputs, strict=True))
        / largest
    )


def _flat(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    flat: list[torch.Tensor] = []
    for item in out:  # type: ignore[union-attr]
        flat += _flat(item)
    return flat


def _table(title: str, times: dict[str, float], agreement: dict[str, str]) -> None:
    base = times["eager CUDA fp32"]
    print(f"\n{title}\n")
    print("| variant | ms | speed-up vs eager fp32 | agreement with eager fp32 |\n|---|---:|---:|---|")
    for name, ms in times.items():
        print(f"| {name} | {ms:.3f} | {base / ms:.2f}x | {agreement.get(name, '—')} |")


def bench_resnet18(repeats: int, scratch: Path) -> None:
    torch.manual_seed(0)
    model = fuse_model(create_model("resnet18", num_classes=1000).eval())
    x = torch.rand(8, 3, 224, 224)
    graphs = {
        "fp32": export_onnx(model, scratch / "r18-fp32", example_size=(224, 224))["model"],
        "fp16": export_fp16_onnx(model, scratch / "r18-fp16", example_size=(224, 224))["model"],
    }
    profile = engine_profiles(model, image_size=224, opt_batch=8, max_batch=8)["model"]
    calibration = [(torch.rand(8, 3, 224, 224),) for _ in range(4)]
    engines = _engines("r18", graphs, profile, scratch, calibration)
    cuda, xc = copy.deepcopy(model).cuda(), x.cuda()
    with torch.no_grad():
        variants = {
            "eager CUDA fp32": lambda: cuda(xc),
            "eager CUDA fp16 (autocast)": lambda: _autocast(cuda, xc),
        }
        variants |= {f"TensorRT {p}": lambda e=e: e(xc) for p, e in engines.items()}
        times = _round_robin(variants, repeats)
        agreement = {}
        images = [torch.rand(8, 3, 224, 224, device="cuda") for _ in range(8)]
        reference = [cuda(b) for b in images]
        for name in variants:
            outputs = [_flat(run_on(name, cuda, engines, b))[0] for b in images]
            same = sum(
                int((o.argmax(1) == r.argmax(1)).sum()) for o, r in zip(outputs, reference, strict=True)
            )
            agreement[name] = f"rel. max \\|Δ\\| {_agreement(reference, outputs):.1e}, top-1 {same}/64"
    _table("resnet18 (fused, random weights), batch 8, 224²", times, agreement)


def run_on(name: str, model: torch.nn.Module, engines: dict, batch: torch.Tensor) -> object:
    """The variant ``name`` on another batch."""
    if name == "eager CUDA fp32":
        return model(batch)
    if name.startswith("eager CUDA fp16"):
        return _autocast(model, batch)
    return engines[name.split()[-1]](batch)


def _autocast(model: torch.nn.Module, x: torch.Tensor) -> object:
    with torch.autocast("cuda", dtype=torch.float16):
        return model(x)


def bench_retinanet(repeats: int, scratch: Path) -> None:
    torch.manual_seed(0)
    detector = fuse_model(create_model("retinanet_plain_fpn", num_classes=3).eval())
    floats = export_onnx(detector, scratch / "rn-fp32", example_size=(256, 256))
    halves = export_fp16_onnx(detector, scratch / "rn-fp16", example_size=(256, 256))
    profiles = engine_profiles(detector, image_size=256, opt_batch=1, max_batch=1)
    parts = onnx_parts(detector, (256, 256))
    batch = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        levels = parts["trunk"][0](batch)
    calibration = {"trunk": [(batch,)], "head": [tuple(levels)]}
    engines = {
        name: _engines(
            f"rn-{name}",
            {"fp32": floats[name], "fp16": halves[name]},
            profiles[name],
            scratch,
            calibration[name],
        )
        for name in ("trunk", "head")
    }
    trunk, head = copy.deepcopy(parts["trunk"][0]).cuda(), copy.deepcopy(parts["head"][0]).cuda()

    def dense(precision: str, images: torch.Tensor) -> torch.Tensor:
        """Every raw head output, flattened into one vector."""
        if precision == "eager":
            out = head(*trunk(images))
        elif precision == "autocast":
            with torch.autocast("cuda", dtype=torch.float16):
                out = head(*trunk(images))
        else:
            out = engines["head"][precision](*engines["trunk"][precision](images))
        return torch.cat([o.float().flatten() for o in _flat(out)])

    names = {"eager CUDA fp32": "eager", "eager CUDA fp16 (autocast)": "autocast"}
    names |= {f"TensorRT {p}": p for p in ("fp32", "fp16", "int8")}
    xc = batch.cuda()
    with torch.no_grad():
        times = _round_robin({name: lambda k=k: dense(k, xc) for name, k in names.items()}, repeats)
        images = [torch.rand(1, 3, 256, 256, device="cuda") for _ in range(64)]
        reference = [dense("eager", b) for b in images]
        agreement = {}
        for name, k in list(names.items())[1:]:
            relative = _agreement(reference, [dense(k, b) for b in images])
            agreement[name] = f"rel. max \\|Δ\\| of the raw head outputs {relative:.1e}"
    _table("retinanet_plain_fpn (fused, random weights) trunk + head, batch 1, 256²", times, agreement)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--skip-retinanet", action="store_true")
    args = parser.parse_args()
    try:
        trt = require_tensorrt()
    except BackendUnavailableError as error:
        print(f"bench_tensorrt: skipped: {error}")
        return
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False  # fp32 is fp32
    print(f"TensorRT {trt.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name()}, "
          f"repeats {args.repeats}")  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        bench_resnet18(args.repeats, Path(scratch))
        if not args.skip_retinanet:
            bench_retinanet(args.repeats, Path(scratch))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
