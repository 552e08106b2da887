"""TensorRT engines from the exported ONNX graphs, and a runner that executes them on CUDA (handbook §37).

``visionkit export format=tensorrt precision=fp32|fp16|int8`` writes, beside each ONNX graph of
:func:`visionkit.deploy.onnx.export_onnx` (a classifier's or segmenter's ``model``; a detector's ``trunk``,
``head`` and box heads), a serialized engine ``<part>.engine`` built by TensorRT's ONNX parser, and records
them in ``export.json`` (``tensorrt``: version, precision, engine files and each input's optimization
profile). ``visionkit predict --backend tensorrt`` (or :func:`load_tensorrt`) runs them; a detector's input
checks, anchors, box decoding, RoI Align and NMS stay the eager detector's own code, exactly as with ONNX
Runtime (:class:`~visionkit.deploy.onnx.OnnxRuntimeDetector` with this module's runner).

Precision: every network is **strongly typed** — its tensor types are those of the ONNX graph, so the
graph alone says what runs in which precision. That is the only mode TensorRT 11 has (it removed the
``FP16`` / ``INT8`` builder flags and the calibrators); on TensorRT 10 the same graphs build the same way.

* ``fp32``: the float graph; TF32 is switched off (``BuilderFlag.TF32`` cleared), so convolutions and
  matrix products round like float32 (each product rounded to the 10-bit TF32 mantissa otherwise).
* ``fp16``: a float16 graph (:func:`export_fp16_onnx`: the fused model converted with ``.half()``, its
  inputs cast to float16 and its outputs back to float32 inside the graph, so the engine's I/O stays float32).
* ``int8``: the symmetric QDQ graph of :mod:`visionkit.deploy.quantize` (``activations="int8"``: zero point
  0, codes ``[−128, 127]``, per-channel ``int8`` weights, float biases) — TensorRT's *explicit
  quantization*: it runs each quantized convolution in int8 with our scales, calibrated by our observers
  (no TensorRT calibrator), gated by the same accuracy / COCO AP check before anything is written.

Shapes: the graphs have dynamic batch and image size; an engine has one optimization profile per input,
``(min, opt, max)`` shapes (:func:`engine_profiles`): batch ``1 / opt_batch / max_batch``, image side
``min_size / image_size / max_size`` (a detector's padded to its ``size_divisible``; its head's level
shapes are the trunk's outputs at those sizes; a box head's proposals ``1 / 1000·opt_batch /
1000·max_batch``). An input outside the profile is refused with an
:class:`~visionkit.errors.InputShapeError` naming the range and the export keys that set it.

TensorRT and a CUDA GPU are optional: ``tensorrt`` is imported when an engine is built or loaded, and where
it or the GPU is missing a :class:`~visionkit.errors.BackendUnavailableError` names what is missing and
how to get it (``pip install tensorrt``; an NVIDIA GPU with a CUDA build of PyTorch). An engine is built
for the GPU and TensorRT version it was built with; it is an executable artefact: load only engines you
built.

Example:
    >>> import torch
    >>> from visionkit.models import create_model
    >>> model = create_model("resnet_digits", num_classes=10).eval()
    >>> profiles = engine_profiles(model, image_size=28, opt_batch=4, max_batch=16)
    >>> profiles["model"]["input_0"]  # (min, opt, max) shapes of the engine's input
    ((1, 1, 14, 14), (4, 1, 28, 28), (16, 1, 56, 56))
    >>> paths = export_fp16_onnx(model, "fp16", example_size=(28, 28))
    >>> import onnx
    >>> graph = onnx.load(str(paths["model"])).graph  # float16 weights (int64: shapes)
    >>> sorted({onnx.TensorProto.DataType.Name(i.data_type) for i in graph.initializer})
    ['FLOAT16', 'INT64']
    >>> [onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type) for v in (*graph.input, *graph.output)]
    ['FLOAT', 'FLOAT']
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from visionkit.deploy.onnx import (
    MANIFEST,
    TWO_STAGE,
    _box_heads,
    _head_names,
    _Trunk,
    export_module,
    load_onnx_runtime,
    model_kind,
    onnx_parts,
    read_manifest,
    structure_outputs,
)
from visionkit.errors import BackendUnavailableError, ExportError, InputShapeError

__all__ = [
    "PRECISIONS",
    "HalfPrecision",
    "TensorRTModule",
    "build_engine",
    "build_engines",
    "engine_profiles",
    "export_fp16_onnx",
    "load_tensorrt",
    "require_tensorrt",
]

#: the engine precisions of ``visionkit export format=tensorrt precision=...``
PRECISIONS = ("fp32", "fp16", "int8")
#: box-head proposals per image in the optimization profile (the RPN's test-time ``post_nms_top_n``)
PROPOSALS_PER_IMAGE = 1000

Shape = tuple[int, ...]
Profile = tuple[Shape, Shape, Shape]


# ----------------------------------------------------------------------------------------- availability
def require_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, once TensorRT (10 or newer) imports and PyTorch sees a CUDA GPU.

    Raises:
        BackendUnavailableError: naming everything that is missing (the package, a CUDA GPU, or a TensorRT
            older than 10) and how to get it.
    """
    missing: list[str] = []
    trt: ModuleType | None = None
    try:
        import tensorrt as trt
    except (ImportError, OSError) as error:  # OSError: the wheel is there, its libnvinfer is not
        missing.append(
            f"the tensorrt package (import failed: {error}); install it with `pip install tensorrt` "
            "(NVIDIA's wheels for Linux/Windows x86-64 and aarch64; TensorRT 10 or 11)"
        )
    if trt is not None and int(str(getattr(trt, "__version__", "0")).split(".")[0]) < 10:
        missing.append(f"TensorRT 10 or newer (found {trt.__version__}): `pip install -U tensorrt`")
    if not torch.cuda.is_available():
        build = torch.version.cuda or "none: a CPU-only build"
        missing.append(
            f"a CUDA GPU (PyTorch {torch.__version__} sees none; its CUDA version: {build}): run on a "
            "machine with an NVIDIA GPU and driver, with a CUDA build of PyTorch"
        )
    if missing:
        raise BackendUnavailableError("TensorRT engines need " + "; and ".join(missing))
    assert trt is not None
    return trt


# ----------------------------------------------------------------------------------------- fp16 graphs
class HalfPrecision(nn.Module):
    """``module`` in float16 between float32 I/O: inputs cast to float16, every output (a tensor or a
    tuple of them) back to float32 — the graph of an ``fp16`` engine. Shapes: those of ``module``.

    Example:
        >>> half = HalfPrecision(nn.Linear(3, 2))
        >>> half.module.weight.dtype, half(torch.rand(4, 3)).dtype
        (torch.float16, torch.float32)
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(module).half().eval()

    def forward(self, *inputs: Tensor) -> Any:
        out = self.module(*(x.half() for x in inputs))
        if isinstance(out, (tuple, list)):
            return tuple(o.float() for o in out)
        return out.float()


def export_fp16_onnx(
    model: nn.Module,
    folder: str | Path,
    *,
    example_size: tuple[int, int] = (224, 224),
    extra: dict | None = None,
) -> dict[str, Path]:
    """The float16 graphs of ``model`` (a fused classifier, segmenter or detector) in ``folder``: the parts
    of :func:`~visionkit.deploy.onnx.onnx_parts`, each wrapped in :class:`HalfPrecision`, with the same
    names, dynamic shapes and ``export.json`` as :func:`~visionkit.deploy.onnx.export_onnx`.

    Returns:
        ``part name → path``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kind = model_kind(model)
    paths = {}
    for name, (module, inputs, shapes) in onnx_parts(model, example_size).items():
        if not _takes_varargs(module):  # HalfPrecision takes *inputs: one entry for all of them
            shapes = (tuple(shapes),)
        paths[name] = export_module(HalfPrecision(module), inputs, shapes, folder / f"{name}.onnx")
    manifest = {"kind": kind, "parts": {k: p.name for k, p in paths.items()}, **(extra or {})}
    if kind not in ("classifier", "segmenter"):
        manifest["nms"] = "outside"
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return paths


def _takes_varargs(module: nn.Module) -> bool:
    """Whether ``module.forward`` takes ``*inputs`` (then torch.export's dynamic shapes have one entry for
    them all)."""
    import inspect

    parameters = inspect.signature(module.forward).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters)


# ----------------------------------------------------------------------------------------- profiles
def engine_profiles(
    model: nn.Module,
    *,
    image_size: int,
    min_size: int = 0,
    max_size: int = 0,
    opt_batch: int = 1,
    max_batch: int = 8,
) -> dict[str, dict[str, Profile]]:
    """``part → input name → (min, opt, max)`` shapes of the engines of ``model`` (module docstring):
    batch ``1 / opt_batch / max_batch``; image side ``min_size / image_size / max_size`` (``0``: half and
    twice ``image_size``); a detector's trunk sizes rounded up to ``size_divisible``, its head's levels
    the trunk's outputs at those sizes (run once in eager mode at batch 1).

    Raises:
        ExportError: sizes that are not ``1 <= min_size <= image_size <= max_size`` or batches that are not
            ``1 <= opt_batch <= max_batch``.
    """
    low, high = min_size or max(1, image_size // 2), max_size or 2 * image_size
    if not 1 <= low <= image_size <= high or not 1 <= opt_batch <= max_batch:
        raise ExportError(
            f"engine profile: expected 1 <= min_size <= image_size <= max_size and 1 <= opt_batch <= "
            f"max_batch, got sizes {low}, {image_size}, {high} and batches {opt_batch}, {max_batch}"
        )
    batches, sides = (1, opt_batch, max_batch), (low, image_size, high)
    kind = model_kind(model)
    model = model.eval()
    if kind in ("classifier", "segmenter"):
        channels = onnx_parts(model, (image_size, image_size))["model"][1][0].shape[1]
        return {"model": {"input_0": _profile(lambda k: (batches[k], channels, sides[k], sides[k]))}}
    divisor = model.size_divisible
    padded = [-(-side // divisor) * divisor for side in sides]
    trunk = _Trunk(model)
    channels = len(model.image_mean)
    with torch.no_grad():
        levels = [
            dict(zip(trunk.names, trunk(torch.zeros(1, channels, side, side)), strict=True))
            for side in padded
        ]
    profiles = {"trunk": {"input_0": _profile(lambda k: (batches[k], channels, padded[k], padded[k]))}}
    names = _head_names(model)
    profiles["head"] = {
        f"input_{i}": _profile(lambda k, n=name: (batches[k], *levels[k][n].shape[1:]))
        for i, name in enumerate(names)
    }
    rpn = getattr(model, "rpn", None)
    per_image = rpn.post_nms_top_n[1] if kind in TWO_STAGE and rpn is not None else PROPOSALS_PER_IMAGE
    for name, roi_heads in _box_heads(model).items():
        pooled = roi_heads.pooler(levels[1], [torch.zeros(1, 4)], [(padded[1], padded[1])])
        counts = (1, per_image * opt_batch, per_image * max_batch)
        profiles[name] = {"input_0": _profile(lambda k, p=pooled, c=counts: (c[k], *p.shape[1:]))}
    return profiles


def _profile(shape_at: Any) -> Profile:
    """``(min, opt, max)`` of ``shape_at(0), shape_at(1), shape_at(2)`` as tuples of ints."""
    return tuple(tuple(int(v) for v in shape_at(k)) for k in range(3))  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------- building
def build_engine(onnx_path: str | Path, engine_path: str | Path, profile: dict[str, Profile]) -> Path:
    """Parse the ONNX graph ``onnx_path`` into a strongly typed TensorRT network, build it with one
    optimization profile (``input name → (min, opt, max)``; every input of the graph needs one) and TF32
    off, and write the serialized engine to ``engine_path``.

    Raises:
        BackendUnavailableError: no TensorRT or no CUDA GPU (:func:`require_tensorrt`).
        ExportError: TensorRT cannot parse the graph (its messages, with node names) or build it, or an
            input has no profile.
    """
    trt = require_tensorrt()
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)  # fp32 means float32 rounding (module docstring)
    optimization = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        name = network.get_input(index).name
        if name not in profile:
            raise ExportError(f"TensorRT engine of {onnx_path}: no optimization profile for input {name!r}")
        optimization.set_shape(name, *profile[name])
    config.add_optimization_profile(optimization)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path} (its log above says why)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    engine_path.write_bytes(bytes(memoryview(serialized)))
    return engine_path


def build_engines(
    folder: str | Path, precision: str, profiles: dict[str, dict[str, Profile]]
) -> dict[str, Any]:
    """Build ``<part>.engine`` beside every graph of the exported ``folder`` (its ``export.json``; the
    graphs already in ``precision``) with ``profiles`` (:func:`engine_profiles` of the eager model) and
    record them in the manifest under ``tensorrt``; returns the manifest."""
    trt = require_tensorrt()
    folder = Path(folder)
    manifest = read_manifest(folder)
    engines = {}
    for part, graph in manifest["parts"].items():
        engines[part] = build_engine(folder / graph, folder / f"{part}.engine", profiles[part]).name
    manifest["tensorrt"] = {
        "version": trt.__version__,
        "precision": precision,
        "engines": engines,
        "profiles": {part: {k: [list(s) for s in v] for k, v in p.items()} for part, p in profiles.items()},
        "device": torch.cuda.get_device_name(),
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


# ----------------------------------------------------------------------------------------- running
class TensorRTModule(nn.Module):
    """A serialized engine as a module, with :class:`~visionkit.deploy.onnx.OrtModule`'s call convention:
    tensors in (float32, any device), outputs float32 on the device of the first input; ``structure`` as
    there (``None``: one tensor, ``"tuple"``, or group sizes). CUDA inputs are bound without a copy
    (``data_ptr`` → ``set_tensor_address``) and the engine is enqueued on PyTorch's current CUDA stream
    (``execute_async_v3``), so CUDA outputs are ready for the next PyTorch op on that stream.

    Inputs and outputs are taken in the graph's order (``input_<i>`` / ``output_<i>``).

    Raises:
        BackendUnavailableError: no TensorRT or no CUDA GPU.
        ExportError: the file is missing or cannot be deserialized (another TensorRT version or GPU built
            it).
        InputShapeError: an input outside the engine's optimization profile (on call).
    """

    def __init__(self, engine_path: str | Path, structure: str | list[int] | None = None) -> None:
        super().__init__()
        trt = require_tensorrt()
        self.path, self.structure = Path(engine_path), structure
        if not self.path.is_file():
            raise ExportError(f"{self.path}: no such engine file (export it again with format=tensorrt)")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise ExportError(
                f"{self.path}: TensorRT {trt.__version__} cannot load this engine (built by another TensorRT "
                "version or for another GPU? export it again on this machine)"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = sorted((n for n in names if is_input[n]), key=_graph_order)
        self.outputs = sorted((n for n in names if not is_input[n]), key=_graph_order)
        self.dtypes = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
        self.profile = {
            n: tuple(tuple(s) for s in self.engine.get_tensor_profile_shape(n, 0)) for n in self.inputs
        }

    def forward(self, *inputs: Tensor) -> Any:
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if len(inputs) != len(self.inputs):
            raise InputShapeError(f"{self.path.name}: expected {len(self.inputs)} inputs, got {len(inputs)}")
        device = inputs[0].device
        bound = []
        for name, x in zip(self.inputs, inputs, strict=True):
            self._check_shape(name, tuple(x.shape))
            x = x.detach().to("cuda", self.dtypes[name]).contiguous()
            self.context.set_input_shape(name, tuple(x.shape))
            self.context.set_tensor_address(name, x.data_ptr())
            bound.append(x)  # kept alive until the engine has run
        outputs = []
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            out = torch.empty(shape, dtype=self.dtypes[name], device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ExportError(f"{self.path.name}: TensorRT failed to run the engine (its log above says why)")
        results = [o.float().to(device) for o in outputs]
        return structure_outputs(results, self.structure)

    def _check_shape(self, name: str, shape: Shape) -> None:
        low, _, high = self.profile[name]
        if len(shape) != len(low) or any(
            not lo <= s <= hi for s, lo, hi in zip(shape, low, high, strict=True)
        ):
            raise InputShapeError(
                f"{self.path.name}: input {name} of shape {shape} is outside the engine's profile "
                f"{low} .. {high} (export it again with other max_batch= / min_size= / max_size=)"
            )


def _graph_order(name: str) -> tuple[str, int]:
    """Sort key of ``input_<i>`` / ``output_<i>`` by ``i`` (other names keep their text order)."""
    found = re.fullmatch(r"(.*?)(\d+)", name)
    return (found.group(1), int(found.group(2))) if found else (name, -1)


def _torch_dtype(trt: ModuleType, dtype: Any) -> torch.dtype:
    import numpy as np

    return torch.from_numpy(np.empty(0, dtype=trt.nptype(dtype))).dtype


def load_tensorrt(model: nn.Module, folder: str | Path) -> nn.Module:
    """The engines in ``folder`` (``visionkit export format=tensorrt``) as a runnable module — the ONNX
    Runtime module of :func:`~visionkit.deploy.onnx.load_onnx_runtime` with each graph run by its
    :class:`TensorRTModule`; ``model`` is the eager model they were exported from.

    Raises:
        ExportError: the folder has no engines (exported with ``format=onnx``).
        BackendUnavailableError: no TensorRT or no CUDA GPU.
    """
    folder = Path(folder)
    manifest = read_manifest(folder) if (folder / MANIFEST).is_file() else {}
    record = manifest.get("tensorrt")
    engines = record.get("engines") if isinstance(record, dict) else None
    if not isinstance(engines, dict):
        raise ExportError(
            f"{folder / MANIFEST}: no TensorRT engines here "
            "(export them with visionkit export format=tensorrt)"
        )
    require_tensorrt()
    engine_of = {manifest["parts"][part]: engine for part, engine in engines.items()}

    def runner(path: Path, structure: str | list[int] | None) -> nn.Module:
        return TensorRTModule(path.parent / engine_of[path.name], structure)

    return load_onnx_runtime(model, folder, runner=runner)
