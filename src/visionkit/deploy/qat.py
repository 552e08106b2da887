"""Quantization-aware training (handbook §37): fake quantization with the straight-through estimator on a
BN-folded classifier, fine-tuned by the classify engine, exported as the same QDQ ONNX graph as
post-training quantization (:mod:`visionkit.deploy.quantize`) carrying the QAT scales.

The fake-quantized ("QAT") model mirrors the int8 graph tensor for tensor:

* the model is fused first (:func:`visionkit.deploy.fuse.fuse_model`: batch norms folded into the
  convolutions, ReLUs joined), exported in float and calibrated by our observers
  (:func:`~visionkit.deploy.quantize.calibrate_onnx`); every activation tensor the QDQ graph quantizes is
  found in the eager model (the fx node whose value equals it on a probe batch) and gets a
  :class:`FakeQuantize` with the same per-tensor ``(scale, zero_point)``: asymmetric ``uint8`` or, with
  ``activations="int8"`` (the TensorRT graph), symmetric ``int8`` with zero point 0. The scales
  are **kept**: calibrated once before fine-tuning and frozen (the weights learn to live with them; no
  learned step sizes), so the exported graph carries exactly the scales the model was trained with;
* every ``Conv2d`` / ``Linear`` computes with per-output-channel symmetric ``int8`` fake-quantized weights
  (:func:`~visionkit.deploy.quantize.weight_qparams` of the current weights, recomputed each step) and
  its bias rounded to the ``int32`` grid of scale ``s_x·s_w`` (what the graph stores; with ``int8``
  activations the graph keeps the float bias, and so does the layer);
* forward: ``x̂ = (clamp(round_half_even(x / s) + z, q_min, q_max) − z)·s`` — exactly ONNX
  ``QuantizeLinear → DequantizeLinear``; backward (straight-through estimator): the incoming gradient
  where ``q_min <= round(x / s) + z <= q_max`` and 0 where the value was clipped; weights and biases pass
  the gradient unchanged (their scales come from their own maxima: nothing is clipped).

Fine-tuning: :func:`finetune_qat` runs :func:`visionkit.engine.classify.train_classifier` (the classify
task's one training loop) with ``wrap_student``: the student it builds receives the trained weights, is
fused in place and wrapped by the fake-quantized graph, which shares its parameters; the engine trains and
evaluates the wrapper. Export: :func:`export_qat` writes the fine-tuned fused float model to ONNX and
quantizes it with the kept ranges.

Example:
    >>> x = torch.tensor([-0.3, 0.24, 0.26, 3.0], requires_grad=True)
    >>> y = fake_quantize(x, 0.1, 3, 0, 255)  # codes round(x / 0.1) + 3: 0, 5, 6, 33
    >>> [round(v, 4) for v in y.tolist()]
    [-0.3, 0.2, 0.3, 3.0]
    >>> y.sum().backward()
    >>> x.grad.tolist()  # -0.3 / 0.1 + 3 = 0: inside the range, every gradient passes
    [1.0, 1.0, 1.0, 1.0]
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, fx, nn

from visionkit.deploy.quantize import (
    ACTIVATION_CODES,
    activation_qparams,
    quantize_onnx,
    quantized_tensors,
    weight_qparams,
)
from visionkit.errors import ExportError

__all__ = ["FakeQuantize", "QATLayer", "export_qat", "fake_quantize", "finetune_qat", "prepare_qat"]


class _FakeQuantizeSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float, zero: int, qmin: int, qmax: int) -> Tensor:
        code = torch.round(x / scale) + zero  # torch.round rounds half to even, as QuantizeLinear
        ctx.save_for_backward((code >= qmin) & (code <= qmax))
        return (code.clamp(qmin, qmax) - zero) * scale

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


def fake_quantize(x: Tensor, scale: float, zero_point: int, qmin: int, qmax: int) -> Tensor:
    """``(clamp(round_half_even(x / scale) + zero_point, qmin, qmax) − zero_point)·scale`` (any shape, the
    dtype of ``x``), with the straight-through gradient (module docstring)."""
    return _FakeQuantizeSTE.apply(x, scale, zero_point, qmin, qmax)


class FakeQuantize(nn.Module):
    """Per-tensor fake quantization with a fixed ``(scale, zero_point)``
    (:func:`~visionkit.deploy.quantize.activation_qparams` of a calibrated range ``[lo, hi]``; the scale
    rounded to float32 as the graph stores it): asymmetric ``uint8`` codes ``[0, 255]`` or, with
    ``activations="int8"``, symmetric ``int8`` codes ``[−128, 127]`` and zero point 0. Shape: any → the
    same.

    Example:
        >>> FakeQuantize(0.0, 2.55)(torch.tensor([-1.0, 0.014, 9.0])).tolist()
        [0.0, 0.009999999776482582, 2.549999952316284]
        >>> FakeQuantize(0.0, 1.27, activations="int8")(torch.tensor([-1.0, 0.014, 9.0])).tolist()
        [-1.0, 0.009999999776482582, 1.2699999809265137]
    """

    def __init__(self, low: float, high: float, name: str = "", activations: str = "uint8") -> None:
        super().__init__()
        scale, zero = activation_qparams(low, high, activations)
        self.scale, self.zero_point, self.tensor = float(np.float32(scale)), zero, name
        self.qmin, self.qmax = ACTIVATION_CODES[activations]

    def forward(self, x: Tensor) -> Tensor:
        return fake_quantize(x, self.scale, self.zero_point, self.qmin, self.qmax)

    def extra_repr(self) -> str:
        return f"{self.tensor!r}, scale={self.scale:.6g}, zero_point={self.zero_point}"


class QATLayer(nn.Module):
    """A ``Conv2d`` or ``Linear`` (``layer``, whose parameters it trains) computing with per-channel
    symmetric ``int8`` fake-quantized weights and its bias on the ``int32`` grid of ``input_scale·s_w``
    (module docstring; ``int32_bias=False``: the float bias, as the ``int8``-activation graph keeps it).
    Shapes: those of ``layer``."""

    def __init__(self, layer: nn.Module, input_scale: float, int32_bias: bool = True) -> None:
        super().__init__()
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise ExportError(f"QAT: {type(layer).__name__} has no fake-quantized version (Conv2d, Linear)")
        self.layer, self.input_scale, self.int32_bias = layer, input_scale, int32_bias

    def quantized_parameters(self) -> tuple[Tensor, Tensor | None]:
        """``(ŵ, b̂)``: the dequantized int8 weight and int32 bias, with identity gradients."""
        weight, bias = self.layer.weight, self.layer.bias
        q, scale = weight_qparams(weight)
        shape = (-1,) + (1,) * (weight.dim() - 1)
        w_hat = weight + (q.float() * scale.reshape(shape) - weight).detach()
        if bias is None or not self.int32_bias:
            return w_hat, bias
        bias_scale = (np.float64(self.input_scale) * scale.double()).float()  # as the graph's bias scale
        code = torch.round(bias.detach().double() / bias_scale.double()).clamp(-(2**31), 2**31 - 1)
        b_hat = bias + (code.float() * bias_scale - bias).detach()
        return w_hat, b_hat

    def forward(self, x: Tensor) -> Tensor:
        w_hat, b_hat = self.quantized_parameters()
        if isinstance(self.layer, nn.Linear):
            return nn.functional.linear(x, w_hat, b_hat)
        return self.layer._conv_forward(x, w_hat, b_hat)


class _Tracer(fx.Tracer):
    """Traces into visionkit's containers; modules whose forward fx cannot trace (an input adapter that
    branches on the image size) stay leaves, as do torch's own layers."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return type(m).__name__ == "_ToModelInput" or super().is_leaf_module(m, module_qualified_name)


def _graph_values(
    float_graph: Path, probe: Tensor, activations: str = "uint8"
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Names of the tensors the QDQ graph quantizes (in graph order) and their float values on ``probe``."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(float_graph))
    names = quantized_tensors(model, activations)
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: probe.detach().float().contiguous().numpy()}
    outputs = [o.name for o in session.get_outputs()]
    values = dict(zip(outputs, session.run(outputs, feed), strict=True))
    return names, {name: values[name] for name in names}


def prepare_qat(
    fused: nn.Module,
    float_graph: str | Path,
    ranges: dict[str, tuple[float, float]],
    probe: Tensor,
    activations: str = "uint8",
) -> fx.GraphModule:
    """The fake-quantized version of the fused model ``fused`` (module docstring), sharing its parameters.

    Args:
        fused: a fused classifier (:func:`~visionkit.deploy.fuse.fuse_model`), images ``[N, C, H, W]`` →
            logits ``[N, K]``.
        float_graph: its float ONNX graph (:func:`visionkit.deploy.onnx.export_onnx`).
        ranges: the calibrated ranges of that graph (:func:`~visionkit.deploy.quantize.calibrate_onnx`).
        probe: ``[B, C, H, W]`` images used to find each quantized tensor in the eager model.
        activations: ``"uint8"`` or ``"int8"``, as the graph is quantized
            (:func:`~visionkit.deploy.quantize.quantize_onnx`).

    Raises:
        ExportError: a quantized tensor of the graph has no equal in the eager model, or a quantized
            Conv / Gemm reads a tensor that is not quantized (names them).
    """
    names, values = _graph_values(Path(float_graph), probe, activations)
    graph = _Tracer().trace(fused)
    module = fx.GraphModule(fused, graph)
    seen: dict[fx.Node, Tensor] = {}

    class _Record(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            out = super().run_node(n)
            if isinstance(out, Tensor):
                seen[n] = out.detach()
            return out

    was_training = fused.training
    module.eval()
    with torch.no_grad():
        _Record(module).run(probe.float())
    module.train(was_training)
    quantizers: dict[fx.Node, FakeQuantize] = {}
    for name in names:
        target = torch.from_numpy(np.asarray(values[name], dtype=np.float32))
        bound = 1e-4 * (1 + float(target.abs().max())) if target.numel() else 0.0
        equal = [
            node
            for node, value in seen.items()
            if value.shape == target.shape and float((value.float() - target).abs().max()) <= bound
        ]
        match = equal[-1] if equal else None  # the last of a chain of identities (an input adapter) is read
        if match is None:
            raise ExportError(
                f"QAT: the graph's tensor {name!r} {tuple(target.shape)} has no equal in the model"
            )
        quantizers.setdefault(match, FakeQuantize(*ranges[name], name=name, activations=activations))
    for index, (node, quantizer) in enumerate(quantizers.items()):
        module.add_module(f"fake_quant_{index}", quantizer)
        with graph.inserting_after(node):
            new = graph.call_module(f"fake_quant_{index}", (node,))
        node.replace_all_uses_with(new, delete_user_cb=lambda user, new=new: user is not new)
    scale_of = {f"fake_quant_{i}": q.scale for i, q in enumerate(quantizers.values())}
    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        layer = module.get_submodule(node.target)
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        source = node.args[0]
        if not (isinstance(source, fx.Node) and source.op == "call_module" and source.target in scale_of):
            raise ExportError(f"QAT: the input of {node.target} is not quantized in the int8 graph")
        module.set_submodule(node.target, QATLayer(layer, scale_of[source.target], activations == "uint8"))
    graph.lint()
    module.recompile()
    return module


class _QATClassifier(nn.Module):
    """What the engine trains: the fake-quantized graph; ``model`` (the fused student) is held so that the
    engine finds the student among its submodules — both share the same parameters."""

    def __init__(self, model: nn.Module, qat: fx.GraphModule) -> None:
        super().__init__()
        self.model, self.qat = model, qat

    def forward(self, images: Tensor) -> Tensor:
        return self.qat(images)


def finetune_qat(
    trained: nn.Module,
    recipe: Any,
    float_graph: str | Path,
    ranges: dict[str, tuple[float, float]],
    probe: Tensor,
    run_dir: str | Path,
    epochs: int,
    lr: float,
    activations: str = "uint8",
) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune the trained classifier ``trained`` (a :func:`~visionkit.engine.classify.build_model`, not
    fused) with fake quantization for ``epochs`` epochs at learning rate ``lr`` through
    :func:`~visionkit.engine.classify.train_classifier` (its ``recipe`` otherwise; no warm-up, no early
    stopping, no EMA, no teacher), ``float_graph`` / ``ranges`` / ``probe`` / ``activations`` as in
    :func:`prepare_qat`.

    Returns:
        ``(fused, metrics)``: the fine-tuned fused float model (its weights are the QAT weights) and the
        engine's metrics (``test_accuracy`` is the fake-quantized model's). ``run_dir`` holds the
        fine-tuning's log, curves and checkpoints; its engine-written ``model.pt`` (a fused state dict that
        :func:`~visionkit.engine.classify.load_classifier` cannot rebuild) is removed.
    """
    from visionkit.deploy.fuse import fuse_model
    from visionkit.engine.classify import train_classifier

    state = trained.state_dict()
    made: list[nn.Module] = []

    def wrap(student: nn.Module, device: torch.device) -> tuple[nn.Module, Any]:
        student.load_state_dict(state)
        fused = fuse_model(student, inplace=True)
        if fused is not student:
            raise ExportError(
                "QAT: the model's root was rewritten by the fusion; cannot fine-tune it in place"
            )
        made.append(student)
        qat = prepare_qat(student, float_graph, ranges, probe, activations)
        return _QATClassifier(student, qat).to(device), nn.functional.cross_entropy

    finetune = dataclasses.replace(
        recipe, epochs=epochs, lr=lr, warmup_epochs=0, early_stopping_patience=None, ema_decay=None,
        teacher="", hint="", progress=False,
    )  # fmt: skip
    metrics = train_classifier(finetune, run_dir, wrap_student=wrap)
    (Path(run_dir) / "model.pt").unlink(missing_ok=True)
    return made[-1].eval(), metrics


def export_qat(
    fused: nn.Module,
    ranges: dict[str, tuple[float, float]],
    out: str | Path,
    size: int,
    activations: str = "uint8",
) -> Path:
    """The QDQ int8 graph of the fine-tuned fused model with the kept QAT ``ranges``, written to ``out``
    (an ``.onnx`` path); ``size``: the example image size of the export; ``activations`` as trained.

    Raises:
        ExportError: the re-exported graph lacks a tensor of ``ranges`` (it must be the same graph).
    """
    from visionkit.deploy.onnx import export_onnx

    with tempfile.TemporaryDirectory() as scratch:
        graph = export_onnx(fused.eval(), Path(scratch) / "float", example_size=(size, size))["model"]
        return quantize_onnx(graph, ranges, out, activations)
