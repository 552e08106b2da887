"""Choosing the int8 convolution kernels by measurement (handbook §37, TensorRT's kernel auto-tuning).

TensorRT builds an engine by timing several implementations ("tactics") of each layer on the target GPU and
keeping the fastest. This module does the same for our int8 graphs in ONNX Runtime on CPU.

**The two kernels.** ONNX Runtime's ``QLinearConv`` (what its optimizer turns our
``DequantizeLinear → Conv → QuantizeLinear`` pattern into) has two integer paths in its MLAS library:

* a weight zero point of ``0`` (our symmetric int8 weights) selects MLAS's *symmetric* indirect convolution
  kernels (AVX2 / AVX-512 VNNI; they also handle depthwise convolutions);
* a non-zero weight zero point selects ``im2col`` followed by its integer GEMM. MLAS dispatches that GEMM to
  the AMX-INT8 tile unit on CPUs that have one.

**The same numbers.** A weight can be written for either path with the same dequantized values:
``q' = q − 1`` with zero point ``−1`` gives ``(q' − (−1))·s = q·s`` for every weight. Our weights lie in
``[−127, 127]`` (:func:`visionkit.deploy.quantize.weight_qparams`), so ``q'`` lies in ``[−128, 126]`` and
fits ``int8``. Both paths accumulate the same integer products in ``int32`` and requantize with the same
scales. A candidate is therefore accepted only if its outputs are **bit-identical** to the symmetric
graph's on the tuning inputs. A kernel that gives anything else is never chosen and is named in the report.
One such kernel is an AVX2 ``u8×s8`` GEMM without VNNI: its 16-bit pair sums (``vpmaddubsw``) can saturate.

**The candidates.** Each is timed as a whole graph, round-robin, with the median of ``repeats``:

* ``symmetric``: every weight zero point is 0;
* ``gemm_dense``: the non-grouped convolutions use the GEMM path, the grouped (depthwise) ones stay symmetric;
* ``gemm_all``: every convolution uses the GEMM path.

The fastest accepted candidate is kept. The choice, every candidate's time, the threads, the CPU and the
ONNX Runtime version go into ``export.json``.

**Measured** on an Intel Xeon with AMX-INT8, one thread, batch 8, 224² (benchmarks/RESULTS.md):

* resnet18: 66 → 43 ms, the GEMM path for the dense layers;
* mobilenet_v2: the symmetric kernels stay (its depthwise layers are 1.7× slower on the GEMM path).

A graph tuned on one CPU runs correctly on any CPU, with the same numbers; only its speed was chosen for
the CPU it was tuned on.

Example:
    >>> import onnx, numpy as np
    >>> from onnx import helper, numpy_helper
    >>> w = numpy_helper.from_array(np.array([[[[-127]]], [[[5]]]], dtype=np.int8), "w__int8")
    >>> z = numpy_helper.from_array(np.zeros(2, dtype=np.int8), "w__zero_point")
    >>> s = numpy_helper.from_array(np.ones(2, dtype=np.float32), "w__scale")
    >>> dq = helper.make_node("DequantizeLinear", ["w__int8", "w__scale", "w__zero_point"], ["w__dq"])
    >>> conv = helper.make_node("Conv", ["x", "w__dq"], ["y"])
    >>> graph = helper.make_graph([dq, conv], "g", [], [], initializer=[w, z, s])
    >>> model = helper.make_model(graph)
    >>> offset_conv_weights(model, lambda node: True)
    1
    >>> numpy_helper.to_array(model.graph.initializer[0]).ravel().tolist()
    [-128, 4]
"""

from __future__ import annotations

import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from visionkit.errors import ExportError

__all__ = ["CANDIDATES", "KERNEL_MODES", "choose_candidate", "offset_conv_weights", "tune_int8_kernels"]

CANDIDATES = ("symmetric", "gemm_dense", "gemm_all")
KERNEL_MODES = ("tuned", "symmetric")


def _group(node: Any) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def offset_conv_weights(model: Any, select: Callable[[Any], bool]) -> int:
    """Rewrite, in place, the int8 weights of the Conv nodes ``select`` accepts: ``q → q − 1`` with weight
    zero point ``−1`` (module docstring: the same dequantized values). Returns the number of weight
    tensors rewritten. A weight shared by several convolutions is rewritten once, if all of them are
    selected; if only some are, it is left as it is.

    Raises:
        ExportError: a selected weight has a non-zero zero point or a value of ``−128``. Our quantizer
            never writes either, so this graph did not come from it.
    """
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    dequantizers = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in dequantizers:
            consumers.setdefault(node.input[1], []).append(node)
    rewritten = 0
    for dq_output, convs in consumers.items():
        if not all(select(conv) for conv in convs):
            continue
        dq = dequantizers[dq_output]
        if len(dq.input) < 3 or dq.input[0] not in inits or dq.input[2] not in inits:
            continue
        q = numpy_helper.to_array(inits[dq.input[0]])
        zero = numpy_helper.to_array(inits[dq.input[2]])
        if q.dtype != np.int8:
            continue
        if np.any(zero != 0) or q.min(initial=0) < -127:
            raise ExportError(
                f"int8 kernels: weight {dq.input[0]!r} is not symmetric int8 in [-127, 127] "
                "(zero point 0): this graph was not written by visionkit's quantizer"
            )
        shifted = (q.astype(np.int16) - 1).astype(np.int8)
        inits[dq.input[0]].CopyFrom(numpy_helper.from_array(shifted, dq.input[0]))
        inits[dq.input[2]].CopyFrom(numpy_helper.from_array(np.full_like(zero, -1), dq.input[2]))
        rewritten += 1
    return rewritten


_SELECT: dict[str, Callable[[Any], bool]] = {
    "gemm_dense": lambda node: _group(node) == 1,
    "gemm_all": lambda node: True,
}


def choose_candidate(ms: dict[str, float], identical: dict[str, bool]) -> str:
    """The fastest candidate whose outputs are identical to the symmetric graph's (``symmetric`` always
    is). A tie keeps the earlier candidate of :data:`CANDIDATES`.

    Example:
        >>> choose_candidate({"symmetric": 60.0, "gemm_dense": 40.0, "gemm_all": 35.0},
        ...                  {"symmetric": True, "gemm_dense": True, "gemm_all": False})
        'gemm_dense'
    """
    accepted = [name for name in CANDIDATES if name in ms and (name == "symmetric" or identical.get(name))]
    return min(accepted, key=lambda name: ms[name])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def tune_int8_kernels(
    path: str | Path,
    batches: Sequence[tuple[Tensor, ...]],
    out: str | Path,
    *,
    threads: int = 1,
    repeats: int = 5,
) -> dict[str, Any]:
    """Time the candidates (module docstring) of the int8 graph ``path`` on ``batches`` and write the
    fastest to ``out`` (it may be ``path``).

    Args:
        path: an int8 graph written by :func:`visionkit.deploy.quantize.quantize_onnx` (symmetric weights).
        batches: tuples of the graph's inputs, as :func:`~visionkit.deploy.quantize.calibrate_onnx` takes
            them (e.g. one calibration batch ``(Tensor[N, 3, H, W],)``); all are run in every timing.
        threads: ONNX Runtime intra-op threads, as the graph will be run.
        repeats: round-robin timing rounds (the median is kept).

    Returns:
        The report: ``choice``, ``ms`` per candidate, ``rejected`` (candidates whose outputs differed, with
        the largest difference), ``rewritten`` weights per candidate, ``threads``, ``cpu``, ``onnxruntime``.
    """
    import onnx
    import onnxruntime

    from visionkit.deploy.onnx import ort_session

    if not batches:
        raise ExportError("int8 kernels: no inputs to time the candidates on")
    if repeats < 1:
        raise ExportError(f"int8 kernels: repeats must be >= 1, got {repeats}")
    path, out = Path(path), Path(out)
    base = onnx.load(str(path))
    with tempfile.TemporaryDirectory() as scratch:
        paths, rewritten = {"symmetric": path}, {"symmetric": 0}
        for name, select in _SELECT.items():
            model = onnx.ModelProto()
            model.CopyFrom(base)
            rewritten[name] = offset_conv_weights(model, select)
            same_as_dense = name == "gemm_all" and rewritten[name] == rewritten.get("gemm_dense")
            if rewritten[name] and not same_as_dense:  # no grouped convolutions: gemm_all = gemm_dense
                paths[name] = Path(scratch) / f"{name}.onnx"
                onnx.save(model, str(paths[name]))
        sessions = {name: ort_session(p, threads) for name, p in paths.items()}
        names = [i.name for i in sessions["symmetric"].get_inputs()]
        feeds = [
            {n: t.detach().float().contiguous().numpy() for n, t in zip(names, batch, strict=True)}
            for batch in batches
        ]
        outputs = {name: [s.run(None, feed) for feed in feeds] for name, s in sessions.items()}
        identical, rejected = {}, {}
        for name in sessions:
            pairs = [
                (a, b)
                for got, ref in zip(outputs[name], outputs["symmetric"], strict=True)
                for a, b in zip(got, ref, strict=True)
            ]
            identical[name] = all(np.array_equal(a, b) for a, b in pairs)
            if not identical[name]:
                rejected[name] = max(float(np.abs(a.astype(np.float64) - b).max()) for a, b in pairs)
        samples: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(repeats):
            for name, session in sessions.items():
                start = time.perf_counter()
                for feed in feeds:
                    session.run(None, feed)
                samples[name].append(time.perf_counter() - start)
        ms = {name: 1000 * float(np.median(values)) for name, values in samples.items()}
        choice = choose_candidate(ms, identical)
        chosen = onnx.load(str(paths[choice]))
    onnx.save(chosen, str(out))
    return {
        "choice": choice,
        "ms": {name: round(value, 3) for name, value in ms.items()},
        "rejected": rejected,
        "rewritten": {name: rewritten[name] for name in sessions},
        "threads": threads,
        "cpu": _cpu_name(),
        "onnxruntime": onnxruntime.__version__,
    }
