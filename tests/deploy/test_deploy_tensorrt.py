"""TensorRT engines (visionkit.deploy.tensorrt).

Everywhere: the clear error where TensorRT or a CUDA GPU is missing (before any work), the recipe's
checks, the optimization profiles against the eager model, and the float16 graphs (weights the float16
rounding of the fused model's, float32 I/O, run by ONNX Runtime). Where ``tensorrt`` imports and PyTorch
sees a CUDA GPU (skipped elsewhere, with the reason): engines built from our graphs, run on CUDA tensors,
against ONNX Runtime on the same graph within bounds derived for each precision, and the detector glue
around the engines."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys

import numpy as np
import pytest
import torch
from int8_net import Int8Net
from network_error import first_order_output_bound
from qdq_bounds import difference_bound

from visionkit.deploy.export import ExportRecipe, export_run
from visionkit.deploy.fuse import fuse_model
from visionkit.deploy.onnx import export_onnx, load_onnx_runtime, ort_session
from visionkit.deploy.tensorrt import (
    HalfPrecision,
    TensorRTModule,
    build_engine,
    engine_profiles,
    export_fp16_onnx,
    load_tensorrt,
    require_tensorrt,
)
from visionkit.errors import BackendUnavailableError, ConfigError, ExportError
from visionkit.models import create_model

HAVE_TENSORRT = importlib.util.find_spec("tensorrt") is not None
CUDA = torch.cuda.is_available()
needs_tensorrt = pytest.mark.skipif(
    not (HAVE_TENSORRT and CUDA),
    reason=f"needs TensorRT and a CUDA GPU (tensorrt importable: {HAVE_TENSORRT}, CUDA: {CUDA}); "
    "`pip install tensorrt` on a machine with an NVIDIA GPU",
)


# ----------------------------------------------------------------------------------------- everywhere
def test_missing_tensorrt_and_gpu_are_named_with_how_to_get_them(monkeypatch) -> None:
    """With the package hidden (``sys.modules["tensorrt"] = None`` makes its import fail, as a missing
    one does), the error names it and ``pip install tensorrt``; without a GPU it also names the GPU; with
    one, only the package."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError) as both:
        require_tensorrt()
    assert "pip install tensorrt" in str(both.value) and "CUDA GPU" in str(both.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(BackendUnavailableError) as package_only:
        require_tensorrt()
    assert "pip install tensorrt" in str(package_only.value) and "CUDA GPU" not in str(package_only.value)


@pytest.mark.skipif(HAVE_TENSORRT and CUDA, reason="TensorRT and a GPU are here: nothing is missing")
def test_export_and_load_refuse_before_any_work(untrained_classifier, tmp_path) -> None:
    """``format=tensorrt`` checks for TensorRT and the GPU first: the error, and no file written."""
    with pytest.raises(BackendUnavailableError, match="TensorRT engines need"):
        export_run(ExportRecipe(weights=str(untrained_classifier), format="tensorrt"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    from visionkit.engine.classify import load_classifier

    model, _ = load_classifier(untrained_classifier)
    export_run(ExportRecipe(weights=str(untrained_classifier)), tmp_path / "onnx")
    with pytest.raises(ExportError, match="no TensorRT engines here"):
        load_tensorrt(model, tmp_path / "onnx")  # an ONNX-only folder, named as such
    (tmp_path / "onnx" / "model.engine").write_bytes(b"")
    manifest = json.loads((tmp_path / "onnx" / "export.json").read_text())
    manifest["tensorrt"] = {"engines": {"model": "model.engine"}}
    (tmp_path / "onnx" / "export.json").write_text(json.dumps(manifest))
    with pytest.raises(BackendUnavailableError, match="pip install tensorrt"):
        load_tensorrt(model, tmp_path / "onnx")


def test_a_broken_manifest_or_a_missing_engine_is_named(untrained_classifier, tmp_path, monkeypatch) -> None:
    """A corrupt ``export.json`` and a deleted engine file: one error naming the file, before TensorRT is
    asked for anything (``require_tensorrt`` stands in here: the check comes before it is used)."""
    from visionkit.deploy import tensorrt
    from visionkit.engine.classify import load_classifier

    model, _ = load_classifier(untrained_classifier)
    export_run(ExportRecipe(weights=str(untrained_classifier)), tmp_path)
    manifest = json.loads((tmp_path / "export.json").read_text())
    (tmp_path / "export.json").write_text('{"kind": "classifier", "tensorrt": {')  # cut short
    with pytest.raises(ExportError, match=r"export\.json: not a readable export manifest"):
        load_tensorrt(model, tmp_path)
    manifest["tensorrt"] = {"engines": {"model": "model.engine"}}
    (tmp_path / "export.json").write_text(json.dumps(manifest))
    monkeypatch.setattr(tensorrt, "require_tensorrt", lambda: object())
    with pytest.raises(ExportError, match=r"model\.engine: no such engine file"):
        load_tensorrt(model, tmp_path)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"precision": "fp16"}, "precision"),  # precision is for format=tensorrt
        ({"format": "tensorrt", "int8": True, "precision": "fp16"}, "precision"),
        ({"format": "tensorrt", "activations": "uint8"}, "activations"),  # TensorRT: zero point 0 only
        ({"format": "tensorrt", "nms": "graph"}, "nms"),
        ({"format": "tensorrt", "opt_batch": 4, "max_batch": 2}, "max_batch"),
        ({"format": "tensorrt", "min_size": -1}, "min_size"),
    ],
)
def test_recipe_checks(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        ExportRecipe(weights="m.pt", **overrides)


def test_profiles_against_the_eager_model() -> None:
    """Classifier: batch 1 / opt / max and sides min / size / max. RetinaNet: the trunk's sides rounded up
    to ``size_divisible``; each head input the trunk's level at that size (run here, independently of the
    profile code, at batch 1 on rectangular inputs between the extremes: inside the profile)."""
    classifier = create_model("resnet_digits", num_classes=10).eval()
    profile = engine_profiles(classifier, image_size=28, min_size=20, max_size=40, opt_batch=2, max_batch=3)
    assert profile == {"model": {"input_0": ((1, 1, 20, 20), (2, 1, 28, 28), (3, 1, 40, 40))}}
    detector = create_model("retinanet_plain_fpn", num_classes=3, head_convs=1).eval()
    profiles = engine_profiles(detector, image_size=100, opt_batch=2, max_batch=4)
    divisor = detector.size_divisible
    sides = [-(-s // divisor) * divisor for s in (50, 100, 200)]
    assert profiles["trunk"]["input_0"] == tuple((b, 3, s, s) for b, s in zip((1, 2, 4), sides, strict=True))
    for rows, cols in ((sides[0], sides[2]), (sides[1], sides[1] + divisor)):
        with torch.no_grad():
            levels = detector.neck(detector.backbone(torch.zeros(1, 3, rows, cols)))
        for i, name in enumerate(detector.feature_names):
            low, _, high = profiles["head"][f"input_{i}"]
            shape = levels[name].shape
            assert all(lo <= s <= hi for s, lo, hi in zip(shape, low, high, strict=True)), (name, shape)
    with pytest.raises(ExportError, match="min_size"):
        engine_profiles(classifier, image_size=28, min_size=30)


def test_profile_sizes_follow_the_run() -> None:
    """The engines' image sizes: a classifier's input size; a detector trained at a working scale
    (``ResizedInput``) its ``min_size`` and ``max_size``; the recipe's keys win; a cap below the asked size
    falls back to twice it."""
    from visionkit.deploy.export import tensorrt_sizes
    from visionkit.models.detectors import ResizedInput

    recipe = ExportRecipe(weights="m.pt", format="tensorrt")
    detector = create_model("retinanet_plain_fpn", num_classes=3, head_convs=1)
    assert tensorrt_sizes(recipe, detector, {"task": "classify", "input_size": 8}) == (8, 0)
    assert tensorrt_sizes(recipe, detector, {"task": "detect"}) == (224, 0)
    resized = ResizedInput(detector, 320, 512)
    assert tensorrt_sizes(recipe, resized, {"task": "detect"}) == (320, 512)
    assert tensorrt_sizes(recipe, ResizedInput(detector, 320), {"task": "detect"}) == (320, 0)  # uncapped
    asked = ExportRecipe(weights="m.pt", format="tensorrt", image_size=600)
    assert tensorrt_sizes(asked, resized, {"task": "detect"}) == (600, 0)
    both = ExportRecipe(weights="m.pt", format="tensorrt", image_size=256, max_size=300)
    assert tensorrt_sizes(both, resized, {"task": "detect"}) == (256, 300)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_export_writes_each_precisions_graphs_and_profiles(
    untrained_classifier, tmp_path, monkeypatch, precision
):
    """``format=tensorrt`` up to the engine build, on any machine: TensorRT's presence check and its
    ``build_engines`` are replaced (by a pass and by a recorder of what it is given); the graphs, their
    manifest and the profiles are this code's own. fp32: the float graph; fp16: float16 weights; int8: the
    symmetric QDQ graph (``int8`` zero points: what TensorRT takes), gated, kernels not tuned."""
    import onnx

    from visionkit.deploy import tensorrt

    given = {}
    monkeypatch.setattr(tensorrt, "require_tensorrt", lambda: object())
    monkeypatch.setattr(tensorrt, "build_engines", lambda folder, p, profiles: given.update(
        folder=folder, precision=p, profiles=profiles) or {})  # fmt: skip
    keys = {"int8": True} if precision == "int8" else {"precision": precision}
    export_run(
        ExportRecipe(weights=str(untrained_classifier), format="tensorrt", max_batch=4, **keys), tmp_path
    )
    assert given["folder"] == tmp_path and given["precision"] == precision
    manifest = json.loads((tmp_path / "export.json").read_text())
    assert given["profiles"] == {"model": {"input_0": ((1, 1, 4, 4), (1, 1, 8, 8), (4, 1, 16, 16))}}, manifest
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    types = {onnx.TensorProto.DataType.Name(i.data_type) for i in graph.initializer}
    zero_points = [i for i in graph.initializer if i.name.endswith("__zero_point")]
    if precision == "fp16":
        assert "FLOAT16" in types and "FLOAT" not in types
    elif precision == "int8":
        assert manifest["activations"] == "int8" and "int8_kernels" not in manifest and zero_points
        assert {onnx.TensorProto.DataType.Name(z.data_type) for z in zero_points} == {"INT8"}
    else:
        assert "FLOAT" in types and not zero_points


def test_fp16_graphs_are_the_rounded_model_with_float32_io(tmp_path) -> None:
    """Every float weight of each float16 graph is the float16 rounding (round half to even, numpy's
    ``astype``) of the float graph's weight of the same name, the graph's I/O is float32, and ONNX Runtime
    runs it at a size other than the example's with the float graph's output shapes (a classifier, and a
    RetinaNet's trunk and head: the head fed the float trunk's levels)."""
    import onnx
    from onnx import numpy_helper

    torch.manual_seed(0)
    for name, kwargs, size in (("resnet_digits", {}, 28), ("retinanet_plain_fpn", {"head_convs": 1}, 64)):
        model = fuse_model(create_model(name, num_classes=3, **kwargs).eval())
        halves = export_fp16_onnx(model, tmp_path / name, example_size=(size, size))
        floats = export_onnx(model, tmp_path / f"{name}-float", example_size=(size, size))
        assert halves.keys() == floats.keys()
        for part, path in halves.items():
            graph = onnx.load(str(path)).graph
            stored = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
            originals = {
                i.name: numpy_helper.to_array(i) for i in onnx.load(str(floats[part])).graph.initializer
            }
            weights = {k: v for k, v in stored.items() if v.dtype.kind == "f"}
            assert weights and all(v.dtype == np.float16 for v in weights.values())
            for key, value in weights.items():
                original = originals[key.removeprefix("module.")]
                assert np.array_equal(original.astype(np.float16), value), key
            types = {v.type.tensor_type.elem_type for v in (*graph.input, *graph.output)}
            assert types == {onnx.TensorProto.FLOAT}
        divisor = getattr(model, "size_divisible", 1)
        side = -(-(size + 5) // divisor) * divisor
        channels = 1 if name == "resnet_digits" else 3
        feed = {"input_0": np.random.rand(3, channels, side, side + divisor).astype(np.float32)}
        first = "model" if "model" in halves else "trunk"
        got = ort_session(halves[first]).run(None, feed)
        want = ort_session(floats[first]).run(None, feed)
        assert [g.shape for g in got] == [w.shape for w in want] and all(g.dtype == np.float32 for g in got)
        if "head" in halves:
            levels = {f"input_{i}": level for i, level in enumerate(want)}
            got = ort_session(halves["head"]).run(None, levels)
            want = ort_session(floats["head"]).run(None, levels)
            assert [g.shape for g in got] == [w.shape for w in want]


def test_fp16_graph_in_onnx_runtime_within_the_float16_bound(tiny) -> None:
    """The float16 graph run by ONNX Runtime (which computes float16 nodes through float32 casts, rounding
    each node's output to float16) against the exact (float64) evaluation of the same rounded network —
    float16 weights, float16-rounded input — within the first-order bound of tests/models/network_error.py
    with float16's unit roundoff for every operation."""
    net, folder, x = tiny
    graph = export_fp16_onnx(net, folder / "fp16-cpu", example_size=(16, 16))["model"]
    got = torch.from_numpy(ort_session(graph).run(None, {"input_0": x.numpy()})[0]).double()
    rounded = HalfPrecision(net).module.double()
    outputs = [(i, j) for i in range(x.shape[0]) for j in range(4)]
    exact, bound = first_order_output_bound(rounded, x.half().double(), outputs, torch.float16)
    difference = (got - exact).flatten()
    assert bool((difference.abs() <= bound).all()), float((difference.abs() - bound).max())
    assert float(difference.abs().max()) > 0  # float16 rounding did happen


# ----------------------------------------------------------------------------------------- with a GPU
def _profile_of(shape: tuple[int, ...], batch: int = 8) -> tuple:
    return ((1, *shape[1:]), (batch, *shape[1:]), (batch, *shape[1:]))


class _Small(torch.nn.Module):
    """Two 3×3 convolutions with ReLUs, global average pooling, a linear layer: only operations with a
    rounding rule in tests/models/network_error.py (fan-ins 27, 72 and 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        self.pool, self.fc = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(y), 1))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(7)
    folder = tmp_path_factory.mktemp("trt")
    return _Small().eval(), folder, torch.rand(8, 3, 16, 16)


@needs_tensorrt
def test_fp32_engine_against_onnx_runtime(tiny) -> None:
    """fp32 (TF32 off): the engine and ONNX Runtime evaluate the same float32 graph in other orders; each
    is within the first-order rounding bound of tests/models/network_error.py (float32, any summation
    order; it assumes direct or GEMM convolutions, not Winograd/FFT) of the exact result, so they differ
    by at most twice it. Inputs are CUDA tensors, bound without a copy; outputs stay on CUDA."""
    net, folder, x = tiny
    graph = export_onnx(net, folder / "fp32", example_size=(16, 16))["model"]
    engine = build_engine(graph, folder / "fp32.engine", {"input_0": _profile_of(tuple(x.shape))})
    module = TensorRTModule(engine)
    got = module(x.cuda())
    assert got.is_cuda and got.dtype == torch.float32
    want = torch.from_numpy(ort_session(graph).run(None, {"input_0": x.numpy()})[0])
    outputs = [(i, j) for i in range(x.shape[0]) for j in range(4)]
    _, bound = first_order_output_bound(copy.deepcopy(net).double(), x.double(), outputs, torch.float32)
    difference = (got.cpu().double() - want.double()).flatten()
    assert bool((difference.abs() <= 2 * bound).all()), float((difference.abs() - 2 * bound).max())


@needs_tensorrt
def test_fp16_engine_against_onnx_runtime(tiny) -> None:
    """fp16: both run the same float16 graph — the same float16 weights and float16-rounded input — and
    each evaluation is within the first-order bound with float16's unit roundoff for every operation (its
    fan-ins ≤ 73 keep ``γ(K)`` < 0.04: the bound holds whether a kernel accumulates in float16 or float32;
    it assumes direct or GEMM convolutions, not Winograd) of the exact result of that rounded network
    (ONNX Runtime's side is checked on the CPU by test_fp16_graph_in_onnx_runtime_within_the_float16_bound),
    so they differ by at most twice it."""
    net, folder, x = tiny
    graph = export_fp16_onnx(net, folder / "fp16", example_size=(16, 16))["model"]
    engine = build_engine(graph, folder / "fp16.engine", {"input_0": _profile_of(tuple(x.shape))})
    got = TensorRTModule(engine)(x.cuda()).cpu()
    want = torch.from_numpy(ort_session(graph).run(None, {"input_0": x.numpy()})[0])
    rounded = HalfPrecision(net).module.double()  # the graph's float16 weights, evaluated exactly
    outputs = [(i, j) for i in range(x.shape[0]) for j in range(4)]
    _, bound = first_order_output_bound(rounded, x.half().double(), outputs, torch.float16)
    difference = (got.double() - want.double()).flatten()
    assert bool((difference.abs() <= 2 * bound).all()), float((difference.abs() - 2 * bound).max())


@needs_tensorrt
def test_int8_engine_against_onnx_runtime(tiny) -> None:
    """int8 (explicit quantization of our symmetric QDQ graph): TensorRT and ONNX Runtime each stay within
    the derived bound of tests/deploy/qdq_bounds.py of the eager fake-quantized model (same codes up to
    one step per quantizer where float arithmetic moves a value across a rounding boundary), so they
    differ by at most twice it."""
    from visionkit.deploy.qat import prepare_qat
    from visionkit.deploy.quantize import calibrate_onnx, quantize_onnx

    _, folder, x = tiny
    net = Int8Net().eval()  # the network qdq_bounds has rules for
    graph = export_onnx(net, folder / "int8-float", example_size=(16, 16))["model"]
    ranges = calibrate_onnx(graph, [(x,)], "minmax")
    qdq = quantize_onnx(graph, ranges, folder / "int8.onnx", activations="int8")
    engine = build_engine(qdq, folder / "int8.engine", {"input_0": _profile_of(tuple(x.shape))})
    got = TensorRTModule(engine)(x.cuda()).cpu()
    want = torch.from_numpy(ort_session(qdq).run(None, {"input_0": x.numpy()})[0])
    reference = prepare_qat(net, graph, ranges, x, activations="int8").eval()
    bound = difference_bound(reference, x)
    assert float((got - want).abs().max()) <= 2 * bound


@needs_tensorrt
def test_engine_refuses_a_shape_outside_its_profile(tiny) -> None:
    from visionkit.errors import InputShapeError

    net, folder, x = tiny
    graph = export_onnx(net, folder / "profile", example_size=(16, 16))["model"]
    engine = build_engine(graph, folder / "profile.engine", {"input_0": _profile_of(tuple(x.shape), 2)})
    with pytest.raises(InputShapeError, match="outside the engine's profile"):
        TensorRTModule(engine)(torch.rand(3, 3, 16, 16).cuda())


@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_retinanet_engines_run_through_the_detector_glue(tmp_path, precision: str) -> None:
    """A RetinaNet's trunk and head engines inside the eager detector (anchors, decoding, NMS ours), on
    two images of other sizes: one detections dict per image with the keys of ONNX Runtime's on the same
    graphs (the numbers are compared on the small network above, where a bound can be derived)."""
    torch.manual_seed(0)
    detector = fuse_model(create_model("retinanet_plain_fpn", num_classes=3, head_convs=1).eval())
    folder = tmp_path / precision
    if precision == "fp16":
        export_fp16_onnx(detector, folder, example_size=(64, 64))
    else:
        export_onnx(detector, folder, example_size=(64, 64))
    from visionkit.deploy.tensorrt import build_engines

    build_engines(folder, precision, engine_profiles(detector, image_size=64, max_batch=2))
    engines, sessions = load_tensorrt(detector, folder), load_onnx_runtime(detector, folder)
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 64)]
    got, want = engines(images), sessions(images)
    assert len(got) == len(want) == 2
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w) and g["boxes"].shape[1] == 4
