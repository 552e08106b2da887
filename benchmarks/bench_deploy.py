"""Deployment paths side by side (issue 18): eager, fused, channels_last, ONNX Runtime fp32 and int8.

Speed: ``resnet18`` (ImageNet shape, random weights) and ``mobilenet_v2``, batch 8, 224², every variant in
one process, timed round-robin (one call of each per round, so they share the machine's noise; with more
than one thread each timed call follows an untimed call of the same variant), medians::

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python benchmarks/bench_deploy.py --threads 1 --repeats 7

Accuracy (``--digits RUN/model.pt``, a trained digits classifier; trained here for 4 epochs without it):
test accuracy and top-1 agreement with the float graph for each calibrator — ours (min–max, percentile
99.9 / 99.99, entropy with 2048 bins) and ONNX Runtime's own ``quantize_static`` (MinMax, Entropy with its
default 128 bins, Percentile), all calibrated on the same 256 training images, all QDQ per-channel int8
weights / uint8 activations.

``epilogues`` is ``fuse_model(model, epilogue=True)``: each convolution's activation and residual addition
run in its oneDNN kernel (visionkit.deploy.epilogue). Speed-ups are the median of the per-round ratios
(eager fp32 ÷ the variant, timed in the same round) with a 95 % bootstrap interval over the rounds.

The int8 speed rows are calibrated on random images (speed does not depend on the ranges). ``kernels
tuned`` is the same int8 graph with its convolution kernels chosen by timing (visionkit.deploy.kernels, the
default of ``visionkit export int8=true``): the same numbers, bit for bit. ``torch.ao x86
int8`` is PyTorch's own FX graph-mode post-training static quantization with the ``x86`` backend's default
qconfig (``HistogramObserver`` activations with ``reduce_range``, per-channel symmetric int8 weights) run by
the quantized CPU kernels (fbgemm / oneDNN); skipped with the reason printed where ``torch.ao.quantization``
or the quantized engine is unavailable. It is also a row of the digits accuracy table.

PTQ vs QAT (``--qat-epochs N`` with ``--digits RUN/model.pt``): ``visionkit export int8=true`` of the digits
classifier with min–max, entropy, percentile 99 and percentile 95 calibration, each post-training and with
``qat_epochs=N`` (``qat_lr=0.01``), test accuracy and agreement with the float graph (the gate opened).

Detector (``--retina RUN/model.pt``, a shapes RetinaNet run): COCO AP on the run's validation images and
median ms per image (batch 1) of the eager model, the fused float graphs in ONNX Runtime and the int8
graphs (``visionkit export int8=true``, min–max, percentile and entropy calibration on 64 training images
without their augmentation; the gate is opened, ``max_drop=1``, to see the numbers).
"""

from __future__ import annotations

import argparse
import copy
import tempfile
from pathlib import Path

import numpy as np
import torch
from timing import median_ms

from visionkit.deploy.fuse import fuse_model
from visionkit.deploy.kernels import tune_int8_kernels
from visionkit.deploy.onnx import export_onnx, ort_session
from visionkit.deploy.quantize import calibrate_onnx, quantize_onnx
from visionkit.models import create_model


class _Traceable(torch.nn.Module):
    """A backbone's ``forward_features`` + ``forward_head`` (its ``forward`` checks the input shape, which
    fx cannot trace)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner.forward_head(self.inner.forward_features(x)["c5"])


def _torch_ao_int8(model: torch.nn.Module, calibration: list[torch.Tensor]) -> tuple[object, str]:
    """``(quantized model, "")`` from torch.ao FX post-training static quantization (module docstring), or
    ``(None, reason)`` where it is unavailable."""
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        model = _Traceable(model)
    try:
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        engines = torch.backends.quantized.supported_engines
        engine = "x86" if "x86" in engines else "fbgemm" if "fbgemm" in engines else None
        if engine is None:
            return None, f"no x86/fbgemm quantized engine (supported: {engines})"
        torch.backends.quantized.engine = engine
        prepared = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping(engine),
                              (calibration[0],))  # fmt: skip
        with torch.no_grad():
            for batch in calibration:
                prepared(batch)
            quantized = convert_fx(prepared)
            quantized(calibration[0])
        return quantized, ""
    except Exception as error:  # any failure of an optional backend is reported, not fatal
        return None, f"{type(error).__name__}: {error}"


def _ort_quantize_static(source: Path, calibration: list, target: Path) -> Path | None:
    """ONNX Runtime's own QDQ int8 graph (per-channel int8 weights, uint8 activations, min–max) of the
    same float graph and calibration images: is a speed difference ours or the runtime's?"""
    try:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    except ImportError:
        return None
    batches = iter([{"input_0": images.numpy()} for (images,) in calibration])

    class Reader:
        def get_next(self):
            return next(batches, None)

    quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)  # fmt: skip
    return target


def _paired_speedup(base: list[float], other: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Median over rounds of ``base / other`` (each round times both under the same machine noise) and its
    95 % bootstrap interval (rounds resampled with replacement, 2000 times)."""
    ratios = np.asarray(base) / np.asarray(other)
    rng = np.random.default_rng(seed)
    boot = np.median(ratios[rng.integers(0, len(ratios), (2000, len(ratios)))], axis=1)
    low, high = np.quantile(boot, [0.025, 0.975])
    return float(np.median(ratios)), float(low), float(high)


def _speed(
    name: str, threads: int, repeats: int, scratch: Path, eager_only: bool = False
) -> dict[str, list[float]]:
    torch.manual_seed(0)
    model = create_model(name, num_classes=1000).eval()
    x = torch.rand(8, 3, 224, 224)
    fused = fuse_model(model)
    fused_cl = copy.deepcopy(fused).to(memory_format=torch.channels_last)
    epilogue_cl = fuse_model(model, epilogue=True).to(memory_format=torch.channels_last)
    plain_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    variants = {
        "eager fp32": lambda: model(x),
        "eager channels_last": lambda: plain_cl(x_cl),
        "eager fused (ours)": lambda: fused(x),
        "eager fused + channels_last": lambda: fused_cl(x_cl),
        "eager fused + epilogues + channels_last": lambda: epilogue_cl(x_cl),
    }
    if not eager_only:
        variants |= _runtimes(model, fused, name, x, threads, scratch)
    samples: dict[str, list[float]] = {key: [] for key in variants}
    with torch.no_grad():
        for function in variants.values():
            function()  # warm-up
        for _ in range(repeats):
            for key, function in variants.items():
                # one untimed call first: with more than one thread, the previous variant's runtime (OpenMP
                # or ONNX Runtime) keeps its worker threads spinning for a while after returning, and
                # they would take the cores from this variant's first call (measured at 2 threads: ONNX
                # Runtime int8 62 ms right after an eager call, 37 ms after its own)
                samples[key].append(median_ms(function, 1, warmup=threads > 1))
    return samples


def _runtimes(model, fused, name: str, x: torch.Tensor, threads: int, scratch: Path) -> dict:
    """The ONNX Runtime and torch.ao int8 variants of :func:`_speed`."""
    folder = scratch / name
    export_onnx(model, folder / "fp32", example_size=(224, 224))
    export_onnx(fused, folder / "fused", example_size=(224, 224))
    calib = [(torch.rand(8, 3, 224, 224),) for _ in range(2)]
    ranges = calibrate_onnx(folder / "fused" / "model.onnx", calib, "minmax")
    int8 = quantize_onnx(folder / "fused" / "model.onnx", ranges, folder / "int8.onnx")
    tuning = tune_int8_kernels(int8, calib[:1], folder / "int8_tuned.onnx", threads=threads)
    print(f"{name}: int8 kernels chosen by timing: {tuning['choice']} (ms per candidate {tuning['ms']})")
    sessions = {
        "fp32": ort_session(folder / "fp32" / "model.onnx", threads),
        "int8": ort_session(int8, threads),
        "int8_tuned": ort_session(folder / "int8_tuned.onnx", threads),
    }
    ort_int8 = _ort_quantize_static(folder / "fused" / "model.onnx", calib, folder / "ort_int8.onnx")
    if ort_int8 is not None:
        sessions["ort_int8"] = ort_session(ort_int8, threads)
    feed = {"input_0": x.numpy()}
    ao_model, reason = _torch_ao_int8(model, [c[0] for c in calib])
    if ao_model is None:
        print(f"torch.ao x86 int8 ({name}): skipped: {reason}")
    variants = {
        "ONNX Runtime fp32": lambda: sessions["fp32"].run(None, feed),
        "ONNX Runtime int8 (our QDQ)": lambda: sessions["int8"].run(None, feed),
        "ONNX Runtime int8 (our QDQ, kernels tuned)": lambda: sessions["int8_tuned"].run(None, feed),
    }
    if "ort_int8" in sessions:
        variants["ONNX Runtime int8 (ORT's own quantize_static QDQ)"] = lambda: sessions["ort_int8"].run(
            None, feed
        )
    if ao_model is not None:
        variants["torch.ao x86 int8 (FX PTQ, per-channel)"] = lambda: ao_model(x)
    return variants


class _Reader:
    """ONNX Runtime's CalibrationDataReader over our calibration images."""

    def __init__(self, images: torch.Tensor) -> None:
        self.batches = iter([{"input_0": chunk.numpy()} for chunk in images.split(64)])

    def get_next(self):
        return next(self.batches, None)


def _accuracy(weights: str | None, scratch: Path) -> list[tuple[str, float, float]]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from visionkit.deploy.export import calibration_images, load_run_model
    from visionkit.engine.classify import ClassifyRecipe, train_classifier

    if weights is None:
        train_classifier(ClassifyRecipe(epochs=4, progress=False, threads=1), scratch / "digits")
        weights = str(scratch / "digits" / "model.pt")
    model, info = load_run_model(weights)
    float_graph = export_onnx(fuse_model(model), scratch / "digits_fp32", example_size=(8, 8))["model"]
    images = calibration_images("train", 256, info)
    from visionkit.data.digits import Digits

    test = Digits("test", seed=info["recipe"].seed)
    x = torch.stack([test[i][0] for i in range(len(test))]).numpy()
    labels = np.array([int(test[i][1]) for i in range(len(test))])
    reference = ort_session(float_graph).run(None, {"input_0": x})[0].argmax(1)
    rows = [("float (fp32 graph)", float((reference == labels).mean()), 1.0)]
    graphs = {}
    ours = [
        ("ours minmax", "minmax", 0),
        ("ours percentile 99.9", "percentile", 99.9),
        ("ours percentile 99.99", "percentile", 99.99),
        ("ours entropy (2048 bins)", "entropy", 0),
    ]
    for name, calibrator, percentile in ours:
        ranges = calibrate_onnx(float_graph, [(images,)], calibrator, percentile or 99.99)
        graphs[name] = quantize_onnx(float_graph, ranges, scratch / f"{name.replace(' ', '_')}.onnx")
    theirs = [("ORT minmax", CalibrationMethod.MinMax, {}),
              ("ORT entropy (128 bins, default)", CalibrationMethod.Entropy, {}),
              ("ORT percentile 99.999 (default)", CalibrationMethod.Percentile, {})]  # fmt: skip
    for name, method, options in theirs:
        out = scratch / f"ort_{method.name}.onnx"
        quantize_static(str(float_graph), str(out), _Reader(images), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=method, extra_options=options)  # fmt: skip
        graphs[name] = out
    for name, graph in graphs.items():
        predicted = ort_session(graph).run(None, {"input_0": x})[0].argmax(1)
        rows.append((name, float((predicted == labels).mean()), float((predicted == reference).mean())))
    adapter, net = model[0], model[1]  # the 8×8 digits adapter (an identity here) stays float, outside fx
    ao_model, reason = _torch_ao_int8(net, [adapter(images)])
    if ao_model is None:
        print(f"torch.ao x86 int8 (digits): skipped: {reason}")
    else:
        with torch.no_grad():
            predicted = ao_model(adapter(torch.from_numpy(x))).argmax(1).numpy()
        name = "torch.ao x86 FX PTQ (HistogramObserver, per-channel)"
        rows.append((name, float((predicted == labels).mean()), float((predicted == reference).mean())))
    return rows


def _qat(weights: str, epochs: int, scratch: Path) -> list[tuple[str, str, float, float, float]]:
    from visionkit.deploy.export import ExportRecipe, export_run

    rows = []
    for calib, percentile in (
        ("minmax", 99.99),
        ("entropy", 99.99),
        ("percentile", 99.0),
        ("percentile", 95.0),
    ):
        name = f"percentile {percentile:g}" if calib == "percentile" else calib
        for qat in (0, epochs):
            keys = {"calib": calib, "percentile": percentile, "max_drop": 1.0, "qat_epochs": qat}
            recipe = ExportRecipe(weights=weights, int8=True, **keys)
            m = export_run(recipe, scratch / f"qat_{calib}{percentile}_{qat}")
            rows.append((name, f"QAT, {qat} epochs" if qat else "PTQ", m["accuracy_float"],
                         m["accuracy_int8"], m["top1_agreement"]))  # fmt: skip
    return rows


def _detector(weights: str, threads: int, scratch: Path) -> list[tuple[str, float, float]]:
    from visionkit.deploy.detect_int8 import _coco_ap
    from visionkit.deploy.export import ExportRecipe, export_run, load_run_model
    from visionkit.deploy.onnx import load_onnx_runtime
    from visionkit.engine.config import load_recipe
    from visionkit.engine.detect import DetectRecipe, build_datasets

    model, _ = load_run_model(weights)
    val = build_datasets(load_recipe(DetectRecipe, Path(weights).parent / "config.json")).val
    inner = getattr(model, "detector", model)
    runs = {
        "eager fp32": model,
        "eager fused + epilogues + channels_last": fuse_model(model, epilogue=True).to(
            memory_format=torch.channels_last
        ),
    }
    variants = [
        ("ORT fp32 (fused)", {"fuse": True}),
        ("ORT int8 minmax", {"int8": True, "calib": "minmax"}),
        ("ORT int8 percentile 99.99", {"int8": True, "calib": "percentile"}),
        ("ORT int8 entropy", {"int8": True, "calib": "entropy"}),
    ]
    for name, keys in variants:
        folder = scratch / name.replace(" ", "_")
        export_run(
            ExportRecipe(weights=weights, calib_count=64, max_drop=1.0, image_size=128, **keys), folder
        )
        runs[name] = load_onnx_runtime(model, folder, threads)
    images = [val[i][0] for i in range(min(32, len(val)))]
    rows = []
    for name, runtime in runs.items():
        ap = _coco_ap(runtime, val, inner.num_classes)
        with torch.no_grad():
            ms = float(np.median([median_ms(lambda i=image, r=runtime: r([i]), 1) for image in images]))
        rows.append((name, ap, ms))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--digits", default=None, help="a trained digits classifier's model.pt")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--eager-only", action="store_true", help="speed: the eager variants only")
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--retina", default=None, help="a shapes RetinaNet run's model.pt")
    parser.add_argument("--qat-epochs", type=int, default=0, help="with --digits: PTQ vs QAT table")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as scratch:
        if not args.skip_speed:
            for name in args.models.split(","):
                samples = _speed(name, args.threads, args.repeats, Path(scratch), args.eager_only)
                base = samples["eager fp32"]
                print(
                    f"\n{name}, batch 8, 224x224 (median ms of {args.repeats} round-robin repeats; "
                    "speed-up: median of the per-round ratios, 95 % bootstrap interval)"
                )
                print("| variant | ms | speed-up vs eager fp32 | 95 % interval |\n|---|---:|---:|---|")
                for key, values in samples.items():
                    ratio, low, high = _paired_speedup(base, values)
                    print(f"| {key} | {np.median(values):.1f} | {ratio:.2f}x | {low:.2f} – {high:.2f} |")
        if not args.skip_digits:
            rows = _accuracy(args.digits, Path(scratch))
            print("\ndigits classifier, int8 by calibrator (256 calibration images, test split)")
            print("| calibration | test accuracy | top-1 agreement with fp32 |\n|---|---:|---:|")
            for name, accuracy, agreement in rows:
                print(f"| {name} | {accuracy:.4f} | {agreement:.4f} |")
        if args.qat_epochs and args.digits:
            print("\ndigits classifier, PTQ vs QAT (256 calibration images, test split)")
            print("| calibration | int8 by | float accuracy | int8 accuracy | agreement |")
            print("|---|---|---:|---:|---:|")
            for row in _qat(args.digits, args.qat_epochs, Path(scratch)):
                print("| {} | {} | {:.4f} | {:.4f} | {:.4f} |".format(*row))
        if args.retina:
            print("\nshapes RetinaNet: COCO AP (validation images) and median ms per image, batch 1")
            print("| runtime | COCO AP | ms / image |\n|---|---:|---:|")
            for name, ap, ms in _detector(args.retina, args.threads, Path(scratch)):
                print(f"| {name} | {ap:.4f} | {ms:.1f} |")


if __name__ == "__main__":
    main()
