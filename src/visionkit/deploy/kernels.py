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

**The candidates.** Each is timed as a whole graph in blocks: two untimed runs, then the median of
``repeats`` timed runs. The blocks go round the candidates twice, and each candidate keeps its faster
block. With more than one thread the candidates' sessions do not spin their idle worker threads, and the
untimed runs come first: worker threads still spinning after another session's (or PyTorch's) run take
the cores from the next runs. Timed round-robin, one run at a time, with spinning sessions,
mobilenet_v2's symmetric graph measured 28 ms at 2 threads instead of 19 ms, and the wrong candidate was
kept. A candidate other than ``symmetric`` must also be at least
:data:`MARGIN` faster than it to be kept. The candidates are:

* ``symmetric``: every weight zero point is 0;
* ``gemm_dense``: the non-grouped convolutions use the GEMM path, the grouped (depthwise) ones stay symmetric;
* ``gemm_all``: every convolution uses the GEMM path;
* ``per_layer``: each convolution on the path with the smaller kernel time in ONNX Runtime's own profile of
  the ``symmetric`` and ``gemm_all`` graphs (TensorRT's per-layer choice).

A candidate that would be the same graph as an earlier one (no grouped convolutions: ``gemm_all`` is
``gemm_dense``) is not timed twice.

The fastest accepted candidate is kept. The choice, every candidate's time, the threads, the CPU and the
ONNX Runtime version go into ``export.json``.

**Measured** on an Intel Xeon with AMX-INT8, one thread, batch 8, 224² (benchmarks/RESULTS.md, the table
of record):

* resnet18: 67.3 → 45.2 ms with ``gemm_dense`` (``per_layer`` within 3 % of it);
* mobilenet_v2: 29.1 → 27.6 ms with ``per_layer``; ``gemm_all`` is 1.5× slower than ``symmetric`` (its
  depthwise layers are slow on the GEMM path).

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
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from visionkit.errors import ExportError

__all__ = ["CANDIDATES", "KERNEL_MODES", "choose_candidate", "offset_conv_weights", "tune_int8_kernels"]

CANDIDATES = ("symmetric", "gemm_dense", "gemm_all", "per_layer")
KERNEL_MODES = ("tuned", "symmetric")
BLOCKS, WARMUP = 2, 2  # timing blocks per candidate, untimed runs before each block
MARGIN = 0.05  # a candidate replaces the symmetric graph only if it is at least 5 % faster


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
    return len(_offset(model, select))


def _offset(model: Any, select: Callable[[Any], bool]) -> list[str]:
    """:func:`offset_conv_weights`, returning the names of the rewritten weight tensors."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    dequantizers = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in dequantizers:
            consumers.setdefault(node.input[1], []).append(node)
    rewritten = []
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
        rewritten.append(str(dq.input[0]))
    return rewritten


_SELECT: dict[str, Callable[[Any], bool]] = {
    "gemm_dense": lambda node: _group(node) == 1,
    "gemm_all": lambda node: True,
}


def choose_candidate(ms: dict[str, float], identical: dict[str, bool]) -> str:
    """The fastest candidate whose outputs are identical to the symmetric graph's (``symmetric`` always
    is) and which is at least :data:`MARGIN` faster than ``symmetric`` (else ``symmetric``: a gain within
    the timing noise is not worth a graph tuned to one machine). A tie keeps the earlier candidate of
    :data:`CANDIDATES`.

    Example:
        >>> choose_candidate({"symmetric": 60.0, "gemm_dense": 40.0, "gemm_all": 35.0},
        ...                  {"symmetric": True, "gemm_dense": True, "gemm_all": False})
        'gemm_dense'
        >>> choose_candidate({"symmetric": 60.0, "gemm_dense": 58.0}, {"gemm_dense": True})
        'symmetric'
    """
    accepted = [
        name
        for name in CANDIDATES
        if name in ms
        and (name == "symmetric" or (identical.get(name) and ms[name] <= (1 - MARGIN) * ms["symmetric"]))
    ]
    return min(accepted, key=lambda name: ms[name])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _conv_kernel_ms(
    session_path: Path, feeds: list[dict[str, np.ndarray]], threads: int, runs: int, scratch: Path
) -> dict[str, float]:
    """Median time (µs) of each integer convolution in ONNX Runtime's own profile of ``runs`` runs, keyed by
    the profile's node name (ONNX Runtime names a fused node after the Conv it replaces, with a
    ``_token_N`` suffix)."""
    import json

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_profiling, options.profile_file_prefix = True, str(scratch / "profile")
    session = ort.InferenceSession(str(session_path), options, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        for feed in feeds:
            session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[str, list[float]] = {}
    for event in events:
        args = event.get("args", {})
        timed = event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
        if timed and args.get("op_name") == "QLinearConv":
            times.setdefault(event["name"][: -len("_kernel_time")], []).append(float(event["dur"]))
    return {name: float(np.median(values)) for name, values in times.items()}


def _quiet_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime session whose idle worker threads sleep instead of spinning: the candidates' sessions
    run one after another, and one's spinning workers would take the cores from the next."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _per_conv(profile: dict[str, float], conv: str) -> float | None:
    """The profiled time of our Conv node ``conv`` (module docstring of :func:`_conv_kernel_ms`)."""
    if conv in profile:
        return profile[conv]
    hits = [ms for name, ms in profile.items() if re.fullmatch(re.escape(conv) + r"_token_\d+", name)]
    return hits[0] if len(hits) == 1 else None


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

    Besides the three whole-graph candidates, ``per_layer`` takes, for each convolution, the path with the
    smaller kernel time in ONNX Runtime's own profile of the ``symmetric`` and ``gemm_all`` graphs (a
    convolution the profile does not name keeps the symmetric path). It is timed and checked like the
    others, and kept only if it is the fastest.

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
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        paths: dict[str, Path] = {"symmetric": path}
        rewritten: dict[str, frozenset[str]] = {"symmetric": frozenset()}

        def add(name: str, select: Callable[[Any], bool]) -> None:
            model = onnx.ModelProto()
            model.CopyFrom(base)
            weights = frozenset(_offset(model, select))
            if weights and weights not in rewritten.values():  # a new graph, not a copy of another
                paths[name], rewritten[name] = scratch / f"{name}.onnx", weights
                onnx.save(model, str(paths[name]))

        for name, select in _SELECT.items():
            add(name, select)
        names = [i.name for i in ort_session(path, threads).get_inputs()]
        feeds = [
            {n: t.detach().float().contiguous().numpy() for n, t in zip(names, batch, strict=True)}
            for batch in batches
        ]
        if "gemm_all" in paths or "gemm_dense" in paths:
            gemm = paths.get("gemm_all", paths.get("gemm_dense"))
            assert gemm is not None
            profiles = [_conv_kernel_ms(p, feeds, threads, repeats, scratch) for p in (path, gemm)]
            faster = set()
            for conv in (n for n in base.graph.node if n.op_type == "Conv"):
                times = [_per_conv(profile, conv.name) for profile in profiles]
                if times[0] is not None and times[1] is not None and times[1] < times[0]:
                    faster.add(conv.name)
            add("per_layer", lambda node: node.name in faster)
        sessions = {name: _quiet_session(p, threads) for name, p in paths.items()}
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
        ms = {name: float("inf") for name in sessions}
        for _ in range(BLOCKS):
            for name, session in sessions.items():
                for _ in range(WARMUP):  # the previous session's worker threads may still be spinning
                    session.run(None, feeds[0])
                samples = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    for feed in feeds:
                        session.run(None, feed)
                    samples.append(1000 * (time.perf_counter() - start))
                ms[name] = min(ms[name], float(np.median(samples)))
        choice = choose_candidate(ms, identical)
        chosen = onnx.load(str(paths[choice]))
    onnx.save(chosen, str(out))
    return {
        "choice": choice,
        "ms": {name: round(value, 3) for name, value in ms.items()},
        "rejected": rejected,
        "rewritten": {name: len(rewritten[name]) for name in sessions},
        "threads": threads,
        "cpu": _cpu_name(),
        "onnxruntime": onnxruntime.__version__,
    }
