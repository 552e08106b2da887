"""Quantization-aware training (visionkit.deploy.qat): fake quantization equals quantize → dequantize
exactly, the straight-through gradient against an element-by-element reference, QAT layers carrying the
graph's exact int8 / int32 numbers, and the exported QAT graph in ONNX Runtime against the eager
fake-quantized model within a bound derived from the network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from int8_net import Int8Net
from qdq_bounds import difference_bound, qdq_session
from torch import nn

from visionkit.deploy.onnx import export_onnx, ort_session
from visionkit.deploy.qat import FakeQuantize, QATLayer, export_qat, fake_quantize, prepare_qat
from visionkit.deploy.quantize import calibrate_onnx, quantize_onnx

SCALE, ZERO = float(np.float32(0.0371)), 37


def _values() -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(4000) * 6  # reaches past both ends of the uint8 range [−37·s, 218·s]
    ties = (torch.arange(-40, 230).float() + 0.5) * SCALE  # near the code boundaries
    return torch.cat([x, ties, torch.tensor([0.0, -1e6, 1e6])])


def test_fake_quantize_equals_quantize_then_dequantize() -> None:
    """Bit for bit: against the formula in numpy float32 (``rint`` rounds half to even) and against ONNX
    Runtime's ``QuantizeLinear → DequantizeLinear``."""
    from onnx import TensorProto

    x = _values()
    got = fake_quantize(x, SCALE, ZERO, 0, 255).numpy()
    code = np.clip(np.rint(x.numpy() / np.float32(SCALE)) + ZERO, 0, 255)
    expected = ((code - ZERO) * np.float32(SCALE)).astype(np.float32)
    assert np.array_equal(got, expected)
    _, session = qdq_session(len(x), SCALE, ZERO, TensorProto.UINT8)
    assert np.array_equal(session.run(None, {"x": x.numpy()})[0], got)


def test_straight_through_gradient_against_an_element_loop() -> None:
    """The gradient is the incoming one where the code ``round(x / s) + z`` lies in ``[0, 255]`` and 0
    where it was clipped (checked element by element)."""
    x = _values().requires_grad_(True)
    upstream = torch.randn(len(x))
    fake_quantize(x, SCALE, ZERO, 0, 255).backward(upstream)
    for k in range(len(x)):
        code = round(float(np.float32(x[k].item()) / np.float32(SCALE))) + ZERO  # ties: not at ±0.5 codes
        inside = 0 <= code <= 255
        assert x.grad[k].item() == (upstream[k].item() if inside else 0.0), k
    # the module form: scale and zero point from a calibrated range, as the graph stores them
    quantizer = FakeQuantize(-1.0, 3.0)
    assert (quantizer.scale, quantizer.zero_point) == (float(np.float32(4 / 255)), 64)


def test_qat_layer_carries_the_graph_numbers_and_passes_gradients(tmp_path) -> None:
    """ŵ and b̂ of a QAT convolution equal the int8 weight × scale and int32 bias × scale stored in the QDQ
    graph (dequantized in float32, as DequantizeLinear does); their gradients are those of a float
    convolution evaluated at (ŵ, b̂) (straight-through)."""
    import onnx
    from onnx import numpy_helper

    torch.manual_seed(1)
    conv = nn.Conv2d(3, 5, 3, padding=1)
    float_graph = export_onnx(nn.Sequential(conv).eval(), tmp_path / "f", example_size=(6, 6))["model"]
    batches = [(torch.rand(4, 3, 6, 6),)]
    ranges = calibrate_onnx(float_graph, batches, "minmax")
    graph = onnx.load(str(quantize_onnx(float_graph, ranges, tmp_path / "q.onnx"))).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    weight = next(k for k in init if k.endswith("__int8"))
    bias = next(k for k in init if k.endswith("__int32"))
    stored_w = init[weight] * init[weight.replace("__int8", "__scale")][:, None, None, None]
    stored_b = init[bias] * init[bias.replace("__int32", "__scale")]
    layer = QATLayer(conv, FakeQuantize(*ranges["input_0"]).scale)
    w_hat, b_hat = layer.quantized_parameters()
    assert np.array_equal(w_hat.detach().numpy(), stored_w.astype(np.float32))
    assert np.array_equal(b_hat.detach().numpy(), stored_b.astype(np.float32))
    x = torch.rand(2, 3, 6, 6)
    layer(x).square().sum().backward()
    leaf_w, leaf_b = w_hat.detach().requires_grad_(True), b_hat.detach().requires_grad_(True)
    nn.functional.conv2d(x, leaf_w, leaf_b, padding=1).square().sum().backward()
    assert torch.equal(conv.weight.grad, leaf_w.grad) and torch.equal(conv.bias.grad, leaf_b.grad)


def test_exported_qat_graph_agrees_with_the_eager_fake_quantized_model(tmp_path) -> None:
    """Calibrate, make the QAT model, train it a few steps (the weights move away from the calibrated
    ones; the scales are kept), export: ONNX Runtime's logits are within the derived bound of the eager
    fake-quantized model's, on a batch of other images; the graph carries the kept scales."""
    import onnx
    from onnx import numpy_helper

    torch.manual_seed(2)
    net = Int8Net().eval()
    float_graph = export_onnx(net, tmp_path / "f", example_size=(8, 8))["model"]
    calib = torch.rand(16, 3, 8, 8)
    ranges = calibrate_onnx(float_graph, [(calib,)], "minmax")
    qat = prepare_qat(net, float_graph, ranges, calib)
    quantizers = [m for m in qat.modules() if isinstance(m, FakeQuantize)]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    before = net.conv1.weight.detach().clone()
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(qat(calib), torch.arange(16) % 4).backward()
        optimizer.step()
    assert not torch.equal(before, net.conv1.weight)  # the QAT model trains the net's own parameters
    out = export_qat(net, ranges, tmp_path / "qat.onnx", 8)
    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    activations = {
        k[: -len("__zero_point")]
        for k, v in stored.items()
        if k.endswith("__zero_point") and v.dtype == np.uint8
    }
    assert {q.tensor for q in quantizers} == activations and len(
        quantizers
    ) == 5  # input, conv1, conv2, add, mean
    for quantizer in quantizers:
        assert stored[f"{quantizer.tensor}__scale"] == np.float32(quantizer.scale)
        assert stored[f"{quantizer.tensor}__zero_point"] == quantizer.zero_point
    x = torch.rand(6, 3, 8, 8)
    with torch.no_grad():
        eager = qat(x)
    got = torch.from_numpy(ort_session(out).run(None, {"input_0": x.numpy()})[0])
    bound = difference_bound(qat, x)
    assert float((got - eager).abs().max()) <= bound


def test_qat_refuses_a_graph_it_cannot_mirror(tmp_path) -> None:
    """A graph tensor with no equal in the eager model (the wrong model for the graph) is named."""
    from visionkit.errors import ExportError

    torch.manual_seed(3)
    net = Int8Net().eval()
    float_graph = export_onnx(net, tmp_path / "f", example_size=(8, 8))["model"]
    calib = torch.rand(4, 3, 8, 8)
    ranges = calibrate_onnx(float_graph, [(calib,)], "minmax")
    with pytest.raises(ExportError, match="has no equal in the model"):
        prepare_qat(Int8Net().eval(), float_graph, ranges, calib)
