"""Layer fusion for inference (handbook §37, TensorRT's vertical and horizontal fusion), in eager PyTorch.

* **Vertical**: a batch norm in evaluation mode is an affine map per channel, ``y = x·s + t`` with
  ``s = γ / sqrt(σ² + ε)``, ``t = β − μ·s``; after a convolution (or a transposed convolution, or a
  ``Linear``) it folds into that layer's weights, ``W' = W·s`` per output channel and ``b' = b·s + t``
  (Ioffe & Szegedy 2015, §3.2; TensorRT's "vertical fusion"). A ``ReLU`` / ``ReLU6`` applied to the result
  joins the layer in one :class:`ConvAct` module. The folded numbers are computed in float64 and rounded
  once to the layer's dtype.
* **Horizontal**: 1×1 convolutions (after vertical fusion, with the same activation) that read the same
  tensor with the same stride are one wider 1×1 convolution whose output is split by channel (Inception
  branches; TensorRT's "horizontal fusion"). The branch outputs are exactly the slices of the wide output.
* **Epilogue** (``epilogue=True``): each convolution's activation, and a residual addition with or without
  an activation after it, run inside the convolution's own kernel
  (:class:`~visionkit.deploy.epilogue.FusedConv2d`, oneDNN post-ops): the output is written once. This is
  what makes the fused model faster in eager PyTorch on CPU (with ``channels_last``); the ONNX and int8
  exports leave it off, their runtimes fuse the same way themselves.

Where the pieces are: each module is traced with ``torch.fx`` (batch norms, convolutions and activations
are leaves); a module that cannot be traced (data-dependent control flow: a detector's input checks, a
head that loops over pyramid levels) is skipped and its children are tried, so every traceable part of any
model is fused. A convolution is folded only when the batch norm is its only consumer and each is called
once in the traced module. Vertical fusion changes layers in place (the model keeps its class and
methods); a module whose graph is rewritten (a horizontal merge, an epilogue) keeps its class, methods and
attributes: its class becomes a subclass whose ``forward`` is the rewritten graph's code (such a model is
saved by its ``state_dict``, not pickled whole).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    >>> fused = fuse_model(net)
    >>> [type(m).__name__ for m in fused]
    ['ConvAct', 'Identity', 'Identity']
    >>> x = torch.randn(1, 3, 8, 8)
    >>> bool((fused(x) - net(x)).abs().max() < 1e-5)
    True
"""

from __future__ import annotations

import copy
import operator
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, fx, nn

from visionkit.deploy.epilogue import FusedConv2d, fuse_epilogues, fuse_sequential_epilogues, module_calls
from visionkit.nn.norm import BatchNorm2d as ReferenceBatchNorm2d
from visionkit.nn.norm import FrozenBatchNorm2d

__all__ = ["ConvAct", "FusionReport", "fold_batch_norm", "fuse_model", "merge_sibling_convs"]

NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, ReferenceBatchNorm2d, FrozenBatchNorm2d)
LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
ACTIVATIONS = (nn.ReLU, nn.ReLU6)


class ConvAct(nn.Sequential):
    """A (fused) layer followed by its activation: submodules ``0`` (the layer) and ``1`` (``ReLU`` or
    ``ReLU6``). Shape: that of the layer.

    Example:
        >>> ConvAct(nn.Conv2d(3, 4, 1), nn.ReLU())(torch.randn(1, 3, 2, 2)).min() >= 0
        tensor(True)
    """

    def __init__(self, layer: nn.Module, activation: nn.Module) -> None:
        super().__init__(layer, activation)


@dataclass
class FusionReport:
    """What :func:`fuse_model` did: ``folded`` (layer, norm[, activation]) names, ``merged`` pairs
    ``(wide module, names of the sibling convolutions it replaces)``, ``untraced`` modules that could
    not be traced (their children were tried instead), and ``epilogues``: per
    :class:`~visionkit.deploy.epilogue.FusedConv2d`, the joined nodes (convolution first)."""

    folded: list[tuple[str, ...]]
    merged: list[tuple[str, tuple[str, ...]]]
    untraced: list[str]
    epilogues: list[tuple[str, ...]] = field(default_factory=list)


class _Tracer(fx.Tracer):
    """fx tracer whose leaves are torch's modules plus our batch norms and :class:`ConvAct`."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        leaf = isinstance(m, (*NORMS, ConvAct, FusedConv2d))
        return leaf or super().is_leaf_module(m, module_qualified_name)


def _trace(module: nn.Module) -> fx.Graph | None:
    try:
        return _Tracer().trace(module)
    except Exception:  # any failure means "not traceable": its children are tried instead
        return None


class _FeaturesOf(nn.Module):
    """Traces a backbone's ``forward_features`` (its ``forward`` checks the input shape, which fx cannot
    trace); the backbone's modules are then named ``inner.<name>``."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor):
        return self.inner.forward_features(x)


def _scopes(
    module: nn.Module, prefix: str, untraced: list[str], features: bool = False, containers: bool = True
) -> Iterator[tuple[str, nn.Module, fx.Graph]]:
    """``(name, module, graph)`` of the outermost traceable modules (see the module docstring). With
    ``features``, a module whose ``forward`` cannot be traced but has a ``forward_features`` method is
    traced through a :class:`_FeaturesOf` wrapper (usable for in-place changes only). Without
    ``containers``, an ``nn.Sequential`` is never a scope itself (its children are): code that indexes or
    iterates it (a backbone's stages) keeps working after a rewrite."""
    if isinstance(module, (*NORMS, *LAYERS, *ACTIVATIONS, ConvAct, FusedConv2d)) or not any(
        True for _ in module.children()
    ):
        return
    if not containers and isinstance(module, nn.Sequential):
        for name, child in module.named_children():
            yield from _scopes(child, _join(prefix, name), untraced, features, containers)
        return
    graph = _trace(module)
    if graph is not None:
        yield prefix, module, graph
        return
    if features and callable(getattr(module, "forward_features", None)):
        wrapper = _FeaturesOf(module)
        graph = _trace(wrapper)
        if graph is not None:
            yield prefix, wrapper, graph
            return
    untraced.append(prefix or "<model>")
    for name, child in module.named_children():
        yield from _scopes(child, _join(prefix, name), untraced, features, containers)


def fold_batch_norm(layer: nn.Module, norm: nn.Module) -> nn.Module:
    """A copy of ``layer`` (``Conv2d``, ``ConvTranspose2d`` or ``Linear``) with the evaluation-mode batch norm
    ``norm`` that follows it folded in: ``W' = W·s``, ``b' = b·s + t`` (module docstring), computed in float64
    and rounded once to the layer's dtype. The result always has a bias.

    Example:
        >>> conv, bn = nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3).eval()
        >>> fold_batch_norm(conv, bn).bias.shape
        torch.Size([3])
    """
    scale, shift = _affine_of(norm)
    fused = copy.deepcopy(layer)
    weight = layer.weight.detach().double()
    if isinstance(layer, nn.ConvTranspose2d):  # weight [C_in, C_out / groups, kh, kw]
        g = layer.groups
        shaped = weight.view(g, weight.shape[0] // g, weight.shape[1], *weight.shape[2:])
        folded = (shaped * scale.view(g, 1, -1, 1, 1)).view_as(weight)
    else:  # [C_out, ...]
        folded = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
    bias = layer.bias.detach().double() if layer.bias is not None else torch.zeros_like(scale)
    dtype = layer.weight.dtype
    fused.weight = nn.Parameter(folded.to(dtype), requires_grad=layer.weight.requires_grad)
    fused.bias = nn.Parameter((bias * scale + shift).to(dtype), requires_grad=layer.weight.requires_grad)
    return fused


def _affine_of(norm: nn.Module) -> tuple[Tensor, Tensor]:
    """``(s, t)`` of an evaluation-mode batch norm, in float64."""
    mean, var = norm.running_mean.double(), norm.running_var.double()
    gamma = norm.weight.detach().double() if norm.weight is not None else torch.ones_like(mean)
    beta = norm.bias.detach().double() if norm.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + norm.eps)
    return scale, beta - mean * scale


def _foldable(layer: nn.Module, norm: nn.Module) -> bool:
    if getattr(norm, "running_mean", None) is None or norm.training:
        return False
    if isinstance(norm, nn.BatchNorm1d):
        return isinstance(layer, nn.Linear) and norm.num_features == layer.out_features
    channels = layer.out_channels if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)) else None
    return channels == norm.num_features


def _single_module_user(
    node: fx.Node, calls: dict[str, int], scope: nn.Module
) -> tuple[fx.Node, nn.Module] | None:
    """The only user of ``node`` when it is a module called once in the scope."""
    if len(node.users) != 1:
        return None
    (user,) = node.users
    if user.op != "call_module" or calls[user.target] != 1 or user.args[:1] != (node,):
        return None
    return user, scope.get_submodule(user.target)


def _vertical(scope: nn.Module, graph: fx.Graph) -> list[tuple[str, ...]]:
    """Fold every (layer → norm [→ activation]) chain of ``graph`` into ``scope`` in place."""
    calls = module_calls(graph)
    folded = []
    for node in list(graph.nodes):
        if node.op != "call_module" or calls[node.target] != 1:
            continue
        layer = scope.get_submodule(node.target)
        if not isinstance(layer, LAYERS):
            continue
        found = _single_module_user(node, calls, scope)
        if found is None or not isinstance(found[1], NORMS) or not _foldable(layer, found[1]):
            continue
        norm_node, norm = found
        fused: nn.Module = fold_batch_norm(layer, norm)
        names = (node.target, norm_node.target)
        scope.set_submodule(norm_node.target, nn.Identity())
        activation = _single_module_user(norm_node, calls, scope)
        if activation is not None and isinstance(activation[1], ACTIVATIONS):
            fused = ConvAct(fused, copy.deepcopy(activation[1]))
            scope.set_submodule(activation[0].target, nn.Identity())
            names += (activation[0].target,)
        scope.set_submodule(node.target, fused)
        folded.append(names)
    return folded


def _merge_key(module: nn.Module) -> tuple | None:
    """Settings that sibling 1×1 convolutions must share to be merged (``None``: not mergeable)."""
    conv, act = (module[0], module[1]) if isinstance(module, ConvAct) else (module, None)
    if not isinstance(conv, nn.Conv2d) or type(conv) is not nn.Conv2d:
        return None
    if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.padding_mode != "zeros":
        return None
    return (conv.stride, conv.padding, conv.dilation, conv.in_channels, conv.weight.dtype, conv.weight.device,
            type(act), getattr(act, "inplace", None))  # fmt: skip


def merge_sibling_convs(
    scope: nn.Module, graph: fx.Graph
) -> tuple[fx.Graph, list[tuple[str, tuple[str, ...]]]]:
    """Merge the groups of sibling 1×1 convolutions of ``graph`` (module docstring): one wide convolution
    (registered on ``scope`` as ``merged_1x1_<k>``), a ``torch.split`` and one slice per former branch.
    Returns the rewritten graph and ``(wide name, member names)`` per group."""
    calls = module_calls(graph)
    groups: dict[tuple, list[fx.Node]] = defaultdict(list)
    for node in graph.nodes:
        if node.op == "call_module" and calls[node.target] == 1 and len(node.args) == 1 and not node.kwargs:
            key = _merge_key(scope.get_submodule(node.target))
            if key is not None and isinstance(node.args[0], fx.Node):
                groups[(node.args[0], *key)].append(node)
    merged = []
    for index, nodes in enumerate(group for group in groups.values() if len(group) > 1):
        modules = [scope.get_submodule(node.target) for node in nodes]
        name = f"merged_1x1_{index}"
        while hasattr(scope, name):
            name += "_"
        scope.add_module(name, _wide_conv(modules))
        sizes = [(m[0] if isinstance(m, ConvAct) else m).out_channels for m in modules]
        with graph.inserting_before(nodes[0]):
            wide = graph.call_module(name, (nodes[0].args[0],))
            parts = graph.call_function(torch.split, (wide, sizes), {"dim": 1})
            for k, node in enumerate(nodes):
                node.replace_all_uses_with(graph.call_function(operator.getitem, (parts, k)))
        for node in nodes:
            graph.erase_node(node)
        merged.append((name, tuple(node.target for node in nodes)))
    graph.lint()
    return graph, merged


def _wide_conv(modules: list[nn.Module]) -> nn.Module:
    convs = [m[0] if isinstance(m, ConvAct) else m for m in modules]
    first = convs[0]
    wide = nn.Conv2d(
        first.in_channels, sum(c.out_channels for c in convs), 1, first.stride, first.padding,
        first.dilation, bias=True, device=first.weight.device, dtype=first.weight.dtype,
    )  # fmt: skip
    with torch.no_grad():
        wide.weight.copy_(torch.cat([c.weight for c in convs]))
        wide.bias.copy_(
            torch.cat([c.bias if c.bias is not None else torch.zeros(c.out_channels, dtype=c.weight.dtype,
                                                                   device=c.weight.device) for c in convs])
        )  # fmt: skip
    wide.requires_grad_(first.weight.requires_grad)
    return ConvAct(wide, copy.deepcopy(modules[0][1])) if isinstance(modules[0], ConvAct) else wide


def fuse_model(
    model: nn.Module,
    *,
    vertical: bool = True,
    horizontal: bool = True,
    epilogue: bool = False,
    inplace: bool = False,
) -> nn.Module:
    """The model with batch norms folded and sibling 1×1 convolutions merged (module docstring).

    Args:
        model: any model; it is put in evaluation mode (the fold uses the running statistics).
        vertical: fold layer → batch norm (→ ReLU/ReLU6).
        horizontal: merge sibling 1×1 convolutions.
        epilogue: also join each convolution's activation and residual addition into one
            :class:`~visionkit.deploy.epilogue.FusedConv2d` (one oneDNN kernel in eager CPU inference; the
            fastest eager model, with ``channels_last``). Off by default: the ONNX and int8 paths export
            the graph without it (their runtimes fuse by themselves).
        inplace: change ``model`` itself instead of a deep copy.

    Returns:
        The fused model (evaluation mode), with the :class:`FusionReport` as ``fused.fusion_report``.
        Same inputs and outputs as ``model``, equal to rounding.

    Example:
        >>> from visionkit.models import create_model
        >>> fused = fuse_model(create_model("resnet18", num_classes=10))
        >>> len(fused.fusion_report.folded)
        20
    """
    model = (model if inplace else copy.deepcopy(model)).eval()
    report = FusionReport([], [], [])
    if vertical:
        for prefix, scope, graph in list(_scopes(model, "", report.untraced, features=True)):
            strip = len("inner.") if isinstance(scope, _FeaturesOf) else 0
            folded = _vertical(scope, graph)
            report.folded += [tuple(_join(prefix, n[strip:]) for n in names) for names in folded]
    if horizontal:
        for prefix, scope, graph in list(_scopes(model, "", [], containers=False)):
            graph, merged = merge_sibling_convs(scope, graph)
            if not merged:
                continue
            report.merged += [(_join(prefix, w), tuple(_join(prefix, n) for n in ns)) for w, ns in merged]
            _rewritten(scope, graph, removed=tuple(n for _, ns in merged for n in ns))
    if epilogue:
        model = _epilogues(model, report)
    model.fusion_report = report  # type: ignore[assignment]
    return model.eval()


def _epilogues(model: nn.Module, report: FusionReport) -> nn.Module:
    """The epilogue pass of :func:`fuse_model`: every ``ConvAct`` of a ``Conv2d``, every conv → activation
    pair of a plain ``nn.Sequential`` (in place), then the traced graphs (conv → add → activation)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, ConvAct) and type(module[0]) is nn.Conv2d:
            kernel = FusedConv2d(module[0], module[1])
            if name:
                model.set_submodule(name, kernel)
            else:
                model = kernel
            report.epilogues.append((name,))
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Sequential):
            report.epilogues += [tuple(_join(name, n) for n in p) for p in fuse_sequential_epilogues(module)]
    for prefix, scope, graph in list(_scopes(model, "", [], containers=False)):
        graph, joined = fuse_epilogues(scope, graph)
        if joined:
            report.epilogues += [tuple(_join(prefix, n) for n in names) for names in joined]
            _rewritten(scope, graph)
    return model


def _rewritten(scope: nn.Module, graph: fx.Graph, removed: tuple[str, ...] = ()) -> nn.Module:
    """``scope`` itself, now computing ``graph``: its class becomes a subclass of its own class whose
    ``forward`` is the graph's generated code, so its methods, properties and attributes stay (a detector
    asks its neck for ``output_shape()``); the submodules ``removed`` (merged into wider ones) are deleted."""
    code = fx.GraphModule(scope, graph, class_name=type(scope).__name__)
    base = type(scope).__bases__[0] if getattr(type(scope), "_fused_forward", False) else type(scope)
    scope.__class__ = type(base.__name__, (base,), {"forward": type(code).forward, "_fused_forward": True,
                                                     "__module__": base.__module__})  # fmt: skip
    for name in removed:
        parent, _, leaf = name.rpartition(".")
        delattr(scope.get_submodule(parent) if parent else scope, leaf)
    return scope


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
