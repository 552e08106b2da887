"""The derived bound on |ONNX Runtime − eager fake-quantized model| of a QDQ graph (the QAT tests and the
symmetric int8 tests): both sides quantize the same tensors with the same parameters; and ONNX Runtime's
``QuantizeLinear → DequantizeLinear`` alone, the reference of the fake quantizers."""

from __future__ import annotations

import operator

import torch
from torch import fx, nn

from tolerances import gamma, unit_roundoff
from visionkit.deploy.qat import FakeQuantize, QATLayer


def qdq_session(length: int, scale: float, zero_point: int, zero_type: int) -> tuple[object, object]:
    """``(model, session)``: ONNX ``QuantizeLinear → DequantizeLinear`` of a float vector of ``length``
    with ``scale`` and ``zero_point`` of the ONNX type ``zero_type`` (``TensorProto.UINT8`` or ``INT8``),
    checked and run by ONNX Runtime on the CPU."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
         helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
        "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [length])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [length])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [scale]),
         helper.make_tensor("z", zero_type, [], [zero_point])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model, ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def difference_bound(module: fx.GraphModule, x: torch.Tensor) -> float:
    """An elementwise bound on |ONNX Runtime − eager| of the logits, propagated node by node. The two sides
    quantize the same tensors with the same (scale, zero point) and hold the same int8 weights and int32
    biases (float biases with symmetric int8 activations); they differ in float arithmetic only (accumulation
    order, ORT's requantization multiply), which may move a value across a rounding boundary: each quantizer
    may then differ by one code, ``s``, on top of the difference it receives (quantization is 1-Lipschitz up
    to one step). A layer with fan-in ``K`` turns an input difference ``e`` into ``max_row ‖ŵ‖₁·e +
    γ(K+2)·(max_row ‖ŵ‖₁·max|x̂| + max|b̂|)``; ReLU/ReLU6 pass ``e``; an addition adds the two and
    ``2u·(max|a| + max|b|)``; a mean over ``n`` values passes ``e`` plus ``γ(n)·max|x|``."""
    error: dict[fx.Node, float] = {}
    largest: dict[fx.Node, float] = {}

    class _Bound(fx.Interpreter):
        def run_node(self, n: fx.Node) -> object:
            out = super().run_node(n)
            largest[n] = float(out.abs().max())
            inputs = [a for a in n.args if isinstance(a, fx.Node)]
            e = [error[a] for a in inputs]
            u = unit_roundoff(torch.float32)
            if n.op == "placeholder":
                error[n] = 0.0
            elif n.op == "call_module" and isinstance(self.module.get_submodule(n.target), FakeQuantize):
                error[n] = e[0] + self.module.get_submodule(n.target).scale
            elif n.op == "call_module" and isinstance(self.module.get_submodule(n.target), QATLayer):
                layer = self.module.get_submodule(n.target)
                w_hat, b_hat = layer.quantized_parameters()
                row = float(w_hat.detach().abs().flatten(1).sum(1).max())
                fan_in = w_hat[0].numel()
                rounding = gamma(fan_in + 2, torch.float32) * (
                    row * largest[inputs[0]] + float(b_hat.abs().max())
                )
                error[n] = row * e[0] + rounding
            elif n.target in (nn.functional.relu6, torch.relu):
                error[n] = e[0]
            elif n.target is operator.add:
                error[n] = e[0] + e[1] + 2 * u * (largest[inputs[0]] + largest[inputs[1]])
            elif n.target == "mean":
                count = int(torch.tensor(self.env[inputs[0]].shape[2:]).prod())
                error[n] = e[0] + gamma(count, torch.float32) * largest[inputs[0]]
            elif n.op == "output":
                error[n] = e[0]
            else:
                raise AssertionError(f"no error rule for {n.format_node()}")
            return out

    with torch.no_grad():
        _Bound(module).run(x)
    return error[next(n for n in module.graph.nodes if n.op == "output")]
