"""Post-training int8 quantization with our own calibrators, written as a QDQ ONNX graph (handbook §37).

Quantization (``q = saturate(round_half_even(x / s) + z)``, ``x̂ = (q − z)·s``, ONNX ``QuantizeLinear``):

* **activations**: per tensor, asymmetric ``uint8`` (``activations="uint8"``, the default: ONNX Runtime's
  fast CPU kernels): for a calibrated range ``[lo, hi]`` (widened to contain 0, so 0 is exact: zero padding
  and ReLU's zeros), ``s = (hi − lo) / 255``, ``z = round(−lo / s)``; or per tensor, symmetric ``int8``
  (``activations="int8"``: TensorRT's explicit quantization, which takes only zero point 0):
  ``s = max(|lo|, |hi|) / 127``, ``z = 0``, codes saturated to ``[−128, 127]`` (ONNX ``QuantizeLinear``
  into ``int8``, and TensorRT's ``clamp(round(x / s), −128, 127)``). The symmetric grid spends half its
  codes on negative values: on a non-negative (post-ReLU) tensor its step is ``hi / 127`` against
  ``hi / 255``, so each value's rounding error ``≤ s / 2`` is about twice the ``uint8`` one;
* **weights**: per output channel, symmetric ``int8`` in ``[−127, 127]``: ``s_c = max|W_c| / 127``, ``z = 0``;
  biases, with ``uint8`` activations, ``int32`` with ``s = s_x·s_c`` (what an integer kernel accumulates
  in); with ``int8`` activations they stay float (TensorRT dequantizes only 8-bit (and smaller) integer
  tensors, and folds a float bias into its int8 convolution itself).

Calibrators (observers) of a tensor's range, from the calibration images:

* ``minmax``: the smallest and largest value seen;
* ``percentile`` (99.9 or 99.99): the ``p``-th and ``(100 − p)``-th percentiles of the values, from a 2048-bin
  histogram over ``[min, max]`` (each within one bin width of the exact percentile);
* ``entropy``: TensorRT's legacy entropy calibrator (Migacz, GTC 2017), with the number of levels and the
  zero bin following the quantizer we use: a 2048-bin histogram of the **non-zero** ``|x|`` over
  ``[0, max|x|]``; ``L`` levels, ``L = 256`` for a non-negative tensor (asymmetric ``uint8`` over ``[0, t]``
  has 256 codes there) and ``L = 128`` for a signed one (the range ``[−t, t]``: 128 codes on each side); for
  each candidate ``i`` from ``L`` to 2047 the reference ``P`` is bins ``0..i−1`` with the outliers (bins
  ``i..``) added to bin ``i − 1``, the candidate ``Q`` is bins ``0..i−1`` merged into ``L`` levels
  (``i // L`` bins per level, the last level takes the rest) and expanded back, each level's count spread
  evenly over the bins of the level where ``P`` is non-zero (MXNet's / TVM's ``_get_optimal_threshold``);
  the ``i`` with the least ``KL(P‖Q)`` (both normalized; a candidate with ``Q = 0`` where ``P > 0`` has
  ``KL = ∞``) gives the threshold ``t = (i + 0.5)·width``, and the range ``[max(min, −t), min(max, t)]``.
  Why the exact zeros are left out: the zero point is an integer, so ``0`` is quantized exactly — the ReLU
  zeros lose nothing — but in the histogram they are a spike in bin 0 which the level merging smears over
  the ``i // L`` bins of level 0, a divergence that grows with ``i`` and with the tensor's sparsity alone;
  kept, it pulled every post-ReLU threshold of the digits classifier to a quarter of its range (10.3 → 2.6)
  and cost 5.6 points of accuracy (benchmarks/RESULTS.md, Deployment, "Entropy: the cause"). With 128
  levels on a non-negative tensor the search also clips twice as hard as the ``uint8`` grid requires.
  (ONNX Runtime's own entropy calibrator defaults to 128 bins over ``[−max|x|, max|x|]``.)

The graph: the float model is fused (:func:`visionkit.deploy.fuse.fuse_model`) and exported
(:mod:`visionkit.deploy.onnx`); every activation tensor read or written by a Conv / Gemm / MatMul / Add /
Concat / pooling node, except the graph's outputs (logits and raw head outputs stay float), gets a
``QuantizeLinear → DequantizeLinear`` pair with our scale and zero point; the weights of Conv / Gemm are
stored as ``int8`` behind a per-channel ``DequantizeLinear``; a ReLU (or ReLU6: a ``Clip`` at 0) right
after such a node is dropped, its output range (``lo = 0``, so ``z = 0``) given to the node's output —
the quantizer's saturation at ``q = 0`` is the ReLU (``uint8`` only: the symmetric ``int8`` grid has
negative codes, so there the ReLU stays and its output, not its input, is quantized). ONNX Runtime fuses
these patterns into its integer kernels (``QLinearConv``, ``QLinearAdd``, ...), TensorRT into its int8
convolutions. Box decoding and NMS of detectors stay in float (outside the graph).

Example:
    >>> import torch
    >>> observer = MinMaxObserver()
    >>> observer.observe(torch.tensor([-1.0, 3.0]))
    >>> activation_qparams(*observer.range())
    (0.01568627450980392, 64)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from visionkit.errors import ExportError, NotFittedError

__all__ = [
    "ACTIVATIONS",
    "CALIBRATORS",
    "EntropyObserver",
    "MinMaxObserver",
    "PercentileObserver",
    "activation_qparams",
    "calibrate_onnx",
    "entropy_threshold",
    "make_observer",
    "quantize_onnx",
    "quantized_tensors",
    "weight_qparams",
]

BINS = 2048
CALIBRATORS = ("minmax", "percentile", "entropy")
#: activation quantizers: asymmetric uint8 (ONNX Runtime) or symmetric int8 with zero point 0 (TensorRT)
ACTIVATIONS = ("uint8", "int8")
#: ``activations → (q_min, q_max)`` of the activation codes
ACTIVATION_CODES = {"uint8": (0, 255), "int8": (-128, 127)}
QUANTIZED_OPS = {"Conv", "Gemm", "MatMul", "Add", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool"}
WEIGHTED_OPS = {"Conv", "Gemm"}


# ----------------------------------------------------------------------------------------- observers
class MinMaxObserver:
    """The smallest and largest value seen (one pass)."""

    passes = 1

    def __init__(self) -> None:
        self.low, self.high, self.count = math.inf, -math.inf, 0

    def observe(self, x: Tensor, pass_index: int = 0) -> None:
        """Record a tensor (any shape) in pass ``pass_index`` (``0`` for the range)."""
        if pass_index == 0 and x.numel():
            self.low, self.high = min(self.low, float(x.min())), max(self.high, float(x.max()))
            self.count += x.numel()

    def range(self) -> tuple[float, float]:
        """``(lo, hi)`` of the calibrated range. Raises NotFittedError before any data."""
        if self.count == 0:
            raise NotFittedError("observer: no calibration data seen")
        return self.low, self.high


class PercentileObserver(MinMaxObserver):
    """``p``-th / ``(100 − p)``-th percentiles from a 2048-bin histogram over ``[min, max]`` (two passes)."""

    passes = 2

    def __init__(self, percentile: float = 99.99) -> None:
        super().__init__()
        if not 50 < percentile <= 100:
            raise ValueError(f"percentile must lie in (50, 100], got {percentile}")
        self.percentile, self.histogram = percentile, np.zeros(BINS, dtype=np.float64)

    def observe(self, x: Tensor, pass_index: int = 0) -> None:
        if pass_index == 0:
            super().observe(x)
        elif x.numel() and self.high > self.low:
            counts = torch.histc(x.double().flatten(), BINS, self.low, self.high)
            self.histogram += counts.numpy()

    def range(self) -> tuple[float, float]:
        low, high = super().range()
        if high <= low or self.histogram.sum() == 0:
            return low, high
        width = (high - low) / BINS
        cumulative = np.cumsum(self.histogram) / self.histogram.sum()
        upper = int(np.searchsorted(cumulative, self.percentile / 100))  # first bin reaching p
        lower = int(np.searchsorted(cumulative, 1 - self.percentile / 100))
        return low + lower * width, low + (min(upper, BINS - 1) + 1) * width


class EntropyObserver(MinMaxObserver):
    """TensorRT's entropy (KL) calibration (module docstring): 2048-bin histogram of the non-zero ``|x|``,
    ``256`` levels for a non-negative tensor and ``128`` for a signed one; two passes.

    Example:
        >>> observer = EntropyObserver()
        >>> data = torch.relu(torch.linspace(-1.0, 1.0, 4001))  # half exact zeros, then uniform on (0, 1]
        >>> for pass_index in range(observer.passes):
        ...     observer.observe(data, pass_index)
        >>> observer.levels, observer.range()  # uniform: the last candidate, t = 2047.5 / 2048 (no clipping)
        (256, (0.0, 0.999755859375))
    """

    passes = 2

    def __init__(self) -> None:
        super().__init__()
        self.histogram = np.zeros(BINS, dtype=np.float64)

    def observe(self, x: Tensor, pass_index: int = 0) -> None:
        if pass_index == 0:
            super().observe(x)
        elif x.numel() and self.largest > 0:
            magnitude = x.double().abs().flatten()
            magnitude = magnitude[magnitude != 0]  # exact zeros are quantized exactly (module docstring)
            self.histogram += torch.histc(magnitude, BINS, 0, self.largest).numpy()

    @property
    def largest(self) -> float:
        return max(abs(self.low), abs(self.high))

    @property
    def levels(self) -> int:
        """Codes of the quantizer over ``[0, t]``: 256 (``uint8`` on ``[0, t]``) or 128 (on ``[−t, t]``)."""
        return 256 if self.low >= 0 else 128

    def range(self) -> tuple[float, float]:
        low, high = super().range()
        if self.largest == 0 or self.histogram.sum() == 0:
            return low, high
        threshold, _ = entropy_threshold(
            self.histogram, self.largest / BINS, start=self.levels, levels=self.levels
        )
        return max(low, -threshold), min(high, threshold)


def entropy_threshold(
    histogram: np.ndarray, width: float, start: int = 128, levels: int = 128
) -> tuple[float, int]:
    """TensorRT's KL search (module docstring) over a histogram of ``|x|`` with bins of ``width``:
    candidates ``i = start .. len(histogram) − 1`` (``start >= levels``), ``levels`` quantized levels.

    Returns:
        ``(threshold, i)``: ``threshold = (i + 0.5)·width`` for the candidate ``i`` with the least
        ``KL(P‖Q)`` (the first one on ties; the last candidate when every one is infinite).

    Example:
        >>> histogram = np.ones(2048)  # a uniform density: no clipping beats keeping it all
        >>> entropy_threshold(histogram, 1.0)
        (2047.5, 2047)
    """
    histogram = np.asarray(histogram, dtype=np.float64)
    if start < levels:
        raise ValueError(f"entropy_threshold: start={start} < levels={levels} (a level needs a bin)")
    best, best_index = math.inf, len(histogram) - 1
    for i in range(start, len(histogram)):
        divergence = _kl_of_candidate(histogram, i, levels)
        if divergence < best:
            best, best_index = divergence, i
    return (best_index + 0.5) * width, best_index


def _kl_of_candidate(histogram: np.ndarray, i: int, levels: int) -> float:
    reference = histogram[:i].copy()
    reference[i - 1] += histogram[i:].sum()
    source = histogram[:i]
    support = reference != 0  # Q is spread over the bins where P is non-zero
    level = np.minimum(np.arange(i) // (i // levels), levels - 1)
    totals = np.bincount(level, weights=source, minlength=levels)
    counts = np.bincount(level, weights=support, minlength=levels)
    candidate = np.where(support, totals[level] / np.maximum(counts[level], 1), 0.0)
    if reference.sum() == 0 or candidate.sum() == 0:
        return math.inf
    p, q = reference / reference.sum(), candidate / candidate.sum()
    if np.any(q[support] == 0):
        return math.inf
    return float(np.sum(p[support] * np.log(p[support] / q[support])))


def make_observer(calibrator: str, percentile: float = 99.99) -> MinMaxObserver:
    """An observer by name: ``minmax``, ``percentile`` or ``entropy``."""
    if calibrator == "minmax":
        return MinMaxObserver()
    if calibrator == "percentile":
        return PercentileObserver(percentile)
    if calibrator == "entropy":
        return EntropyObserver()
    raise ValueError(f"calibrator must be one of {list(CALIBRATORS)}, got {calibrator!r}")


# ----------------------------------------------------------------------------------------- parameters
def activation_qparams(low: float, high: float, activations: str = "uint8") -> tuple[float, int]:
    """Per-tensor ``(scale, zero_point)`` of a range (module docstring): asymmetric ``uint8``
    (``activations="uint8"``) or symmetric ``int8`` with zero point 0 (``activations="int8"``).

    Example:
        >>> scale, zero_point = activation_qparams(0.0, 2.55)  # 2.55 / 255 in float64
        >>> round(scale, 12), zero_point
        (0.01, 0)
        >>> scale, zero_point = activation_qparams(-2.54, 1.0, "int8")  # max(|lo|, |hi|) / 127
        >>> round(scale, 12), zero_point
        (0.02, 0)
    """
    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {list(ACTIVATIONS)}, got {activations!r}")
    low, high = min(low, 0.0), max(high, 0.0)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ExportError(f"activation range [{low}, {high}] is not finite: cannot quantize it")
    if high == low:
        return 1.0, 0
    if activations == "int8":
        return max(-low, high) / 127, 0
    scale = (high - low) / 255
    return scale, int(min(255, max(0, round(-low / scale))))


def weight_qparams(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per-output-channel symmetric int8 ``(q int8 [same shape], scale float32 [C_out])`` (dimension 0).

    Example:
        >>> q, s = weight_qparams(torch.tensor([[0.5, -1.27], [2.54, 0.0]]))
        >>> q.tolist(), [round(v, 6) for v in s.tolist()]
        ([[50, -127], [127, 0]], [0.01, 0.02])
    """
    flat = weight.detach().double().reshape(weight.shape[0], -1)
    scale = flat.abs().amax(1) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).float()
    q = torch.round(flat / scale.double()[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(weight.shape), scale


# ----------------------------------------------------------------------------------------- calibration
def _activation_tensors(model: Any) -> list[str]:
    """Names of the activation tensors to quantize (module docstring), in graph order."""
    import onnx

    initializers = {i.name for i in model.graph.initializer}
    initializers |= {o.name for o in model.graph.output}  # the model's outputs stay float (logits, boxes)
    inferred = onnx.shape_inference.infer_shapes(model).graph
    floats = {
        value.name
        for value in [*inferred.value_info, *inferred.input, *inferred.output]
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    }  # only float tensors: shape arithmetic (int64 Concat of sizes) stays as it is
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type in QUANTIZED_OPS:
            inputs = node.input[:1] if node.op_type in WEIGHTED_OPS else node.input
            for name in [*inputs, *node.output]:
                if name and name in floats and name not in initializers and name not in names:
                    names.append(name)
    return names


def quantized_tensors(model: Any, activations: str = "uint8") -> list[str]:
    """Names of the activation tensors the QDQ graph of the float ONNX ``model`` quantizes, in graph order:
    with ``uint8`` those of the graph with its ReLUs dropped (the ReLUs' inputs stand for their outputs);
    with ``int8`` those of the graph as it is, less the inputs of the dropped-in-``uint8`` ReLUs (the ReLU
    stays; the tensor it writes is quantized where a quantized node reads it). Modifies nothing."""
    import copy

    if activations == "uint8":
        dropped = copy.deepcopy(model)
        _drop_relus(dropped)
        return _activation_tensors(dropped)
    before_relu = set(_relu_outputs(model))
    return [name for name in _activation_tensors(model) if name not in before_relu]


def calibrate_onnx(
    path: str | Path,
    batches: Iterable[tuple[Tensor, ...]],
    calibrator: str = "entropy",
    percentile: float = 99.99,
) -> dict[str, tuple[float, float]]:
    """Calibrated ranges of the activation tensors of the float graph ``path``, run by ONNX Runtime on
    ``batches`` (tuples of the graph's inputs; iterated once per observer pass, so pass a list).

    Returns:
        ``tensor name → (lo, hi)``; the ranges of the tensors a dropped ReLU would have produced are those of
        the ReLU's output (see :func:`quantize_onnx`).
    """
    import onnx
    import onnxruntime as ort

    batches = list(batches)
    if not batches:
        raise ExportError("calibration needs at least one batch of images")
    model = onnx.load(str(path))
    names = _activation_tensors(model)
    relu_of = _relu_outputs(model)
    watched = sorted(set(names) | set(relu_of.values()))
    existing = {o.name for o in model.graph.output}
    for name in watched:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.graph_optimization_level = (
        1,
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    )
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    observers = {name: make_observer(calibrator, percentile) for name in watched}
    for pass_index in range(observers[watched[0]].passes if watched else 0):
        for batch in batches:
            feed = {n: t.detach().float().contiguous().numpy() for n, t in zip(inputs, batch, strict=True)}
            for name, value in zip(outputs, session.run(outputs, feed), strict=True):
                if name in observers:
                    observers[name].observe(torch.from_numpy(np.asarray(value, dtype=np.float32)), pass_index)
    ranges = {name: observer.range() for name, observer in observers.items()}
    for produced, relu_output in relu_of.items():
        ranges[produced] = ranges[relu_output]
    return ranges


def _relu_outputs(model: Any) -> dict[str, str]:
    """``tensor → the output of the ReLU that is its only consumer`` for outputs of quantized nodes."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in model.graph.output}
    from onnx import numpy_helper

    zeros = {i.name for i in model.graph.initializer if list(i.dims) in ([], [1])}
    zeros = {
        i.name
        for i in model.graph.initializer
        if i.name in zeros and numpy_helper.to_array(i).ravel()[0] == 0
    }
    found = {}
    for node in model.graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        for name in node.output:
            users = consumers.get(name, [])
            if len(users) == 1 and _is_relu(users[0], zeros) and name not in graph_outputs:
                found[name] = users[0].output[0]
    return found


def _is_relu(node: Any, zeros: set[str]) -> bool:
    """A ``Relu``, or a ``Clip`` whose lower bound is 0 (ReLU6): both are dropped into the next quantizer,
    which saturates at ``q = 0`` (the value 0) and at the calibrated ``hi`` of the clipped output (≤ its
    upper bound), so quantizing the unclipped tensor with the clipped tensor's range gives the same codes."""
    if node.op_type == "Relu":
        return True
    return node.op_type == "Clip" and len(node.input) > 1 and node.input[1] in zeros


# ----------------------------------------------------------------------------------------- the QDQ graph
def quantize_onnx(
    path: str | Path,
    ranges: dict[str, tuple[float, float]] | None,
    out: str | Path,
    activations: str = "uint8",
) -> Path:
    """Write the QDQ int8 version of the float graph ``path`` to ``out`` (module docstring) with the
    calibrated activation ``ranges`` of :func:`calibrate_onnx`; ``activations``: ``"uint8"`` (asymmetric,
    ONNX Runtime) or ``"int8"`` (symmetric, zero point 0, float biases: TensorRT's explicit quantization).

    Raises:
        ExportError: ``ranges`` is ``None`` or lacks a tensor (an uncalibrated model is never exported).
    """
    import onnx
    from onnx import helper, numpy_helper

    if activations not in ACTIVATIONS:
        raise ValueError(f"activations must be one of {list(ACTIVATIONS)}, got {activations!r}")
    if not ranges:
        raise ExportError(
            "refusing to export an uncalibrated int8 model: calibrate it first (calib_images=...)"
        )
    model = onnx.load(str(path))
    graph = model.graph
    tensors = quantized_tensors(model, activations)
    if activations == "uint8":
        _drop_relus(model)
    missing = [name for name in tensors if name not in ranges]
    if missing:
        raise ExportError(
            f"refusing to export: no calibrated range for {len(missing)} tensors ({missing[:3]} ...)"
        )
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {i.name: i for i in graph.initializer}
    scales: dict[str, float] = {}
    new_nodes: list[Any] = []
    for name in tensors:
        scale, zero = activation_qparams(*ranges[name], activations)
        scales[name] = float(np.float32(scale))
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(scale, dtype=np.float32), f"{name}__scale"),
                numpy_helper.from_array(np.array(zero, dtype=activations), f"{name}__zero_point"),
            ]
        )
        qparams = [f"{name}__scale", f"{name}__zero_point"]
        new_nodes += [
            helper.make_node("QuantizeLinear", [name, *qparams], [f"{name}__q"]),
            helper.make_node("DequantizeLinear", [f"{name}__q", *qparams], [f"{name}__dq"]),
        ]
        for node in consumers.get(name, []):
            for k, value in enumerate(node.input):
                if value == name:
                    node.input[k] = f"{name}__dq"
    done: set[str] = set()
    for node in graph.node:
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in initializers:
            nodes, weights = _quantize_weights(node, initializers, scales, done, activations == "uint8")
            new_nodes += nodes
            graph.initializer.extend(weights)
    _insert_topologically(graph, new_nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]  # the float weights are replaced
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def _drop_relus(model: Any) -> None:
    """Remove each ReLU that is the only consumer of a quantized node's output (module docstring)."""
    for produced, relu_output in _relu_outputs(model).items():
        relu = next(n for n in model.graph.node if n.op_type in ("Relu", "Clip") and n.input[0] == produced)
        producer = next(n for n in model.graph.node if produced in n.output)
        producer.output[list(producer.output).index(produced)] = relu_output
        model.graph.node.remove(relu)


def _quantize_weights(
    node: Any, initializers: dict[str, Any], scales: dict[str, float], done: set[str], int32_bias: bool = True
) -> tuple[list[Any], list[Any]]:
    """int8 per-channel weights (and, with ``int32_bias``, int32 bias; else the float bias is kept) of a
    Conv / Gemm behind DequantizeLinear nodes. A weight shared by several nodes (a head applied to every
    pyramid level) is stored once (``done``: the weights already stored); each node gets its own bias,
    whose scale depends on that node's input scale."""
    from onnx import helper, numpy_helper

    weight_init = initializers[node.input[1]]
    weight = torch.from_numpy(numpy_helper.to_array(weight_init).copy())
    transposed = node.op_type == "Gemm" and not any(a.name == "transB" and a.i == 1 for a in node.attribute)
    q, scale = weight_qparams(weight.T if transposed else weight)
    q = q.T if transposed else q
    name = node.input[1]
    axis = 1 if transposed else 0
    graph_inits, nodes = [], []
    if name not in done:
        done.add(name)
        graph_inits += [
            numpy_helper.from_array(q.contiguous().numpy(), f"{name}__int8"),
            numpy_helper.from_array(scale.numpy(), f"{name}__scale"),
            numpy_helper.from_array(np.zeros(len(scale), dtype=np.int8), f"{name}__zero_point"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}__int8", f"{name}__scale",
                                      f"{name}__zero_point"], [f"{name}__dq"], axis=axis))  # fmt: skip
    node.input[1] = f"{name}__dq"
    x_name = node.input[0][: -len("__dq")] if node.input[0].endswith("__dq") else None
    if int32_bias and len(node.input) > 2 and node.input[2] in initializers and x_name in scales:
        bias_name = f"{node.input[2]}__for_{x_name}"
        bias_init = initializers[node.input[2]]
        bias = numpy_helper.to_array(bias_init).astype(np.float64)
        bias_scale = (np.float64(scales[x_name]) * scale.double().numpy()).astype(np.float32)
        bias_q = np.clip(np.round(bias / bias_scale.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
        graph_inits += [
            numpy_helper.from_array(bias_q, f"{bias_name}__int32"),
            numpy_helper.from_array(bias_scale, f"{bias_name}__scale"),
            numpy_helper.from_array(np.zeros(len(bias_q), dtype=np.int32), f"{bias_name}__zero_point"),
        ]
        nodes.append(helper.make_node("DequantizeLinear", [f"{bias_name}__int32", f"{bias_name}__scale",
                                      f"{bias_name}__zero_point"], [f"{bias_name}__dq"], axis=0))  # fmt: skip
        node.input[2] = f"{bias_name}__dq"
    return nodes, graph_inits


def _insert_topologically(graph: Any, new_nodes: list[Any]) -> None:
    """Add ``new_nodes`` and sort the graph's nodes so that producers come first."""
    nodes = list(graph.node) + new_nodes
    available = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {""}
    ordered, pending = [], nodes
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:
            raise ExportError("quantize: the graph has a cycle or an input without producer")
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)
