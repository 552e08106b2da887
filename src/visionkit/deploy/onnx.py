"""ONNX export and ONNX Runtime inference of classifiers, segmenters and detectors (handbook §37).

What goes into a graph: the dense, shape-static parts — a classifier or a segmenter (FCN) whole; a
detector's **trunk** (backbone + neck: the padded, normalized batch → every neck level), its dense
**head** (RetinaNet's class and box subnets over the levels; YOLOv3's and YOLOv2's output convolutions,
``[B, A·(5+K), H, W]`` per level; RefineDet's ARM, transfer connections and ODM, its four raw outputs;
Faster R-CNN's and Cascade R-CNN's RPN head) and, for Faster R-CNN, the
**box head** (pooled RoI features ``[R, C, 7, 7]`` → class logits and box deltas; Cascade R-CNN has one
per stage, ``box_head_1..3``, each on its stage's boxes). Every graph has dynamic batch and image size
(levels of any height and width; ``R`` proposals, also 0).

What stays outside, in PyTorch with our own ops: input checks, normalization and padding, anchors (YOLO's
grid priors), RefineDet's anchor refinement and negative filtering, box decoding, proposal selection,
multi-scale RoI Align and NMS. :class:`OnnxRuntimeDetector` is the eager detector with its trunk and heads
swapped for ONNX Runtime sessions, so the decoding and suppression are literally the same code as in eager
mode. Our NMS suppresses a box when
``IoU > nms_threshold`` (strictly; a pair exactly at the threshold survives, :mod:`visionkit.ops.nms`);
ONNX's ``NonMaxSuppression`` also suppresses only when ``IoU > iou_threshold`` (the ONNX Runtime kernel
compares ``iou > threshold``), but it returns ``(batch, class, box)`` index triples grouped by class and
breaks score ties in an unspecified order. By default the suppression stays outside the graphs; with
``export_onnx(nms="graph")`` (``visionkit export nms=graph``) the final class-aware hard NMS runs as an
ONNX graph around ``NonMaxSuppression``, written so that it returns what ours does, ties included
(:mod:`visionkit.deploy.onnx_nms`).

An op the exporter cannot translate raises :class:`~visionkit.errors.ExportError` naming the ATen op and the
module path where the model calls it (from ``torch.export``'s ``nn_module_stack``).

Example:
    >>> import torch
    >>> from visionkit.models import create_model
    >>> model = create_model("resnet_digits", num_classes=10).eval()
    >>> paths = export_onnx(model, "exported", example_size=(28, 28))
    >>> runtime = load_onnx_runtime(model, "exported")
    >>> runtime(torch.rand(3, 1, 32, 40)).shape
    torch.Size([3, 10])
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from visionkit.deploy.onnx_nms import OnnxNms, write_nms_graph
from visionkit.errors import ExportError
from visionkit.models.detectors.base import Detector
from visionkit.models.detectors.cascade_rcnn import CascadeRCNN
from visionkit.models.detectors.faster_rcnn import FasterRCNN
from visionkit.models.detectors.postprocess import hard_nms_engine
from visionkit.models.detectors.refinedet import RefineDet
from visionkit.models.detectors.retinanet import RetinaNet
from visionkit.models.detectors.yolo.yolov2 import YOLOv2
from visionkit.models.detectors.yolo.yolov3 import YOLOv3
from visionkit.models.segmentation.fcn import FCN, check_images

__all__ = [
    "OnnxRuntimeDetector",
    "OnnxRuntimeSegmenter",
    "OrtModule",
    "export_module",
    "export_onnx",
    "load_onnx_runtime",
    "model_kind",
    "onnx_parts",
    "ort_session",
    "read_manifest",
    "structure_outputs",
]

MANIFEST = "export.json"


def model_kind(model: nn.Module) -> str:
    """``"retinanet"``, ``"faster_rcnn"``, ``"cascade_rcnn"``, ``"yolo"`` (YOLOv3, YOLOv2), ``"refinedet"``,
    ``"segmenter"`` (FCN: images → per-pixel logits) or ``"classifier"`` (anything else that maps images to
    logits).

    Detector families are matched by their exact class: a subclass (Cascade R-CNN is a ``FasterRCNN``
    with more stages) has its own heads and glue, which these graphs do not cover.

    Raises:
        ExportError: another detector family (a subclass of one of these, say): names it.
    """
    if type(model) is RetinaNet:
        return "retinanet"
    if type(model) is FasterRCNN:
        return "faster_rcnn"
    if type(model) is CascadeRCNN:
        return "cascade_rcnn"
    if type(model) in (YOLOv3, YOLOv2):
        return "yolo"
    if type(model) is RefineDet:
        return "refinedet"
    if isinstance(model, FCN):
        return "segmenter"
    if isinstance(model, Detector):
        family = type(model).__name__
        reason = _UNSUPPORTED.get(family, "its heads and glue have no ONNX graphs here")
        raise ExportError(
            f"export: detector family {family} is not supported yet: {reason} "
            f"(exported: {', '.join(SUPPORTED_DETECTORS)})"
        )
    return "classifier"


#: the detector families :func:`export_onnx` writes graphs for
SUPPORTED_DETECTORS = ("RetinaNet", "FasterRCNN", "CascadeRCNN", "YOLOv3", "YOLOv2", "RefineDet")

#: what is missing for the families that are refused, named in the error
_UNSUPPORTED: dict[str, str] = {}


# ----------------------------------------------------------------------------------------- the parts
def _level_names(neck: nn.Module) -> list[str]:
    """The neck's output levels in its order (``out_names``, else the keys of ``output_shape()``)."""
    return list(getattr(neck, "out_names", None) or neck.output_shape())


class _RefineDetHead(nn.Module):
    """RefineDet's dense part over its levels: ``*levels`` → ``(arm_objectness [B, N], arm_deltas [B, N, 4],
    odm_logits [B, N, K + 1], odm_deltas [B, N, 4])`` — :meth:`RefineDet.outputs` without the anchors."""

    def __init__(self, detector: RefineDet) -> None:
        super().__init__()
        self.detector = _RefineDetParts(detector)

    def forward(self, *levels: Tensor) -> tuple[Tensor, ...]:
        features = dict(zip(self.detector.names, levels, strict=True))
        return tuple(RefineDet.outputs(self.detector, levels[0], features)[:4])  # type: ignore[arg-type]


class _RefineDetParts(nn.Module):
    """What :meth:`RefineDet.outputs` reads, with no anchor generator (the anchors stay outside)."""

    def __init__(self, detector: RefineDet) -> None:
        super().__init__()
        self.tcb, self.num_classes, self.names = (
            detector.tcb,
            detector.num_classes,
            _level_names(detector.neck),
        )
        self.arm_objectness, self.arm_deltas = detector.arm_objectness, detector.arm_deltas
        self.odm_logits, self.odm_deltas = detector.odm_logits, detector.odm_deltas

    def anchor_generator(self, batch: Tensor, levels: Sequence[Tensor]) -> list[Tensor]:
        return []


class _RefineDetOutputs:
    """In the ONNX Runtime detector, :meth:`RefineDet.outputs`: the head session's four outputs and the
    detector's own anchors."""

    def __init__(self, session: nn.Module, anchor_generator: nn.Module) -> None:
        self.session, self.anchor_generator = session, anchor_generator

    def __call__(self, batch: Tensor, features: dict[str, Tensor]) -> tuple[Any, ...]:
        levels = list(features.values())
        return (*self.session(*levels), self.anchor_generator(batch, levels))


class _Trunk(nn.Module):
    """backbone + neck: ``batch [B, 3, H, W]`` → the neck levels as a tuple in ``names`` order."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.backbone, self.neck = detector.backbone, detector.neck
        self.names = _level_names(detector.neck)

    def forward(self, batch: Tensor) -> tuple[Tensor, ...]:
        features = self.neck(self.backbone(batch))
        return tuple(features[name] for name in self.names)


class _LevelHead(nn.Module):
    """A head over pyramid levels as positional inputs: ``*levels`` → a flat tuple of its outputs."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, *levels: Tensor) -> tuple[Tensor, ...]:
        outputs = self.head(list(levels))
        flat: list[Tensor] = []
        for output in outputs:
            flat += list(output) if isinstance(output, (list, tuple)) else [output]
        return tuple(flat)


class _BoxHead(nn.Module):
    """Faster R-CNN's (or one Cascade R-CNN stage's) box head and predictor: pooled ``[R, C, h, w]`` →
    ``(class_logits, box_deltas)``."""

    def __init__(self, roi_heads: nn.Module) -> None:
        super().__init__()
        self.box_head, self.box_predictor = roi_heads.box_head, roi_heads.box_predictor

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        return self.box_predictor(self.box_head(pooled))


def onnx_parts(
    model: nn.Module, example_size: tuple[int, int]
) -> dict[str, tuple[nn.Module, tuple[Tensor, ...], Any]]:
    """The graphs of ``model`` (module docstring): ``name → (module, example inputs, dynamic_shapes)``.

    ``example_size``: ``(H, W)`` of the example image (a classifier's input, a detector's padded batch
    is rounded up to ``size_divisible``). Examples have batch 2, so the batch dimension stays symbolic.
    """
    kind = model_kind(model)
    model = model.eval()
    dim = torch.export.Dim
    batch = dim("batch", min=1, max=4096)
    if kind in ("classifier", "segmenter"):
        channels = _input_channels(model)
        example = torch.rand(2, channels, *example_size)
        shapes = ({0: batch, 2: dim.AUTO, 3: dim.AUTO},)  # the sizes the network accepts (guards inferred)
        return {"model": (model, (example,), shapes)}
    h, w = _detector_example_size(model, example_size)
    divisor = model.size_divisible
    example = torch.rand(2, len(model.image_mean), h, w)
    rows, cols = dim("rows", min=1, max=256), dim("cols", min=1, max=256)
    parts: dict[str, tuple[nn.Module, tuple[Tensor, ...], Any]] = {
        "trunk": (_Trunk(model), (example,), ({0: batch, 2: divisor * rows, 3: divisor * cols},))
    }
    with torch.no_grad():
        levels = dict(zip(parts["trunk"][0].names, parts["trunk"][0](example), strict=True))
    head_names = _head_names(model)
    inputs = tuple(levels[name] for name in head_names)
    level_shapes = tuple(
        {0: batch, 2: dim(f"{name}_h", min=1, max=8192), 3: dim(f"{name}_w", min=1, max=8192)}
        if kind != "refinedet"  # its transfer connections tie each level's size to the next one's
        else {0: batch, 2: dim.AUTO, 3: dim.AUTO}
        for name in head_names
    )
    if kind == "refinedet":
        head: nn.Module = _RefineDetHead(model)
    else:
        head = _LevelHead(model.rpn.head if kind in TWO_STAGE else model.head)
    parts["head"] = (head, inputs, (level_shapes,))  # one entry: the *levels tuple
    for name, roi_heads in _box_heads(model).items():
        proposals = [torch.tensor([[0.0, 0.0, 16.0, 16.0], [4.0, 4.0, 40.0, 30.0]])] * 2
        with torch.no_grad():
            pooled = roi_heads.pooler(levels, proposals, [(h, w)] * 2)
        rois = dim("rois", min=0, max=1 << 20)
        parts[name] = (_BoxHead(roi_heads), (pooled,), ({0: rois},))
    return parts


#: the two-stage kinds: RPN head over the levels, then box heads on pooled RoIs
TWO_STAGE = ("faster_rcnn", "cascade_rcnn")


def _box_heads(model: nn.Module) -> dict[str, nn.Module]:
    """The RoI heads whose box head and predictor become graphs: Faster R-CNN's ``box_head``; Cascade
    R-CNN's stages ``box_head_1``, ``box_head_2``, ... (each its own head on its stage's boxes)."""
    kind = model_kind(model)
    if kind == "faster_rcnn":
        return {"box_head": model.roi_heads}
    if kind == "cascade_rcnn":
        return {f"box_head_{i + 1}": stage for i, stage in enumerate(model.roi_heads.stages)}
    return {}


def _head_names(model: Detector) -> list[str]:
    """The neck levels a detector's dense head reads (Faster R-CNN: its RPN's)."""
    kind = model_kind(model)
    if kind == "refinedet":
        return _level_names(model.neck)
    return list(model.rpn_feature_names if kind in TWO_STAGE else model.feature_names)


def _detector_example_size(model: Detector, example_size: tuple[int, int]) -> tuple[int, int]:
    """The padded example batch's ``(H, W)``: ``example_size`` rounded up to ``size_divisible``, every level
    at least 3 cells high and wide, ``H / size_divisible`` and ``W / size_divisible`` odd and different.

    Why: ``torch.export`` may specialize a symbolic size whose example value coincides with a constant of
    the graph (a 1-cell level is fixed to 1; YOLOv2's passthrough ``reorg`` on a 64² example — a 4×4
    ``c4`` next to the constant 4 of its reshape — was fixed to 4 with only a runtime guard), equal sides
    can tie the two symbols together, and a crop that is a no-op at the example size is dropped from the
    graph (RefineDet's transfer connection crops its upsampled map to the level below, which is one cell
    smaller only when that level is odd). Odd, distinct sizes of ≥ 3 cells avoid those cases;
    :func:`export_onnx` then checks every graph at a second size.
    """
    divisor = model.size_divisible
    smallest = 3 * max(spec.stride for spec in model.feature_shapes.values())
    rows, cols = (-(-max(s, smallest) // divisor) for s in example_size)
    rows, cols = rows + 1 - rows % 2, cols + 1 - cols % 2
    cols = cols + 2 if cols == rows else cols
    return rows * divisor, cols * divisor


def _input_channels(model: nn.Module) -> int:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise ExportError(f"export: {type(model).__name__} has no Conv2d, cannot tell its input channels")


# ----------------------------------------------------------------------------------------- exporting
@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs and warns about things that are not ours (torchvision ops, deprecations)."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def export_module(
    module: nn.Module, inputs: tuple[Tensor, ...], dynamic_shapes: Any, path: str | Path
) -> Path:
    """Export one module to ``path`` (ONNX, opset of the installed exporter) via ``torch.export``.

    Inputs are named ``input_<i>``, outputs ``output_<i>``.

    Raises:
        ExportError: the model cannot be captured, or calls an op that has no ONNX translation; the message
            names the op and the module path that calls it.
    """
    path = Path(path)
    with _quiet_exporter():
        try:
            program = torch.export.export(module, inputs, dynamic_shapes=dynamic_shapes, strict=False)
        except Exception as error:
            raise ExportError(f"export of {type(module).__name__}: torch.export failed: {error}") from error
        try:
            onnx_program = torch.onnx.export(
                program,
                inputs,
                dynamo=True,
                input_names=[f"input_{i}" for i in range(len(inputs))],
                verbose=False,
                optimize=True,
            )
        except Exception as error:
            raise _unsupported(error, program) from error
    names = [f"output_{i}" for i in range(len(onnx_program.model.graph.outputs))]
    for value, name in zip(onnx_program.model.graph.outputs, names, strict=True):
        value.name = name
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_program.save(str(path))
    return path


def _unsupported(error: BaseException, program: torch.export.ExportedProgram) -> ExportError:
    """An :class:`ExportError` naming the op and its module path, from the exporter's error chain."""
    messages = []
    cause: BaseException | None = error
    while cause is not None:
        messages.append(str(cause))
        cause = cause.__cause__
    text = "\n".join(messages)
    found = re.search(r"Error when translating node %(\w+) .*?target=([\w.:]+)", text)
    if found is None:
        return ExportError(f"ONNX export failed: {messages[-1][:500]}")
    node_name, op = found.groups()
    path = "<model>"
    for node in program.graph.nodes:
        if node.name == node_name or str(node.target) == op:
            stack = node.meta.get("nn_module_stack") or {}
            if stack:
                path = list(stack.values())[-1][0] or "<model>"
            break
    reason = messages[-1].splitlines()[0][:300]
    return ExportError(f"ONNX export: op {op} (called in module {path!r}) has no ONNX translation: {reason}")


def export_onnx(
    model: nn.Module,
    folder: str | Path,
    *,
    example_size: tuple[int, int] = (224, 224),
    extra: dict | None = None,
    nms: str = "outside",
) -> dict[str, Path]:
    """Export ``model`` (a classifier, RetinaNet, Faster R-CNN, YOLOv3 or YOLOv2) into ``folder``: one
    ``<part>.onnx`` per graph of :func:`onnx_parts` and ``export.json`` (kind, parts, inputs; ``extra``
    merged in). A detector's graphs are run once more in ONNX Runtime at a second size
    (:func:`_check_second_size`).

    ``nms="graph"`` (detectors): also ``nms.onnx``, the class-aware hard NMS as an ONNX graph around
    ``NonMaxSuppression`` (:mod:`visionkit.deploy.onnx_nms`), which :func:`load_onnx_runtime` then runs in
    place of our NMS for the final detections (hard NMS; Soft-NMS and the RPN's proposal NMS stay ours).

    Raises:
        ExportError: an unsupported detector family or op, a graph that does not run at a second size, or
            ``nms="graph"`` for a model without detections.

    Returns:
        ``part name → path``.
    """
    if nms not in NMS_PLACES:
        raise ExportError(f"nms={nms!r}: expected one of {list(NMS_PLACES)}")
    kind = model_kind(model)
    if nms == "graph" and kind in ("classifier", "segmenter"):
        raise ExportError(f"nms=graph: a {kind} has no detections to suppress (detectors only)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    parts = onnx_parts(model, example_size)
    for name, (module, inputs, shapes) in parts.items():
        paths[name] = export_module(module, inputs, shapes, folder / f"{name}.onnx")
    if kind == "segmenter":  # any size: the example's grown by 13 rows and 7 columns
        example = parts["model"][1][0]
        second = torch.rand(1, example.shape[1], example.shape[2] + 13, example.shape[3] + 7)
        _check_graph("model", model, paths["model"], (second,))
    elif kind != "classifier":
        _check_second_size(parts, paths, _head_names(model), model.size_divisible)
    if nms == "graph":
        paths["nms"] = write_nms_graph(model.num_classes, folder / "nms.onnx")
    manifest = {"kind": kind, "parts": {k: p.name for k, p in paths.items()}, **(extra or {})}
    if kind not in ("classifier", "segmenter"):
        manifest["nms"] = nms
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return paths


#: where ``export_onnx(nms=...)`` puts a detector's final NMS
NMS_PLACES = ("outside", "graph")


def add_nms_graph(folder: str | Path, num_classes: int) -> dict[str, Any]:
    """Add ``nms.onnx`` (:func:`~visionkit.deploy.onnx_nms.write_nms_graph`) to an exported detector's
    ``folder`` and to its manifest (``nms: graph``); returns the manifest. For folders written by other
    exporters (the int8 detector graphs)."""
    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    write_nms_graph(num_classes, folder / "nms.onnx")
    manifest["parts"]["nms"], manifest["nms"] = "nms.onnx", "graph"
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def _check_second_size(
    parts: dict[str, Any], paths: dict[str, Path], head_names: list[str], divisor: int
) -> None:
    """Run every detector graph in ONNX Runtime at a second size (batch 1, the example batch grown by
    ``divisor`` rows and ``2·divisor`` columns; 3 proposals for a box head) and compare the output shapes
    with eager mode: a size the exporter fixed to the example's fails here, at export time, with an
    :class:`ExportError` naming the graph, instead of at the user's first other image."""
    trunk = parts["trunk"][0]
    example = parts["trunk"][1][0]
    batch = torch.rand(1, example.shape[1], example.shape[2] + divisor, example.shape[3] + 2 * divisor)
    with torch.no_grad():
        levels = dict(zip(trunk.names, trunk(batch), strict=True))
    trials: dict[str, tuple[Tensor, ...]] = {"trunk": (batch,), "head": tuple(levels[n] for n in head_names)}
    for name in (n for n in parts if n.startswith("box_head")):
        trials[name] = (torch.rand(3, *parts[name][1][0].shape[1:]),)
    for name, inputs in trials.items():
        _check_graph(name, parts[name][0], paths[name], inputs)


def _check_graph(name: str, module: nn.Module, path: Path, inputs: tuple[Tensor, ...]) -> None:
    """:class:`ExportError` unless the graph at ``path`` runs on ``inputs`` in ONNX Runtime with the output
    shapes of ``module`` in eager mode."""
    with torch.no_grad():
        expected = module(*inputs)
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    try:
        got = OrtModule(ort_session(path), "tuple")(*inputs)
    except Exception as error:  # onnxruntime's own exception types
        raise ExportError(
            f"ONNX export: the {name} graph does not run at a second input size "
            f"{[tuple(t.shape) for t in inputs]} (a dynamic size was fixed at export): {error}"
        ) from error
    if [tuple(g.shape) for g in got] != [tuple(e.shape) for e in expected]:
        raise ExportError(
            f"ONNX export: the {name} graph gives outputs {[tuple(g.shape) for g in got]} at input "
            f"{[tuple(t.shape) for t in inputs]}, eager {[tuple(e.shape) for e in expected]}"
        )


# ----------------------------------------------------------------------------------------- running
def ort_session(path: str | Path, threads: int = 1) -> Any:
    """An ONNX Runtime CPU session of ``path`` with ``threads`` intra-op threads (all graph optimizations)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OrtModule(nn.Module):
    """An ONNX Runtime session as a module: float32 tensors in, float32 tensors out.

    ``structure`` says how the flat outputs are returned: ``None`` (one tensor), ``"tuple"``, or a list of
    group sizes (``[5, 5]``: two lists of five, as a head over five levels returns them).
    """

    def __init__(self, session: Any, structure: str | list[int] | None = None) -> None:
        super().__init__()
        self.session, self.structure = session, structure
        self.input_names = [i.name for i in session.get_inputs()]

    def forward(self, *inputs: Tensor) -> Any:
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        feed = {
            n: t.detach().float().contiguous().cpu().numpy()
            for n, t in zip(self.input_names, inputs, strict=True)
        }
        return structure_outputs([torch.from_numpy(o) for o in self.session.run(None, feed)], self.structure)


def structure_outputs(outputs: list[Tensor], structure: str | list[int] | None) -> Any:
    """A part's flat outputs as its module returns them: ``None``: the first tensor; ``"tuple"``: all of
    them; a list of group sizes: a tuple of lists (``[5, 5]``: two lists of five).

    Example:
        >>> parts = structure_outputs([torch.zeros(1)] * 4, [2, 2])
        >>> [len(group) for group in parts]
        [2, 2]
    """
    if structure is None:
        return outputs[0]
    if structure == "tuple":
        return tuple(outputs)
    grouped, start = [], 0
    for size in structure:
        grouped.append(outputs[start : start + size])
        start += size
    return tuple(grouped)


class _TrunkSession(nn.Module):
    """The trunk session in the backbone's place: the batch → ``{level name: level}`` (the neck's output)."""

    def __init__(self, inner: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.inner, self.names = inner, list(names)

    def forward(self, batch: Tensor) -> dict[str, Tensor]:
        return dict(zip(self.names, self.inner(batch), strict=True))


class _PassThrough(nn.Module):
    """Stands in for the neck once the trunk session returns its levels (and still describes them:
    ``output_shape()``, which YOLO's glue reads for the strides)."""

    def __init__(self, neck: nn.Module) -> None:
        super().__init__()
        self.shapes, self.out_names = dict(neck.output_shape()), _level_names(neck)

    def output_shape(self) -> dict[str, Any]:
        return dict(self.shapes)

    def forward(self, levels: dict[str, Tensor]) -> dict[str, Tensor]:
        return dict(levels)


class _EmptyAware(nn.Module):
    """The box-head session, with ``R = 0`` proposals answered without running it."""

    def __init__(self, session_module: nn.Module, num_classes: int, box_outputs: int) -> None:
        super().__init__()
        self.inner, self.num_classes, self.box_outputs = session_module, num_classes, box_outputs

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        if pooled.shape[0] == 0:
            return pooled.new_zeros(0, self.num_classes), pooled.new_zeros(0, self.box_outputs)
        return self.inner(pooled)


#: ``(graph path, output structure) → module`` running one exported part (``OrtModule``'s call convention)
PartRunner = Callable[[Path, "str | list[int] | None"], nn.Module]


class OnnxRuntimeDetector(nn.Module):
    """The eager detector with trunk and heads run by ONNX Runtime (module docstring): same call, same
    :class:`~visionkit.structures.Detections`; anchors, decoding, RoI Align and NMS are the detector's own,
    except the final hard NMS when the folder has an ``nms`` graph (``export_onnx(nms="graph")``).

    ``runner``: what runs each part, ``(folder / part file, structure) → module`` with :class:`OrtModule`'s
    call convention; ``None``: an ONNX Runtime session (:mod:`visionkit.deploy.tensorrt` passes its engines).
    """

    def __init__(
        self,
        detector: Detector,
        folder: Path,
        parts: dict[str, str],
        threads: int = 1,
        runner: PartRunner | None = None,
    ) -> None:
        super().__init__()
        model = copy.deepcopy(detector).eval()
        names = _level_names(model.neck)
        run: PartRunner = runner or (lambda path, structure: OrtModule(ort_session(path, threads), structure))
        model.backbone = _TrunkSession(run(folder / parts["trunk"], "tuple"), names)
        model.neck = _PassThrough(detector.neck)
        if isinstance(model, RefineDet):  # its outputs method, with the head graph in it
            session = run(folder / parts["head"], "tuple")
            model.outputs = _RefineDetOutputs(session, model.anchor_generator)
        elif isinstance(model, (RetinaNet, YOLOv3)):  # dense heads over the levels (YOLOv2 is a YOLOv3)
            model.head = _Levels(run(folder / parts["head"], "tuple"))
        else:
            levels = len(model.rpn_feature_names)
            model.rpn.head = _ListPair(run(folder / parts["head"], [levels, levels]))
            for name, roi_heads in _box_heads(model).items():
                predictor = roi_heads.box_predictor
                session = run(folder / parts[name], "tuple")
                roi_heads.box_predictor = _EmptyAware(session, predictor.cls_score.out_features,
                                                      predictor.bbox_pred.out_features)  # fmt: skip
                roi_heads.box_head = nn.Identity()
        self.model = model
        self.nms = OnnxNms(folder / parts["nms"], threads) if "nms" in parts else None

    def forward(self, images: Sequence[Tensor]) -> Any:
        with torch.no_grad(), hard_nms_engine(self.nms) if self.nms else contextlib.nullcontext():
            return self.model(images)


class _Levels(nn.Module):
    """RetinaNet head session: the list of levels as positional inputs → ``(class_logits, box_deltas)``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, levels: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        return self.inner(*levels)


class _ListPair(nn.Module):
    """RPN head session: returns ``(objectness maps, delta maps)`` as lists, as the eager head does."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, levels: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        objectness, deltas = self.inner(*levels)
        return list(objectness), list(deltas)


class OnnxRuntimeClassifier(nn.Module):
    """A classifier graph run by ONNX Runtime (or ``runner``, as :class:`OnnxRuntimeDetector`):
    ``[B, C, H, W]`` → logits ``[B, K]``."""

    def __init__(
        self, folder: Path, parts: dict[str, str], threads: int = 1, runner: PartRunner | None = None
    ) -> None:
        super().__init__()
        path = folder / parts["model"]
        self.session = runner(path, None) if runner else OrtModule(ort_session(path, threads))

    def forward(self, images: Tensor) -> Tensor:
        return self.session(images)


class OnnxRuntimeSegmenter(nn.Module):
    """A segmenter graph (FCN) run by ONNX Runtime: ``[N, 3, H, W]`` images in ``[0, 1]`` → logits
    ``[N, K, H, W]``, any ``N, H, W`` the eager model takes; inputs checked as the eager model checks them.
    ``num_classes`` as the model's (what :mod:`visionkit.engine.segment` reads); ``runner`` as in
    :class:`OnnxRuntimeDetector`."""

    def __init__(
        self,
        model: nn.Module,
        folder: Path,
        parts: dict[str, str],
        threads: int = 1,
        runner: PartRunner | None = None,
    ) -> None:
        super().__init__()
        path = folder / parts["model"]
        self.session = runner(path, None) if runner else OrtModule(ort_session(path, threads))
        self.num_classes, self.name = model.num_classes, type(model).__name__

    def forward(self, images: Tensor) -> Tensor:
        check_images(images, self.name)
        return self.session(images)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The ``export.json`` of an exported ``folder`` (:func:`export_onnx`, ``visionkit export``).

    Raises:
        ExportError: the folder has none, or it is not an export manifest (names the file and why).
    """
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ExportError(f"{path}: no export manifest (export the model with visionkit export first)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExportError(f"{path}: not a readable export manifest ({error})") from None
    if not (isinstance(manifest, dict) and isinstance(manifest.get("parts"), dict) and "kind" in manifest):
        raise ExportError(f"{path}: not an export manifest (no 'kind' and 'parts'): export the model again")
    return manifest


def load_onnx_runtime(
    model: nn.Module, folder: str | Path, threads: int = 1, runner: PartRunner | None = None
) -> nn.Module:
    """The exported graphs in ``folder`` (from :func:`export_onnx`) as a runnable module; ``model`` is the
    eager model they were exported from (a detector's glue — anchors, decoding, NMS — is taken from it);
    ``runner``: what runs each graph (``None``: ONNX Runtime; see :class:`OnnxRuntimeDetector`)."""
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    manifest = read_manifest(folder)
    if hasattr(model, "detector"):  # ResizedInput: resize in PyTorch, then the detector in ONNX Runtime
        wrapper = copy.copy(model)
        wrapper.detector = load_onnx_runtime(model.detector, folder, threads, runner)
        return wrapper
    if manifest["kind"] != model_kind(model):
        raise ExportError(
            f"{manifest_path}: exported a {manifest['kind']}, but the model is a {model_kind(model)}"
        )
    if manifest["kind"] == "classifier":
        return OnnxRuntimeClassifier(folder, manifest["parts"], threads, runner)
    if manifest["kind"] == "segmenter":
        return OnnxRuntimeSegmenter(model, folder, manifest["parts"], threads, runner)
    return OnnxRuntimeDetector(model, folder, manifest["parts"], threads, runner)
