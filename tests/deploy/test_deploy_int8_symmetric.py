"""Symmetric int8 activations (``activations="int8"``: zero point 0, codes ``[−128, 127]``, float biases; the
QDQ graph TensorRT's explicit quantization takes): the quantizer bit for bit against the formula and ONNX
Runtime, its parameters by hand, the graph carrying exactly our numbers with its ReLUs kept, and ONNX
Runtime's output against the eager fake-quantized model within the derived bound of qdq_bounds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from int8_net import Int8Net
from qdq_bounds import difference_bound, qdq_session

from visionkit.deploy.export import ExportRecipe, activations_for
from visionkit.deploy.onnx import export_onnx, ort_session
from visionkit.deploy.qat import FakeQuantize, fake_quantize, prepare_qat
from visionkit.deploy.quantize import (
    activation_qparams,
    calibrate_onnx,
    quantize_onnx,
    quantized_tensors,
    weight_qparams,
)
from visionkit.errors import ConfigError

SCALE = float(np.float32(0.0371))


def test_symmetric_quantizer_equals_the_formula_and_onnx_runtime() -> None:
    """``(clamp(round_half_even(x / s), −128, 127))·s`` in numpy float32 (``rint``) and ONNX Runtime's
    ``QuantizeLinear → DequantizeLinear`` into ``int8`` with zero point 0: the same bits as ours, on values
    past both ends (−128 is reachable: ``x < −127.5·s``), at code boundaries ±0.5 and at 0."""
    from onnx import TensorProto

    torch.manual_seed(0)
    x = torch.cat([torch.randn(4000) * 4, (torch.arange(-130, 130).float() + 0.5) * SCALE,
                   torch.tensor([0.0, -1e6, 1e6, -128 * SCALE, 127 * SCALE])])  # fmt: skip
    got = fake_quantize(x, SCALE, 0, -128, 127).numpy()
    code = np.clip(np.rint(x.numpy() / np.float32(SCALE)), -128, 127)
    assert np.array_equal(got, (code * np.float32(SCALE)).astype(np.float32))
    assert code.min() == -128 and code.max() == 127
    _, session = qdq_session(len(x), SCALE, 0, TensorProto.INT8)
    assert np.array_equal(session.run(None, {"x": x.numpy()})[0], got)
    quantizer = FakeQuantize(-1.0, 3.0, activations="int8")  # s = 3 / 127, z = 0
    assert (quantizer.scale, quantizer.zero_point) == (float(np.float32(3 / 127)), 0)
    assert (quantizer.qmin, quantizer.qmax) == (-128, 127)


def test_symmetric_parameters_by_hand() -> None:
    # s = max(|lo|, |hi|) / 127, z = 0; the range is widened to contain 0 first (as for uint8)
    assert activation_qparams(-1.0, 3.0, "int8") == (3 / 127, 0)
    assert activation_qparams(-2.54, 1.0, "int8") == (2.54 / 127, 0)
    assert activation_qparams(0.5, 2.54, "int8") == (2.54 / 127, 0)
    assert activation_qparams(0.0, 0.0, "int8") == (1.0, 0)
    with pytest.raises(ValueError, match="activations"):
        activation_qparams(0.0, 1.0, "int4")
    # the recipe: auto is uint8 (ONNX Runtime's kernels); a bad name is a usage error naming the key
    assert activations_for(ExportRecipe(weights="m.pt")) == "uint8"
    assert activations_for(ExportRecipe(weights="m.pt", activations="int8")) == "int8"
    with pytest.raises(ConfigError, match="activations"):
        ExportRecipe(weights="m.pt", activations="int4")


@pytest.fixture(scope="module")
def signed_setup(tmp_path_factory):
    """Int8Net, its float graph and min–max ranges from signed images (the input's negative codes used)."""
    torch.manual_seed(4)
    folder = tmp_path_factory.mktemp("symmetric")
    net = Int8Net().eval()
    float_graph = export_onnx(net, folder / "float", example_size=(8, 8))["model"]
    calib = torch.randn(16, 3, 8, 8)
    ranges = calibrate_onnx(float_graph, [(calib,)], "minmax")
    return net, float_graph, calib, ranges, folder


def test_symmetric_graph_carries_our_numbers(signed_setup) -> None:
    """Every activation quantizer is ``int8`` with zero point 0 and our scale; weights are the per-channel
    ``int8`` of :func:`weight_qparams`; biases stay float (no ``int32`` tensor); the ReLU and the ReLU6
    stay in the graph and the tensors they write, not read, are quantized."""
    import onnx
    from onnx import numpy_helper

    _, float_graph, _, ranges, folder = signed_setup
    out = quantize_onnx(float_graph, ranges, folder / "int8.onnx", activations="int8")
    model = onnx.load(str(out))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    names = quantized_tensors(onnx.load(str(float_graph)), "int8")
    assert [n.input[0] for n in quantizers] == names and len(names) == 4  # input, ReLU6, conv2, mean
    for node in quantizers:
        scale, _ = activation_qparams(*ranges[node.input[0]], "int8")
        assert init[node.input[1]] == np.float32(scale)
        assert init[node.input[2]].dtype == np.int8 and init[node.input[2]] == 0
    assert not any(v.dtype == np.int32 for v in init.values())
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Relu") == 1 and ops.count("Clip") == 1
    float_inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(float_graph)).graph.initializer}
    weights = [name for name in float_inits if f"{name}__int8" in init]
    assert len(weights) == 3
    for name in weights:
        w = torch.from_numpy(float_inits[name].copy())
        transposed = w.shape == (8, 4)
        q, s = weight_qparams(w.T if transposed else w)
        assert np.array_equal(init[f"{name}__int8"], (q.T if transposed else q).numpy())
        assert np.array_equal(init[f"{name}__scale"], s.numpy())
    biases = {n.input[2] for n in model.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2}
    assert biases and all(b in init and init[b].dtype == np.float32 for b in biases)
    assert {b: init[b] for b in biases}.keys() <= float_inits.keys()  # the float biases themselves


def test_symmetric_graph_in_onnx_runtime_against_the_fake_quantized_model(signed_setup) -> None:
    """ONNX Runtime's logits of the symmetric graph against the eager model with the same symmetric fake
    quantizers (:func:`prepare_qat` with ``activations="int8"``: found in the eager model by value, not
    read from the graph writer), within the bound derived node by node (qdq_bounds), on other signed
    images."""
    net, float_graph, calib, ranges, folder = signed_setup
    out = quantize_onnx(float_graph, ranges, folder / "int8_run.onnx", activations="int8")
    reference = prepare_qat(net, float_graph, ranges, calib, activations="int8").eval()
    assert all(
        q.zero_point == 0 and q.qmin == -128 for q in reference.modules() if isinstance(q, FakeQuantize)
    )
    torch.manual_seed(5)
    x = torch.randn(6, 3, 8, 8) * 1.2  # also past the calibrated range: the saturation at −128 / 127
    with torch.no_grad():
        eager = reference(x)
    got = torch.from_numpy(ort_session(out).run(None, {"input_0": x.numpy()})[0])
    bound = difference_bound(reference, x)
    assert float((got - eager).abs().max()) <= bound


def test_symmetric_quantization_aware_training_export(untrained_classifier, tmp_path) -> None:
    """``qat_epochs=1 activations=int8``: the fine-tuning trains with the symmetric fake quantizers and the
    graph written carries symmetric scales (int8 zero points, all 0), the ReLUs and float biases (the gate
    is opened: the fixture's weights are random)."""
    import onnx
    from onnx import numpy_helper

    from visionkit.deploy.export import export_run

    recipe = ExportRecipe(weights=str(untrained_classifier), int8=True, calib="minmax", calib_count=64,
                          qat_epochs=1, max_drop=1.0, activations="int8")  # fmt: skip
    manifest = export_run(recipe, tmp_path / "qat")
    assert manifest["activations"] == "int8" and manifest["qat_epochs"] == 1
    graph = onnx.load(str(tmp_path / "qat" / "model.onnx")).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    zeros = [init[n.input[2]] for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zeros and all(z.dtype == np.int8 and (z == 0).all() for z in zeros)
    assert "Relu" in {n.op_type for n in graph.node} and not any(v.dtype == np.int32 for v in init.values())
