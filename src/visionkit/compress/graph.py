"""Channel dependency graph: which channels of which layers must be pruned together (handbook §27).

Removing output channel ``c`` of a convolution is only valid if every consumer of that channel drops it
too: the BatchNorm after it, the next convolution's input channel ``c``, and everything tied to it —
a residual ``a + b`` ties channel ``c`` of ``a`` to channel ``c`` of ``b``; a depthwise convolution ties
its input channel to its output channel; a concatenation shifts channels by the widths before them; a
``flatten`` before a ``Linear`` fans one channel out to ``H·W`` features.

:func:`trace_channels` runs the model once on an example input and records, for every tensor, which
*channel atom* each of its channels is (an integer). Layers that create channels (a ``Conv2d`` with
``groups=1``, a ``Linear``) create new atoms; operations that pass channels through keep them; a residual
add unites atoms (union-find). Atoms that reach the model's input or output, or an operation this module
does not understand, are *protected*: never pruned, so the model's interface and every unknown op stay
intact. Each union-find class is one prunable unit: a set of channels that are kept or removed together.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    >>> graph = trace_channels(net, torch.randn(2, 3, 8, 8))
    >>> [(group.layers, len(group.channels)) for group in graph.groups()]
    [(('0',), 8)]
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from visionkit.errors import ExportError

__all__ = ["ChannelGraph", "LayerRecord", "PruneGroup", "trace_channels"]

PASS_THROUGH_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Hardswish,
    nn.Hardsigmoid, nn.Hardtanh, nn.Dropout, nn.Dropout2d, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)  # fmt: skip
PASS_THROUGH_FUNCTIONS = {
    "relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "silu", "gelu", "tanh", "elu",
    "leaky_relu", "hardswish", "dropout", "contiguous", "clone", "adaptive_avg_pool2d",
    "adaptive_max_pool2d", "max_pool2d", "avg_pool2d", "mean", "sum", "amax", "detach", "to",
}  # fmt: skip
ELEMENTWISE_FUNCTIONS = {
    "add", "add_", "__add__", "__radd__", "__iadd__", "sub", "__sub__", "__rsub__", "mul", "mul_",
    "__mul__", "__rmul__", "__imul__", "div", "__truediv__",
}  # fmt: skip
RESHAPE_FUNCTIONS = {"flatten", "view", "reshape"}
CONCAT_FUNCTIONS = {"cat", "concat", "concatenate"}


@dataclass
class LayerRecord:
    """One prunable layer as the example forward used it.

    Attributes:
        name: qualified module name (``model.get_submodule(name)``).
        kind: ``"conv"`` (``groups=1``), ``"depthwise"``, ``"linear"`` or ``"norm"`` (BatchNorm).
        inputs: the channel atom of each input channel (features for a ``Linear``).
        outputs: the channel atom of each output channel (the same list as ``inputs`` for depthwise/norm).
    """

    name: str
    kind: str
    inputs: list[int]
    outputs: list[int]


@dataclass
class PruneGroup:
    """Channels of the same set of producing layers: ``channels[i]`` is one class (a root atom)."""

    layers: tuple[str, ...]
    channels: list[int] = field(default_factory=list)


class ChannelGraph:
    """Union-find over channel atoms plus the layers that read and write them (see the module docstring)."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.protected: set[int] = set()
        self.layers: dict[str, LayerRecord] = {}
        self.reasons: dict[int, str] = {}

    def new_atoms(self, count: int, protect: str | None = None) -> list[int]:
        """``count`` fresh atoms; ``protect`` (a reason) marks them never-prunable."""
        start = len(self.parent)
        self.parent.extend(range(start, start + count))
        atoms = list(range(start, start + count))
        if protect is not None:
            self.protect(atoms, protect)
        return atoms

    def find(self, atom: int) -> int:
        """The class (root atom) of ``atom``."""
        root = atom
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[atom] != root:  # path compression
            self.parent[atom], atom = root, self.parent[atom]
        return root

    def unite(self, first: list[int], second: list[int]) -> None:
        """Tie ``first[i]`` to ``second[i]`` for every ``i`` (the lists have equal length)."""
        for a, b in zip(first, second, strict=True):
            root_a, root_b = self.find(a), self.find(b)
            if root_a != root_b:
                self.parent[max(root_a, root_b)] = min(root_a, root_b)

    def protect(self, atoms: list[int], reason: str) -> None:
        """Mark ``atoms`` as never prunable, remembering why (for error messages)."""
        for atom in atoms:
            self.protected.add(atom)
            self.reasons.setdefault(atom, reason)

    def is_protected(self, atom: int) -> bool:
        """Whether the class of ``atom`` holds a protected atom."""
        root = self.find(atom)
        return any(self.find(p) == root for p in self.protected)

    def protected_classes(self) -> set[int]:
        """Roots of every class holding a protected atom."""
        return {self.find(atom) for atom in self.protected}

    def producers(self) -> dict[int, list[tuple[str, int]]]:
        """Class root -> ``(layer, output index)`` of every conv/linear/depthwise channel in it."""
        result: dict[int, list[tuple[str, int]]] = {}
        for record in self.layers.values():
            if record.kind == "norm":
                continue
            for index, atom in enumerate(record.outputs):
                result.setdefault(self.find(atom), []).append((record.name, index))
        return result

    def groups(self) -> list[PruneGroup]:
        """Prunable classes grouped by the layers that produce them, in first-layer order."""
        protected = self.protected_classes()
        by_layers: dict[tuple[str, ...], PruneGroup] = {}
        for root, members in self.producers().items():
            if root in protected:
                continue
            layers = tuple(dict.fromkeys(name for name, _ in members))
            by_layers.setdefault(layers, PruneGroup(layers)).channels.append(root)
        return list(by_layers.values())

    def tied_layers(self, name: str) -> list[str]:
        """Other conv/linear layers whose output channels are tied to those of layer ``name`` (depthwise
        convolutions in between are not listed: they follow the channel they filter)."""
        record = self.layers[name]
        roots = {self.find(a) for a in record.outputs}
        others = {
            layer
            for root, members in self.producers().items()
            if root in roots
            for layer, _ in members
            if self.layers[layer].kind != "depthwise"  # a depthwise filter follows its input channel
        }
        return sorted(others - {name})


def _tensors(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)


class _ChannelTracer(TorchFunctionMode):
    """Records channel atoms of every tensor during one forward (module hooks + functions between them)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.graph = ChannelGraph()
        self.maps: dict[int, list[int]] = {}
        self.alive: list[Tensor] = []  # keep traced tensors alive so that their ids are not reused
        self.names = {id(module): name for name, module in model.named_modules()}
        self.leaf_depth = 0
        self.paused = False
        self.visited: set[str] = set()

    # -- tensor maps --------------------------------------------------------------------------------
    def atoms(self, tensor: Tensor, where: str) -> list[int]:
        """The channel atoms of ``tensor`` (dim 1); a tensor never seen before gets protected atoms."""
        if id(tensor) not in self.maps:
            channels = tensor.shape[1] if tensor.dim() >= 2 else 1
            self.assign(tensor, self.graph.new_atoms(channels, f"a tensor of unknown origin in {where}"))
        return self.maps[id(tensor)]

    def assign(self, tensor: Tensor, atoms: list[int]) -> None:
        self.maps[id(tensor)] = atoms
        self.alive.append(tensor)

    def opaque(self, inputs: list[Tensor], outputs: list[Tensor], where: str) -> None:
        """An operation we cannot see through: protect its inputs, give its outputs protected atoms."""
        for tensor in inputs:
            if id(tensor) in self.maps:
                self.graph.protect(self.maps[id(tensor)], f"used by {where}")
        for tensor in outputs:
            channels = tensor.shape[1] if tensor.dim() >= 2 else 1
            self.assign(tensor, self.graph.new_atoms(channels, f"produced by {where}"))

    # -- modules ------------------------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        self.leaf_depth += 1

    def hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        self.leaf_depth -= 1
        self.paused = True
        name = self.names.get(id(module), type(module).__name__)
        self.visited.add(name)
        try:
            self.record_module(name, module, inputs, output)
        finally:
            self.paused = False

    def record_module(self, name: str, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        ins, outs = list(_tensors(inputs)), list(_tensors(output))
        where = f"layer {name!r} ({type(module).__name__})"
        if len(ins) != 1 or len(outs) != 1 or ins[0].dim() < 2:
            self.opaque(ins, outs, where)
            return
        x, y = ins[0], outs[0]
        source = self.atoms(x, where)
        if isinstance(module, nn.Conv2d):
            self.record_conv(name, module, source, y, where)
        elif isinstance(module, nn.Linear) and x.dim() == 2:
            self.record_layer(name, "linear", source, y, self.graph.new_atoms(module.out_features))
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d) and module.affine:
            self.record_layer(name, "norm", source, y, source)
        elif isinstance(module, nn.Flatten):
            self.reshape(x, y, where)
        elif isinstance(module, PASS_THROUGH_MODULES) and y.dim() >= 2 and y.shape[1] == x.shape[1]:
            self.assign(y, source)
        else:
            self.opaque(ins, outs, where)

    def record_conv(self, name: str, conv: nn.Conv2d, source: list[int], y: Tensor, where: str) -> None:
        if conv.groups == 1:
            self.record_layer(name, "conv", source, y, self.graph.new_atoms(conv.out_channels))
        elif conv.groups == conv.in_channels == conv.out_channels:
            self.record_layer(name, "depthwise", source, y, source)
        else:  # grouped convolution: channels are tied within groups in ways we do not rebuild
            self.graph.protect(source, f"input of grouped {where}")
            self.assign(y, self.graph.new_atoms(conv.out_channels, f"produced by grouped {where}"))

    def record_layer(self, name: str, kind: str, source: list[int], y: Tensor, outputs: list[int]) -> None:
        previous = self.graph.layers.get(name)
        if previous is None:
            self.graph.layers[name] = LayerRecord(name, kind, list(source), list(outputs))
        else:  # the same layer applied twice: both calls must drop the same channels
            self.graph.unite(previous.inputs, source)
            if kind in ("conv", "linear"):
                outputs = previous.outputs
        self.assign(y, outputs)

    # -- functions ----------------------------------------------------------------------------------
    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        if self.paused or self.leaf_depth > 0:
            return output
        outs = list(_tensors(output))
        if not outs:
            return output
        self.paused = True
        try:
            name = getattr(func, "__name__", repr(func))
            self.record_function(name, list(_tensors((args, kwargs))), outs, args, kwargs)
        finally:
            self.paused = False
        return output

    def record_function(
        self, name: str, ins: list[Tensor], outs: list[Tensor], args: Any, kwargs: Any
    ) -> None:
        where = f"operation {name!r}"
        mapped = [t for t in ins if id(t) in self.maps]
        y = outs[0]
        if len(outs) != 1 or not mapped or y.dim() < 2:
            self.opaque(ins, outs, where)
        elif name in PASS_THROUGH_FUNCTIONS and mapped[0].dim() >= 2 and y.shape[:2] == mapped[0].shape[:2]:
            self.assign(y, self.maps[id(mapped[0])])
        elif name in ELEMENTWISE_FUNCTIONS:
            self.elementwise(ins, y, where)
        elif name in RESHAPE_FUNCTIONS and len(mapped) == 1:
            self.reshape(mapped[0], y, where)
        elif name in CONCAT_FUNCTIONS:
            self.concat(args, kwargs, ins, y, where)
        else:
            self.opaque(ins, outs, where)

    def elementwise(self, ins: list[Tensor], y: Tensor, where: str) -> None:
        result: list[int] | None = None
        for tensor in ins:
            same_channels = tensor.dim() == y.dim() and tensor.shape[1] == y.shape[1]
            if id(tensor) in self.maps and same_channels:
                atoms = self.maps[id(tensor)]
                if result is None:
                    result = list(atoms)
                else:
                    self.graph.unite(result, atoms)
            elif tensor.dim() >= 2 and tensor.shape[1] == y.shape[1] and y.shape[1] > 1:
                result = None  # a per-channel constant we cannot slice: protect everything
                break
        if result is None:
            self.opaque(ins, [y], where)
            return
        for tensor in ins:  # broadcast inputs (one channel) feed every channel: keep them whole
            if id(tensor) in self.maps and tensor.dim() >= 2 and tensor.shape[1] != y.shape[1]:
                self.graph.protect(self.maps[id(tensor)], f"broadcast in {where}")
        self.assign(y, result)

    def reshape(self, x: Tensor, y: Tensor, where: str) -> None:
        atoms = self.atoms(x, where)
        if y.dim() >= 2 and x.dim() >= 2 and y.shape[:2] == x.shape[:2]:
            self.assign(y, atoms)
        elif y.dim() == 2 and x.dim() > 2 and y.shape[0] == x.shape[0] and y.shape[1] == x[0].numel():
            spread = math.prod(x.shape[2:])  # flatten: channel c becomes features c*spread ... +spread-1
            self.assign(y, [atom for atom in atoms for _ in range(spread)])
        else:
            self.opaque([x], [y], where)

    def concat(self, args: Any, kwargs: Any, ins: list[Tensor], y: Tensor, where: str) -> None:
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        parts = list(_tensors(args[0] if args else kwargs.get("tensors", ())))
        if (dim % y.dim()) != 1 or not parts:
            self.opaque(ins, [y], where)
            return
        self.assign(y, [atom for part in parts for atom in self.atoms(part, where)])


def trace_channels(model: nn.Module, example: Any) -> ChannelGraph:
    """Run ``model(example)`` once (no gradients, on the model as it is) and build its channel graph.

    Args:
        model: any ``nn.Module``; leaf modules are classified by type, functions between them by name.
        example: the input (a tensor ``(N, C, H, W)`` or what the model takes). Use ``N >= 2`` when the
            model is in training mode (BatchNorm needs more than one value per channel).

    Returns:
        The :class:`ChannelGraph`. The example input's and the output's channels are protected.

    Raises:
        ExportError: a layer with parameters was not reached by the forward (its consumers are unknown).
    """
    tracer = _ChannelTracer(model)
    handles = []
    for module in model.modules():
        if not any(True for _ in module.children()):
            handles.append(module.register_forward_pre_hook(tracer.pre_hook))
            handles.append(module.register_forward_hook(tracer.hook))
    try:
        for tensor in _tensors(example):
            tracer.assign(
                tensor, tracer.graph.new_atoms(tensor.shape[1] if tensor.dim() >= 2 else 1, "model input")
            )
        with torch.no_grad(), tracer:
            output = model(example)
    finally:
        for handle in handles:
            handle.remove()
    for tensor in _tensors(output):
        tracer.graph.protect(tracer.atoms(tensor, "the model output"), "model output")
    _check_reached(model, tracer)
    return tracer.graph


def _check_reached(model: nn.Module, tracer: _ChannelTracer) -> None:
    missed = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear) and name not in tracer.visited
    ]
    if missed:
        raise ExportError(
            f"layers {missed} were not used by the example forward, so the channels they read are unknown; "
            "trace in the mode that uses them (e.g. model.train() for auxiliary heads)"
        )
