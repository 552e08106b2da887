"""Structured channel pruning that rebuilds smaller layers (handbook §27, "parameter pruning").

Filters are ranked by the L1 norm of their weights (Li et al. 2017, "Pruning Filters for Efficient
ConvNets") or by the BatchNorm scaling factor |γ| (Liu et al. 2017, "Network Slimming"), channels that
the dependency graph (:mod:`visionkit.compress.graph`) ties together are ranked and removed as one unit,
and every affected ``Conv2d``/``BatchNorm``/``Linear`` is replaced by a smaller one holding the kept
slices of its weights. The result is an ordinary ``nn.Module`` with fewer channels — fewer MACs and a
lower latency on dense kernels, unlike a mask.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 4, 1))
    >>> result = prune_channels(net, torch.randn(2, 3, 8, 8), ratio=0.5)
    >>> result.model[0], result.model[3].in_channels
    (Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1)), 8)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from visionkit.compress.graph import ChannelGraph, PruneGroup, _tensors, trace_channels
from visionkit.engine.compressed import resize_layers
from visionkit.engine.compressed import resized_layer as _new_layer
from visionkit.errors import ConfigError, ExportError

__all__ = [
    "ChannelPruneResult",
    "channel_importance",
    "check_same_outputs",
    "prune_channels",
    "rebuild_layers",
    "resize_layers",
    "select_channels",
]

Criterion = Literal["l1", "bn"]


@dataclass
class ChannelPruneResult:
    """What :func:`prune_channels` did.

    Attributes:
        model: the pruned model (a deep copy; the input model is unchanged).
        shapes: layer name -> ``{"kind", "in", "out"}`` of every rebuilt layer (what :func:`resize_layers`
            needs to re-create the architecture before loading a state dict).
        kept: group (its producing layers joined by ``+``) -> ``(kept, total)`` channels.
    """

    model: nn.Module
    shapes: dict[str, dict[str, Any]]
    kept: dict[str, tuple[int, int]]


def check_ratio(ratio: float, key: str = "ratio") -> None:
    """Raise :class:`ConfigError` unless ``0 < ratio < 1``."""
    if not (isinstance(ratio, int | float) and 0.0 < ratio < 1.0):
        raise ConfigError(f"{key}={ratio!r}: expected a fraction strictly between 0 and 1")


def channel_importance(
    model: nn.Module, graph: ChannelGraph, criterion: Criterion = "l1"
) -> dict[int, float]:
    """Score of every channel class: higher is more important.

    ``"l1"``: the sum, over every conv/linear layer producing the class, of the L1 norm of that output
    filter ``Σ|W[c]|``. ``"bn"``: the sum of |γ| of the BatchNorm channels in the class; a class without
    BatchNorm scores ``inf`` (never pruned by this criterion).
    """
    scores: dict[int, float] = {}
    if criterion == "l1":
        for root, members in graph.producers().items():
            total = 0.0
            for name, index in members:
                weight = model.get_submodule(name).weight.detach()
                total += float(weight[index].abs().sum())
            scores[root] = total
        return scores
    if criterion != "bn":
        raise ConfigError(f"criterion={criterion!r}: expected 'l1' or 'bn'")
    for root in graph.producers():
        scores[root] = math.inf
    for record in graph.layers.values():
        if record.kind != "norm":
            continue
        gamma = model.get_submodule(record.name).weight.detach().abs()
        for index, atom in enumerate(record.outputs):
            root = graph.find(atom)
            scores[root] = float(gamma[index]) + (
                0.0 if math.isinf(scores.get(root, math.inf)) else scores[root]
            )
    return scores


def _kept_count(total: int, ratio: float, round_to: int) -> int:
    keep = total - round(ratio * total)
    if round_to > 1 and total > round_to:
        keep = min(total, max(round_to, round(keep / round_to) * round_to))
    return max(1, keep)


def select_channels(
    groups: Sequence[PruneGroup],
    scores: dict[int, float],
    ratio: float,
    *,
    scope: Literal["local", "global"] = "local",
    round_to: int = 1,
) -> set[int]:
    """Channel classes to remove: the lowest-scoring ``ratio`` of each group (``"local"``) or of all
    groups together (``"global"``, at least one channel kept per group). Ties: the later channel goes.

    Example:
        >>> select_channels([PruneGroup(("a",), [0, 1, 2, 3])], {0: 4.0, 1: 1.0, 2: 3.0, 3: 1.0}, 0.5)
        {1, 3}
    """
    check_ratio(ratio)
    if scope == "local":
        removed: set[int] = set()
        for group in groups:
            keep = _kept_count(len(group.channels), ratio, round_to)
            order = sorted(group.channels, key=lambda root: (-scores[root], root))
            removed.update(order[keep:])
        return removed
    if scope != "global":
        raise ConfigError(f"scope={scope!r}: expected 'local' or 'global'")
    everything = [(scores[root], -root, index) for index, g in enumerate(groups) for root in g.channels]
    budget = round(ratio * len(everything))
    left = [len(group.channels) for group in groups]
    removed = set()
    for _, negative_root, index in sorted(everything):
        if len(removed) == budget:
            break
        if left[index] > 1 and not math.isinf(scores[-negative_root]):
            removed.add(-negative_root)
            left[index] -= 1
    return removed


def _kept(graph: ChannelGraph, atoms: list[int], removed: set[int]) -> list[int]:
    return [index for index, atom in enumerate(atoms) if graph.find(atom) not in removed]


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


@torch.no_grad()
def _rebuild(old: nn.Module, kind: str, kept_in: list[int], kept_out: list[int]) -> nn.Module:
    new = _new_layer(old, kind, len(kept_in), len(kept_out))
    outs, ins = torch.tensor(kept_out, dtype=torch.long), torch.tensor(kept_in, dtype=torch.long)
    if kind in ("conv", "linear"):
        new.weight.copy_(old.weight[outs][:, ins])
    else:
        new.weight.copy_(old.weight[outs])
    if getattr(old, "bias", None) is not None:
        new.bias.copy_(old.bias[outs])
    if kind == "norm" and old.track_running_stats:
        new.running_mean.copy_(old.running_mean[outs])
        new.running_var.copy_(old.running_var[outs])
        new.num_batches_tracked.copy_(old.num_batches_tracked)
    new.train(old.training)
    return new


def rebuild_layers(model: nn.Module, graph: ChannelGraph, removed: set[int]) -> dict[str, dict[str, Any]]:
    """Replace, in place, every layer that loses channels by a smaller one with the kept weight slices.

    Returns:
        layer name -> ``{"kind", "in", "out"}`` of each rebuilt layer.
    """
    shapes: dict[str, dict[str, Any]] = {}
    for record in graph.layers.values():
        kept_in, kept_out = _kept(graph, record.inputs, removed), _kept(graph, record.outputs, removed)
        if len(kept_in) == len(record.inputs) and len(kept_out) == len(record.outputs):
            continue
        old = model.get_submodule(record.name)
        _set_module(model, record.name, _rebuild(old, record.kind, kept_in, kept_out))
        shapes[record.name] = {"kind": record.kind, "in": len(kept_in), "out": len(kept_out)}
    return shapes


def _shapes_of(value: Any) -> list[tuple[int, ...]]:
    return [tuple(t.shape) for t in _tensors(value)]


def check_same_outputs(original: nn.Module, pruned: nn.Module, example: Any) -> None:
    """Raise :class:`ExportError` unless ``pruned(example)`` has the output shapes of ``original(example)``
    (both run in eval mode, their modes restored)."""
    modes = original.training, pruned.training
    original.eval(), pruned.eval()
    try:
        with torch.no_grad():
            before, after = _shapes_of(original(example)), _shapes_of(pruned(example))
    finally:
        original.train(modes[0]), pruned.train(modes[1])
    if before != after:
        raise ExportError(f"the pruned model's output shapes changed: {before} -> {after}; not saving it")


def _groups_for_layers(
    graph: ChannelGraph, groups: list[PruneGroup], layers: Sequence[str]
) -> list[PruneGroup]:
    """The groups produced by ``layers``; a layer tied to layers not named is an error naming both."""
    chosen = []
    for name in layers:
        if name not in graph.layers:
            raise ConfigError(
                f"layers: no prunable layer named {name!r}; known: {sorted(graph.layers)[:12]}..."
            )
        if graph.layers[name].kind in ("norm", "depthwise"):
            raise ConfigError(
                f"layers: {name!r} is a {graph.layers[name].kind} layer, which keeps its input's channels; "
                "name the convolution that feeds it"
            )
        tied = [other for other in graph.tied_layers(name) if other not in layers]
        if tied:
            raise ExportError(
                f"layer {name!r}: its output channels are tied to {tied} (residual add, depthwise conv or "
                "concatenation); name those layers too, or prune without layers= to use the whole graph"
            )
        owned = [g for g in groups if name in g.layers]
        if not owned:
            raise ExportError(
                f"layer {name!r}: its output channels are protected (they reach the model output)"
            )
        chosen += [g for g in owned if g not in chosen]
    return chosen


def prune_channels(
    model: nn.Module,
    example: Any,
    ratio: float,
    *,
    criterion: Criterion = "l1",
    scope: Literal["local", "global"] = "local",
    round_to: int = 1,
    layers: Sequence[str] | None = None,
) -> ChannelPruneResult:
    """Remove ``ratio`` of the prunable channels and rebuild smaller layers (module docstring).

    Args:
        model: any model the channel tracer understands (unknown ops keep their channels).
        example: an input for one traced forward, e.g. ``torch.randn(2, 3, 32, 32)``.
        ratio: fraction of channels to remove, in (0, 1).
        criterion: ``"l1"`` (filter norm) or ``"bn"`` (|γ|, network slimming).
        scope: ``"local"`` (the ratio in every group) or ``"global"`` (one ranking over all groups).
        round_to: round kept channel counts to a multiple of this (8 keeps CPU kernels fast; local only).
        layers: prune only the groups these layers produce (every tied layer must be named).

    Returns:
        :class:`ChannelPruneResult`; the output shapes are checked equal to the original's.
    """
    check_ratio(ratio)
    if round_to < 1:
        raise ConfigError(f"round_to={round_to}: expected an integer >= 1")
    pruned = copy.deepcopy(model)
    graph = trace_channels(copy.deepcopy(model), example)  # a throwaway copy: a training-mode forward
    # updates BatchNorm running statistics
    groups = graph.groups()
    if layers is not None:
        groups = _groups_for_layers(graph, groups, layers)
    removed = select_channels(groups, channel_importance(pruned, graph, criterion), ratio, scope=scope,
                              round_to=round_to)  # fmt: skip
    shapes = rebuild_layers(pruned, graph, removed)
    check_same_outputs(model, pruned, example)
    kept = {
        "+".join(group.layers): (sum(root not in removed for root in group.channels), len(group.channels))
        for group in groups
    }
    return ChannelPruneResult(pruned, shapes, kept)
