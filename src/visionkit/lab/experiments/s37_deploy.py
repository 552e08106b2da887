"""§37 TensorRT's two main tricks, measured with :mod:`visionkit.deploy`: layer fusion and int8.

The handbook's section is only its heading; what is tested are the two things TensorRT is known for.
**Fusion**: :func:`~visionkit.deploy.fuse.fuse_model` folds every BatchNorm into the convolution before it
(and joins the ReLU) on a seeded ResNet-18 whose BatchNorms get random statistics and affine parameters (so
the fold is not the identity); the fused and unfused models are compared in float64, where both are equal
up to rounding (≈ 1e-15 relative per operation), and the float32 difference is reported beside it.
**int8**: the fused model is exported to ONNX (:func:`~visionkit.deploy.onnx.export_onnx`), calibrated
(min–max) and rewritten as a QDQ int8 graph (:func:`~visionkit.deploy.quantize.quantize_onnx`); ONNX Runtime
runs both graphs with one thread, timed interleaved (medians). Without ``onnxruntime`` the int8 part is
skipped and a note says so.
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from visionkit.deploy.fuse import fuse_model
from visionkit.lab.experiments._common import pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.models import create_model

FUSION = Claim(
    "§37",
    "TensorRT原理",
    "how TensorRT works — first trick: layer fusion (convolution + BN + ReLU as one layer) changes no output",
    kind="fact",
)
INT8 = Claim(
    "§37",
    "TensorRT原理",
    "how TensorRT works — second trick: int8 inference (calibrated) is faster than float32",
)
#: float64 rounding through ~20 layers of sums of ≤ 4,608 products stays far below this relative error
FUSED_EQUAL = 1e-9


def judge_deploy(fused_error64: float, milliseconds: dict[str, float] | None) -> list[Verdict]:
    """``fused_error64``: max |fused − unfused| / max |unfused| in float64; ``milliseconds``: median ms of
    ``onnx_fp32`` and ``onnx_int8`` (``None``: ONNX Runtime absent, no int8 verdict)."""
    verdicts = [
        judge(
            FUSION,
            f"max |fused − unfused| / max |unfused| in float64 ≤ {FUSED_EQUAL:g} (equal up to rounding)",
            f"{fused_error64:.2e}",
            holds=fused_error64 <= FUSED_EQUAL,
            correction="folding BatchNorm into the convolution changes the outputs beyond rounding",
        )
    ]
    if milliseconds is not None:
        ratio = milliseconds["onnx_int8"] / milliseconds["onnx_fp32"]
        verdicts.append(
            judge(
                INT8,
                "ONNX Runtime int8 (QDQ) median time below the same runtime's float32 graph",
                f"{ratio:.2f} × ({milliseconds['onnx_int8']:.2f} vs {milliseconds['onnx_fp32']:.2f} ms)",
                holds=ratio < 1,
            )
        )
    return verdicts


def onnxruntime_available() -> bool:
    """Whether ``onnx`` and ``onnxruntime`` (the ``visionkit[onnx]`` extra) can be imported."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))


def randomize_batch_norms(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm random running statistics and affine parameters (seeded)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


@torch.no_grad()
def fusion_errors(model: nn.Module, images: torch.Tensor) -> dict[str, float]:
    """Max |fused − unfused| relative to max |unfused|, with the model converted to float32 and to float64
    before it is fused (so the float64 fold itself is computed in float64)."""
    import copy

    errors = {}
    for name, dtype in (("float32", torch.float32), ("float64", torch.float64)):
        unfused = copy.deepcopy(model).to(dtype)
        x = images.to(dtype)
        reference = unfused(x)
        errors[name] = float((fuse_model(unfused)(x) - reference).abs().max() / reference.abs().max())
    return errors


def _onnx_times(
    fused: nn.Module, model: nn.Module, size: int, batch: int, repeats: int, gen: torch.Generator
) -> dict[str, float]:
    """Median ms of eager float32, eager fused, eager fused with epilogues and channels_last
    (:mod:`visionkit.deploy.epilogue`), ONNX Runtime float32 and int8 (QDQ, min–max calibrated) on one
    random batch, calls interleaved."""
    from visionkit.deploy.onnx import export_onnx, ort_session
    from visionkit.deploy.quantize import calibrate_onnx, quantize_onnx

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        export_onnx(fused, root / "fused", example_size=(size, size))
        calibration = [(torch.rand(batch, 3, size, size, generator=gen),) for _ in range(2)]
        ranges = calibrate_onnx(root / "fused" / "model.onnx", calibration, "minmax")
        int8 = quantize_onnx(root / "fused" / "model.onnx", ranges, root / "int8.onnx")
        sessions = {
            "onnx_fp32": ort_session(root / "fused" / "model.onnx", 1),
            "onnx_int8": ort_session(int8, 1),
        }
        x = torch.rand(batch, 3, size, size, generator=gen)
        feed = {"input_0": x.numpy()}
        fastest = fuse_model(model, epilogue=True).to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        calls = {"eager_fp32": lambda: model(x), "eager_fused": lambda: fused(x),
                 "eager_fused_epilogues_channels_last": lambda: fastest(x_cl),
                 **{k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()}}  # fmt: skip
        samples: dict[str, list[float]] = {key: [] for key in calls}
        with torch.no_grad():
            for call in calls.values():
                call()
            for _ in range(repeats):
                for key, call in calls.items():
                    start = time.perf_counter()
                    call()
                    samples[key].append((time.perf_counter() - start) * 1000)
    return {key: statistics.median(values) for key, values in samples.items()}


@register("deploy-fusion-int8", "§37", "Layer fusion and int8 inference (TensorRT's tricks), measured")
def deploy(ctx: LabContext) -> Findings:
    torch.manual_seed(ctx.seed)
    generator = ctx.generator()
    model = create_model("resnet18", num_classes=10).eval()
    randomize_batch_norms(model, generator)
    fused = fuse_model(model)
    size, batch = ctx.pick(32, 112), ctx.pick(2, 8)
    errors = fusion_errors(model, torch.rand(2, 3, size, size, generator=generator))
    times = (
        _onnx_times(fused, model, size, batch, ctx.pick(3, 9), generator) if onnxruntime_available() else None
    )
    notes = [f"{len(fused.fusion_report.folded)} convolution + BatchNorm (+ ReLU) groups folded."]
    tables = [Table.of("Fused vs unfused ResNet-18 (random BN statistics): max relative difference",
                       [{"dtype": k, "max |Δ| / max |y|": v} for k, v in errors.items()])]  # fmt: skip
    if times is None:
        notes.append(
            "int8 part skipped: onnxruntime (and onnx) are not installed (pip install visionkit[onnx])."
        )
    else:
        tables.append(Table.of(f"ms per batch of {batch} ({size}²), one thread, medians of interleaved calls "
                               "(loaded, shared CPU)",
                               [{"runtime": k, "ms": v, "× eager fp32": times["eager_fp32"] / v}
                                for k, v in times.items()]))  # fmt: skip
        plt = pyplot()
        figure, axis = plt.subplots(figsize=(5, 3))
        axis.bar([k.replace("_", "\n") for k in times], list(times.values()))
        axis.set_ylabel(f"ms per batch of {batch}")
        figure.tight_layout()
        ctx.figure(figure, "latency", "ResNet-18: eager, fused, and ONNX Runtime float32 / int8 latency.")
    numbers = {f"fusion_error_{k}": v for k, v in errors.items()}
    numbers |= {f"ms_{k}": v for k, v in (times or {}).items()}
    return Findings(
        verdicts=judge_deploy(errors["float64"], times), tables=tables, numbers=numbers, notes=notes
    )
