"""``summary(model, input_size)``: per-layer output shapes, parameters, MACs, FLOPs, other ops, and
receptive field / effective stride along sequential stacks (handbook §13, §14, §28).

How it counts: forward hooks on every leaf module apply the rules of
:mod:`visionkit.analysis.counting`; a ``TorchFunctionMode`` sees the tensor functions called *between*
leaf modules (residual additions, ``torch.cat``, functional pooling, matmul) and counts them as rows
named after the module whose ``forward`` called them (``layer1.0 (add)``). A leaf module or op without
a rule is listed in :attr:`ModelSummary.uncounted` — never counted as a silent zero.

Receptive field: while each leaf module consumes the previous one's output (a sequential stack), the
receptive field ``r`` and effective stride ``j`` are tracked: a layer with kernel ``k``, stride ``s``
and dilation ``d`` gives ``r += (d(k-1)) j`` and ``j *= s``. At the first branch (e.g. a residual
shortcut) tracking stops and later rows show ``None``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode, resolve_name

from visionkit.analysis.counting import LayerCost, _first_tensor, count_parameters, module_cost, op_cost

__all__ = ["LayerSummary", "ModelSummary", "summary"]


@dataclasses.dataclass
class LayerSummary:
    """One row: a leaf-module call or a counted tensor op between modules."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None
    params: int
    macs: int
    other_ops: int
    receptive_field: int | None = None
    effective_stride: int | None = None

    @property
    def flops(self) -> int:
        """``2 × MACs`` (multiply + add)."""
        return 2 * self.macs

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "flops": self.flops}


@dataclasses.dataclass
class ModelSummary:
    """Result of :func:`summary`. Totals: ``total_params`` (all parameters, shared ones once),
    ``total_macs``, ``total_flops = 2 × total_macs``, ``total_other_ops``; ``uncounted`` names every
    module/op that had no counting rule."""

    input_size: tuple[int, ...]
    layers: list[LayerSummary]
    total_params: int
    trainable_params: int
    uncounted: list[str]

    @property
    def total_macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def total_flops(self) -> int:
        return 2 * self.total_macs

    @property
    def total_other_ops(self) -> int:
        return sum(layer.other_ops for layer in self.layers)

    def layer(self, name: str) -> LayerSummary:
        """The first row called ``name`` (``KeyError`` if none)."""
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(f"no layer named {name!r} in the summary")

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_size": list(self.input_size),
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "total_macs": self.total_macs,
            "total_flops": self.total_flops,
            "total_other_ops": self.total_other_ops,
            "uncounted": list(self.uncounted),
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def to_rich_table(self, title: str | None = None, max_rows: int | None = None) -> Any:
        """A ``rich.table.Table``: one row per layer (the first ``max_rows`` if given) and the totals
        of *all* layers."""
        from rich.table import Table

        table = Table(title=title, show_footer=False)
        for column in (
            "layer",
            "type",
            "output shape",
            "params",
            "MACs",
            "FLOPs",
            "other ops",
            "RF",
            "stride",
        ):
            table.add_column(
                column, justify="left" if column in ("layer", "type", "output shape") else "right"
            )
        shown = self.layers if max_rows is None else self.layers[:max_rows]
        for row in shown:
            table.add_row(
                row.name, row.type, "×".join(map(str, row.output_shape)) if row.output_shape else "-",
                f"{row.params:,}", f"{row.macs:,}", f"{row.flops:,}", f"{row.other_ops:,}",
                "-" if row.receptive_field is None else str(row.receptive_field),
                "-" if row.effective_stride is None else str(row.effective_stride),
            )  # fmt: skip
        if len(shown) < len(self.layers):
            table.add_row(f"... {len(self.layers) - len(shown)} more rows", *[""] * 8)
        table.add_section()
        table.add_row(
            "total", "", "", f"{self.total_params:,}", f"{self.total_macs:,}", f"{self.total_flops:,}",
            f"{self.total_other_ops:,}", "", "",
        )  # fmt: skip
        return table

    def __str__(self) -> str:
        lines = [f"{'layer':<40} {'type':<20} {'output':<18} {'params':>12} {'MACs':>15}"]
        for row in self.layers:
            shape = "×".join(map(str, row.output_shape)) if row.output_shape else "-"
            lines.append(f"{row.name:<40} {row.type:<20} {shape:<18} {row.params:>12,} {row.macs:>15,}")
        lines.append(
            f"total params {self.total_params:,} | MACs {self.total_macs:,} "
            f"({self.total_macs / 1e9:.3f} G) | FLOPs {self.total_flops:,} | "
            f"other ops {self.total_other_ops:,}"
        )
        lines.append(f"uncounted: {', '.join(self.uncounted) if self.uncounted else 'none'}")
        return "\n".join(lines)


def _geometry(module: nn.Module) -> tuple[int, int] | None:
    """``(kernel extent, stride)`` of a spatial layer along H, ``(1, 1)`` for point-wise ones,
    ``None`` for layers whose output sees the whole input (global pooling, linear)."""

    def first(value: Any) -> int:
        return int(value[0]) if isinstance(value, (tuple, list)) else int(value)

    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return None  # upsampling: receptive-field arithmetic of a chain does not apply
    if isinstance(
        module, (nn.modules.conv._ConvNd, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)
    ):
        dilation = first(getattr(module, "dilation", 1))
        return dilation * (first(module.kernel_size) - 1) + 1, first(module.stride)
    if isinstance(
        module, (nn.Linear, nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
    ):
        return None
    if isinstance(module, nn.Upsample):
        return None
    return 1, 1


class _Recorder(TorchFunctionMode):
    """Counts tensor functions called outside leaf modules; hooks count the leaf modules."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.rows: list[LayerSummary] = []
        self.uncounted: list[str] = []
        self.leaf_depth = 0
        self.paused = False
        self.module_stack: list[str] = []
        self.seen_params: set[int] = set()
        self.chain_tensor: int | None = None  # id of the last output of the sequential chain
        self.chain_alive = True
        self.receptive_field, self.jump = 1, 1

    def __torch_function__(self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        if self.paused or self.leaf_depth > 0:
            return output
        self.paused = True
        try:
            name = resolve_name(func) or getattr(func, "__name__", repr(func))
            short = name.rsplit(".", 1)[-1] if not name.endswith("__get__") else "__get__"
            cost = op_cost(short, tuple(args), kwargs, output)
            owner = self.module_stack[-1] if self.module_stack else "<model>"
            if cost is None:
                entry = f"{name} in {owner}"
                if entry not in self.uncounted:
                    self.uncounted.append(entry)
            elif cost != (0, 0):
                y = _first_tensor(output)
                self.chain_alive = False  # an op between modules: no longer a plain chain
                shape = tuple(y.shape) if y is not None else None
                self.rows.append(
                    LayerSummary(f"{owner} ({short})", "op", shape, 0, cost.macs, cost.other_ops)
                )
        finally:
            self.paused = False
        return output

    def leaf_pre_hook(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        self.leaf_depth += 1

    def make_leaf_hook(self, name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            self.leaf_depth -= 1
            self.paused = True
            try:
                self._record_leaf(name, module, inputs, output)
            finally:
                self.paused = False

        return hook

    def _record_leaf(self, name: str, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        cost = module_cost(module, inputs, output)
        if cost is None:
            self.uncounted.append(f"{name} ({type(module).__name__})")
            cost = LayerCost()
        params = 0
        if id(module) not in self.seen_params:  # a module called twice owns its parameters once
            self.seen_params.add(id(module))
            params = count_parameters(module)
        x, y = _first_tensor(inputs), _first_tensor(output)
        rf = stride = None
        if self.chain_alive and x is not None and (self.chain_tensor is None or id(x) == self.chain_tensor):
            geometry = _geometry(module)
            if geometry is None:
                self.chain_alive = False
            else:
                kernel, step = geometry
                self.receptive_field += (kernel - 1) * self.jump
                self.jump *= step
                rf, stride = self.receptive_field, self.jump
                self.chain_tensor = id(y)
        else:
            self.chain_alive = False
        shape = tuple(y.shape) if y is not None else None
        self.rows.append(
            LayerSummary(name, type(module).__name__, shape, params, cost.macs, cost.other_ops, rf, stride)
        )

    def make_stack_hooks(self, name: str):  # type: ignore[no-untyped-def]
        def push(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            self.module_stack.append(name)

        def pop(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            self.module_stack.pop()

        return push, pop


def _validate_input_size(input_size: Sequence[int]) -> tuple[int, ...]:
    if isinstance(input_size, int) or not all(isinstance(v, int) and v > 0 for v in input_size):
        raise ValueError(f"summary: input_size must be a sequence of positive ints, got {input_size!r}")
    return tuple(input_size)


def summary(
    model: nn.Module,
    input_size: Sequence[int] = (1, 3, 224, 224),
    *,
    inputs: Any = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> ModelSummary:
    """Run one forward pass in eval mode and count parameters, MACs and other ops per layer.

    Args:
        model: any ``nn.Module`` taking one tensor (it is put in eval mode and restored afterwards).
        input_size: shape of the input, e.g. ``(1, 3, 224, 224)`` (ignored when ``inputs`` is given).
        inputs: an explicit input instead (a tensor, or e.g. a list of ``(C, H, W)`` images for detectors).
        dtype, device: of the generated zero input.

    Returns:
        :class:`ModelSummary` with per-layer rows, totals and the ``uncounted`` list.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        >>> result = summary(net, (1, 3, 16, 16))
        >>> result.total_params, result.total_macs, result.layers[-1].receptive_field
        (808, 202752, 5)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"summary: model must be an nn.Module, got {type(model).__name__}")
    if inputs is None:
        inputs = torch.zeros(_validate_input_size(input_size), dtype=dtype, device=device)
    recorder = _Recorder(model)
    handles = []
    for name, module in model.named_modules():
        if len(module._modules) == 0 or all(child is None for child in module._modules.values()):
            handles.append(module.register_forward_pre_hook(recorder.leaf_pre_hook))
            handles.append(
                module.register_forward_hook(recorder.make_leaf_hook(name or type(module).__name__))
            )
        else:
            if count_parameters(module, recurse=False):
                recorder.uncounted.append(
                    f"{name} ({type(module).__name__}: parameters used in its own forward)"
                )
            push, pop = recorder.make_stack_hooks(name or "<model>")
            handles.append(module.register_forward_pre_hook(push))
            handles.append(module.register_forward_hook(pop))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), recorder:
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    first_input = _first_tensor(inputs)
    return ModelSummary(
        input_size=tuple(first_input.shape) if first_input is not None else (),
        layers=recorder.rows,
        total_params=count_parameters(model),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        uncounted=recorder.uncounted,
    )
