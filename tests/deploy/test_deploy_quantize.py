"""int8 quantization (visionkit.deploy.quantize): observers against slow references, quantization
parameters against hand computations, the QDQ graph carrying exactly our numbers and running in ONNX
Runtime, refusal of uncalibrated export, the accuracy gate and bad calibration images."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from int8_net import Int8Net

from visionkit.deploy.export import ExportRecipe, calibration_images, export_run
from visionkit.deploy.onnx import export_onnx, ort_session
from visionkit.deploy.quantize import (
    EntropyObserver,
    MinMaxObserver,
    PercentileObserver,
    activation_qparams,
    calibrate_onnx,
    entropy_threshold,
    quantize_onnx,
    weight_qparams,
)
from visionkit.errors import ConfigError, ExportError, InputShapeError, NotFittedError


def _slow_kl(histogram: list[float], i: int, levels: int = 128) -> float:
    """TensorRT's recipe for one candidate, bin by bin (the definition, no vectorization): ``P`` = bins
    ``0..i−1`` with the outliers added to bin ``i − 1``; ``Q`` = bins ``0..i−1`` merged into ``levels``
    levels, each level's count spread evenly over the level's bins where ``P`` is non-zero."""
    reference = [histogram[k] for k in range(i)]
    reference[i - 1] += sum(histogram[k] for k in range(i, len(histogram)))
    per_level = i // levels
    candidate = [0.0] * i
    for level in range(levels):
        start = level * per_level
        stop = i if level == levels - 1 else start + per_level
        total = sum(histogram[k] for k in range(start, stop))
        support = [k for k in range(start, stop) if reference[k] != 0]
        for k in support:
            candidate[k] = total / len(support)
    p_sum, q_sum = sum(reference), sum(candidate)
    divergence = 0.0
    for k in range(i):
        if reference[k] > 0:
            if candidate[k] == 0:
                return math.inf
            p, q = reference[k] / p_sum, candidate[k] / q_sum
            divergence += p * math.log(p / q)
    return divergence


@pytest.mark.parametrize(("seed", "levels"), [(0, 128), (1, 256)])
def test_entropy_search_against_a_direct_loop(seed: int, levels: int) -> None:
    """Our vectorized search against the direct loop on every candidate levels..2047 (a histogram with
    empty bins — among them bins ``i − 1`` that only the folded outliers fill — and a long tail). Both sum
    the same float64 terms in other orders, so the chosen candidate's divergence is the direct loop's
    minimum up to rounding (Higham's γ over the ≤ 2048 terms, relative)."""
    rng = np.random.default_rng(seed)
    values = np.abs(rng.standard_t(3, size=20000))
    histogram, _ = np.histogram(values, bins=2048, range=(0, values.max()))
    histogram = histogram.astype(np.float64)
    histogram[rng.integers(0, 2048, 200)] = 0  # empty bins inside the range
    width = values.max() / 2048
    threshold, index = entropy_threshold(histogram, width, start=levels, levels=levels)
    slow = [_slow_kl(histogram.tolist(), i, levels) for i in range(levels, 2048)]
    best = min(slow)
    assert math.isfinite(best)
    relative = 4 * 2048 * np.finfo(np.float64).eps  # two sums of ≤ 2048 terms, logs within 1 ulp
    assert slow[index - levels] <= best + relative * max(1.0, abs(best))
    assert threshold == (index + 0.5) * width
    with pytest.raises(ValueError, match="start"):
        entropy_threshold(histogram, width, start=100, levels=128)


def _entropy_range(observer: EntropyObserver, data: torch.Tensor) -> tuple[float, float]:
    for pass_index in range(observer.passes):
        for chunk in data.split(5000):
            observer.observe(chunk, pass_index)
    return observer.range()


@pytest.mark.parametrize("signed", [False, True])
def test_entropy_observer_from_the_definition(signed: bool) -> None:
    """The observer's range against the definition written out with numpy: the histogram of the non-zero
    ``|x|`` over ``[0, max|x|]``, 256 levels for a non-negative tensor and 128 for a signed one (the codes
    of the quantizer on ``[0, t]``), candidates from the level count, the searched (direct-loop-checked)
    threshold clipped to ``[min, max]``."""
    torch.manual_seed(2)
    data = torch.randn(40000).double() ** 3
    data = data if signed else torch.relu(data)  # ReLU: half the values exact zeros
    observer = EntropyObserver()
    low, high = _entropy_range(observer, data)
    values = data.numpy()
    magnitude = np.abs(values[values != 0])
    histogram, _ = np.histogram(magnitude, bins=2048, range=(0, np.abs(values).max()))
    levels = 128 if signed else 256
    threshold, _ = entropy_threshold(
        histogram.astype(np.float64), np.abs(values).max() / 2048, levels, levels
    )
    assert observer.levels == levels
    assert (low, high) == (max(values.min(), -threshold), min(values.max(), threshold))
    assert high < values.max()  # the heavy tail (x³ of a normal) is clipped


def test_entropy_range_does_not_depend_on_the_relu_zeros() -> None:
    """The cause of the old calibrator's clipping: the ReLU's exact zeros (quantized exactly, the zero point
    is an integer) once formed a spike in bin 0 whose smearing over level 0 made every wider threshold
    look worse. Now the threshold is the same with 0 %, 50 % or 95 % zeros."""
    torch.manual_seed(3)
    positive = torch.rand(20000).double() ** 2 * 6
    ranges = []
    for zeros in (0, 20000, 380000):
        data = torch.cat([positive, torch.zeros(zeros, dtype=torch.float64)])
        ranges.append(_entropy_range(EntropyObserver(), data[torch.randperm(len(data))]))
    assert ranges[0][1] == ranges[1][1] == ranges[2][1]  # (the low ends are the minima: > 0, then 0)
    assert ranges[0][1] > 0.9 * float(positive.max())  # this light-tailed density is barely clipped


def test_minmax_and_percentile_observers() -> None:
    data = torch.linspace(-2.0, 6.0, 8001)  # spacing 0.001
    minmax = MinMaxObserver()
    for chunk in data.split(1000):
        minmax.observe(chunk)
    assert minmax.range() == (-2.0, 6.0)
    observer = PercentileObserver(99.0)
    for pass_index in range(observer.passes):
        for chunk in data.split(1000):
            observer.observe(chunk, pass_index)
    low, high = observer.range()
    exact_low, exact_high = np.percentile(data.double().numpy(), [1.0, 99.0])
    width = 8.0 / 2048  # each is within one bin of the exact percentile
    assert abs(low - exact_low) <= width and abs(high - exact_high) <= width
    with pytest.raises(NotFittedError):
        EntropyObserver().range()


def test_quantization_parameters_by_hand() -> None:
    # range [-1, 3]: s = 4/255, z = round(1 / s) = round(63.75) = 64
    assert activation_qparams(-1.0, 3.0) == (4 / 255, 64)
    # a range that excludes 0 is widened to contain it (0 must be exact)
    assert activation_qparams(0.5, 2.55) == (2.55 / 255, 0)
    assert activation_qparams(0.0, 0.0) == (1.0, 0)
    # per-channel symmetric int8: s_c = max|W_c| / 127
    weight = torch.tensor([[[[0.5]], [[-1.27]]], [[[2.54]], [[0.0]]]])
    q, scale = weight_qparams(weight)
    assert q.dtype == torch.int8 and q.flatten().tolist() == [50, -127, 127, 0]
    assert torch.allclose(scale, torch.tensor([0.01, 0.02]), rtol=2**-23, atol=0)


@pytest.fixture(scope="module")
def float_graph(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("float")
    export_onnx(Int8Net().eval(), folder, example_size=(12, 12))
    return folder / "model.onnx"


def test_qdq_graph_carries_our_numbers_and_runs(float_graph, tmp_path) -> None:
    import onnx
    from onnx import numpy_helper

    torch.manual_seed(1)
    batches = [(torch.rand(4, 3, 12, 12),) for _ in range(3)]
    ranges = calibrate_onnx(float_graph, batches, "minmax")
    out = quantize_onnx(float_graph, ranges, tmp_path / "int8.onnx")
    model = onnx.load(str(out))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    # the input's range is that of the calibration images: our (scale, zero point), bit for bit
    low = min(float(b[0].min()) for b in batches)
    high = max(float(b[0].max()) for b in batches)
    scale, zero = activation_qparams(low, high)
    assert init["input_0__scale"] == np.float32(scale) and init["input_0__zero_point"] == zero
    # every Conv / Gemm weight is int8 with our per-channel scales
    float_model = onnx.load(str(float_graph))
    weights = {i.name: numpy_helper.to_array(i) for i in float_model.graph.initializer}
    quantized = [n for n in weights if f"{n}__int8" in init]
    assert len(quantized) == 3  # conv1, conv2, fc
    for name in quantized:
        w = torch.from_numpy(weights[name].copy())
        transposed = w.shape == (8, 4)  # a MatMul/Gemm weight stored [in, out]
        q, s = weight_qparams(w.T if transposed else w)
        assert np.array_equal(init[f"{name}__int8"], (q.T if transposed else q).numpy())
        assert np.array_equal(init[f"{name}__scale"], s.numpy())
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert "Relu" not in ops and "Clip" not in ops  # ReLU and ReLU6 are the quantizers' saturation
    # it runs, and the logits stay float
    x = torch.rand(2, 3, 16, 20)
    got = ort_session(out).run(None, {"input_0": x.numpy()})[0]
    assert got.dtype == np.float32 and got.shape == (2, 4)


def test_uncalibrated_export_is_refused(float_graph, tmp_path) -> None:
    with pytest.raises(ExportError, match="uncalibrated"):
        quantize_onnx(float_graph, None, tmp_path / "int8.onnx")
    with pytest.raises(ExportError, match="no calibrated range"):
        quantize_onnx(float_graph, {"input_0": (0.0, 1.0)}, tmp_path / "int8.onnx")
    assert not (tmp_path / "int8.onnx").exists()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A trained digits classifier (two short epochs: the gate needs a model worth measuring)."""
    from visionkit.engine.classify import ClassifyRecipe, train_classifier

    folder = tmp_path_factory.mktemp("digits")
    train_classifier(ClassifyRecipe(epochs=2, progress=False, threads=1), folder)
    return folder / "model.pt"


def test_int8_export_and_gate(digits_run, tmp_path) -> None:
    manifest = export_run(ExportRecipe(weights=str(digits_run), int8=True, calib="minmax", max_drop=0.05),
                          tmp_path / "ok")  # fmt: skip
    assert manifest["int8"] and manifest["accuracy_int8"] >= manifest["accuracy_float"] - 0.05
    assert json.loads((tmp_path / "ok" / "export.json").read_text()) == manifest
    assert (tmp_path / "ok" / "model.onnx").is_file()
    # the int8 kernels were chosen by timing (the default) and the choice is recorded
    tuning = manifest["int8_kernels"]
    assert tuning["choice"] in tuning["ms"] and tuning["threads"] == torch.get_num_threads()
    # int8_kernels=symmetric: no timing, every weight zero point 0 (the numbers are the same either way)
    plain = export_run(ExportRecipe(weights=str(digits_run), int8=True, calib="minmax", max_drop=0.05,
                                    int8_kernels="symmetric"), tmp_path / "plain")  # fmt: skip
    assert "int8_kernels" not in plain
    x = {"input_0": torch.rand(5, 1, 8, 8).numpy()}
    outputs = [ort_session(tmp_path / name / "model.onnx").run(None, x)[0] for name in ("ok", "plain")]
    assert np.array_equal(*outputs)
    with pytest.raises(ConfigError, match="int8_kernels"):
        ExportRecipe(weights="x", int8_kernels="fast")
    # calibrated on one blank image, every range collapses to [0, 0] (scale 1): the int8 graph loses its
    # accuracy and, with max_drop=0, is not written
    blank = tmp_path / "blank"
    blank.mkdir()
    from PIL import Image

    Image.new("L", (8, 8)).save(blank / "zero.png")
    recipe = ExportRecipe(
        weights=str(digits_run), int8=True, calib="minmax", max_drop=0.0, calib_images=str(blank)
    )
    with pytest.raises(ExportError, match="was not written"):
        export_run(recipe, tmp_path / "gated")
    assert not (tmp_path / "gated" / "model.onnx").exists()


def test_symmetric_int8_export_and_gate(digits_run, tmp_path) -> None:
    """``activations=int8`` end to end (the graph TensorRT takes): calibrated, gated by the same test
    accuracy (ONNX Runtime runs it), the manifest says so, and every activation zero point in the written
    graph is an ``int8`` 0 with no ``int32`` bias."""
    import onnx
    from onnx import numpy_helper

    manifest = export_run(ExportRecipe(weights=str(digits_run), int8=True, calib="minmax", max_drop=0.05,
                                       activations="int8"), tmp_path)  # fmt: skip
    assert manifest["activations"] == "int8" and manifest["top1_agreement"] >= 0.9
    assert manifest["accuracy_int8"] >= manifest["accuracy_float"] - 0.05
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    zeros = [init[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear"]
    assert zeros and all(z.dtype == np.int8 and z == 0 for z in zeros)
    assert not any(v.dtype == np.int32 for v in init.values())
    # the weights keep zero point 0 too: no kernel tuning (its GEMM path writes −1) on a TensorRT graph
    weights = [init[n.input[2]] for n in graph.node if n.op_type == "DequantizeLinear"]
    assert all((z == 0).all() for z in weights) and "int8_kernels" not in manifest


def test_calibration_images_of_the_wrong_size_or_channels(digits_run, tmp_path) -> None:
    from PIL import Image

    from visionkit.deploy.export import load_run_model

    _, info = load_run_model(digits_run)
    Image.new("RGB", (8, 8)).save(tmp_path / "rgb.png")
    with pytest.raises(InputShapeError, match=r"rgb\.png: expected 1 channel\(s\) of 8×8, got 3"):
        calibration_images(str(tmp_path), 4, info)
    (tmp_path / "rgb.png").unlink()
    Image.new("L", (9, 8)).save(tmp_path / "wide.png")
    with pytest.raises(InputShapeError, match=r"wide\.png.*got 1 channel\(s\) of 8×9"):
        calibration_images(str(tmp_path), 4, info)
    with pytest.raises(ConfigError, match="calib_images"):
        calibration_images(str(tmp_path / "missing"), 4, info)
    with pytest.raises(ConfigError, match="calib"):
        ExportRecipe(weights="x", calib="kl")


def test_docstring_examples_run(tmp_path, monkeypatch) -> None:
    """(Also run by tests/docs for every module; here with the deploy tests, in an empty folder: the
    examples write files.)"""
    import doctest

    monkeypatch.chdir(tmp_path)
    from visionkit.deploy import export, onnx, quantize

    for module in (quantize, onnx, export):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_int8_detector_gate_refuses_and_writes_nothing(tmp_path) -> None:
    """The detector path end to end (trunk and head calibrated on their recorded inputs, QDQ graphs run
    through the detector's own glue, COCO AP of both): with a gate no model can pass (a negative
    ``max_drop``) it raises and the output folder gets no graph."""
    from visionkit.data.shapes import ShapesDataset
    from visionkit.deploy.detect_int8 import part_inputs, quantize_detector
    from visionkit.deploy.fuse import fuse_model
    from visionkit.models import create_model

    torch.manual_seed(0)
    detector = fuse_model(create_model("retinanet_plain_fpn", num_classes=3, head_convs=1))
    data = ShapesDataset(3, seed=0)
    images = [data[i][0] for i in range(2)]
    seen = part_inputs(detector, images)
    assert len(seen["trunk"]) == len(seen["head"]) == 2 and len(seen["head"][0]) == 5  # P3–P7
    with pytest.raises(ExportError, match="was not written"):
        quantize_detector(
            detector, tmp_path / "out", calibration=images, validation=data, calibrator="minmax",
            max_drop=-1.0, example_size=(64, 64), scratch=tmp_path / "scratch",
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_calibrator_defaults_by_model_kind() -> None:
    """``calib=auto`` (the default): entropy for classifiers, percentile 99.99 for every detector kind (the
    calibrator that met the AP gate with the most room on the measured RetinaNet); a named one is kept."""
    from visionkit.deploy.export import calibrator_for

    assert ExportRecipe(weights="x").calib == "auto"
    assert calibrator_for("auto", "classifier") == "entropy"
    for kind in ("retinanet", "faster_rcnn", "yolo"):
        assert calibrator_for("auto", kind) == "percentile"
        for name in ("minmax", "percentile", "entropy"):
            assert calibrator_for(name, kind) == name
    with pytest.raises(ConfigError, match="calib"):
        ExportRecipe(weights="x", calib="kl")


def test_detector_calibration_images_are_the_plain_training_images() -> None:
    """A detector is calibrated on its training images as inference sees them: with the run's augmentation
    (here a flip of every image and scale jitter) left out, the same images on every call, whatever the
    random state."""
    from visionkit.data.shapes import ShapesDataset
    from visionkit.deploy.export import detector_calibration_images
    from visionkit.engine.detect import DetectRecipe, build_datasets

    run = DetectRecipe(model="retinanet_plain_fpn", num_train=3, num_val=2, image_size=64, hflip=1.0,
                       scale_jitter=(0.5, 1.5))  # fmt: skip
    torch.manual_seed(0)
    first = detector_calibration_images(run, 3)
    torch.manual_seed(1)
    second = detector_calibration_images(run, 3)
    plain = build_datasets(run).train
    raw = ShapesDataset(3, seed=run.seed, config=plain.config)
    for a, b, k in zip(first, second, range(3), strict=True):
        assert torch.equal(a, b) and torch.equal(a, raw[k][0])
    assert not torch.equal(plain[0][0], raw[0][0])  # the training set itself flips (and rescales) them
