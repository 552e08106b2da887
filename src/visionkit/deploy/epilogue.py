"""Epilogue fusion for eager inference on CPU (handbook §37: TensorRT fuses the bias, the activation and an
element-wise residual addition into the convolution's kernel, so the output is written once).

:func:`fuse_epilogues` rewrites a traced graph: a ``Conv2d`` followed by an activation, by an addition of
another tensor of the same shape (a residual shortcut) or by the addition and then an activation, becomes
one :class:`FusedConv2d` node. On CPU in float32 at inference it runs as **one** oneDNN convolution with
post-ops (``torch.ops.mkldnn._convolution_pointwise``, the kernel PyTorch's own inductor uses for the same
fusion): ``act(conv(x) + b [+ other])`` with no intermediate tensor, instead of three passes over memory.
Anywhere else (gradients needed, another device or dtype, autocast, tracing or export, a shape the kernel
does not take) it computes ``act(conv(x) [+ other])`` with the ordinary modules: always the same function.

The kernel is the one ``Conv2d`` itself calls on CPU (oneDNN), followed by the same element-wise operations
in float32; ReLU, ReLU6 (clamp) and the addition of one term are exactly rounded in both orders, so fused
and unfused agree to the convolution's own rounding (tests: the bound is derived there).

Example:
    >>> import torch
    >>> from torch import nn
    >>> block = FusedConv2d(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), residual=True).eval()
    >>> x = torch.randn(1, 4, 8, 8)
    >>> with torch.no_grad():
    ...     bool((block(x, x) - torch.relu(block.conv(x) + x)).abs().max() < 1e-5)
    True
"""

from __future__ import annotations

import operator
from collections import defaultdict

import torch
from torch import Tensor, fx, nn

__all__ = ["FusedConv2d", "fuse_epilogues", "fuse_sequential_epilogues", "module_calls", "onednn_available"]

# Activation module -> oneDNN post-op. Only activations that oneDNN and PyTorch both compute exactly or with
# one rounding (a selection, a clamp, one product): SiLU, sigmoid, tanh... stay separate operations, since
# oneDNN evaluates them with its own approximations, which carry no published error bound.
_ACTIVATIONS: dict[type, str] = {nn.ReLU: "relu", nn.ReLU6: "hardtanh", nn.LeakyReLU: "leaky_relu"}
_ACTIVATION_FUNCTIONS = {torch.relu: nn.ReLU, torch.nn.functional.relu: nn.ReLU}
_ADDS = (operator.add, operator.iadd, torch.add)


def onednn_available() -> bool:
    """Whether this PyTorch build has oneDNN's fused convolution kernel (CPU builds of x86 and ARM do)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


def _post_op(activation: nn.Module | None) -> tuple[str, list[float]]:
    if activation is None:
        return "none", []
    if isinstance(activation, nn.ReLU6):
        return "hardtanh", [0.0, 6.0]
    if isinstance(activation, nn.LeakyReLU):
        return "leaky_relu", [float(activation.negative_slope)]
    return "relu", []


class FusedConv2d(nn.Module):
    """``activation(conv(x) [+ other])`` as one oneDNN kernel on CPU at inference (module docstring).

    Args:
        conv: a plain ``nn.Conv2d`` (zero padding given as numbers).
        activation: ``None``, ``nn.ReLU``, ``nn.ReLU6`` or ``nn.LeakyReLU``.
        residual: whether ``forward`` takes the tensor ``other`` added before the activation.

    Shape:
        ``x``: ``(N, C_in, H, W)``; ``other``: the convolution's output shape ``(N, C_out, H', W')``;
        output: ``(N, C_out, H', W')``, in ``x``'s memory format.

    Example:
        >>> conv = FusedConv2d(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6())
        >>> with torch.no_grad():
        ...     conv(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 8, 16, 16])
    """

    def __init__(self, conv: nn.Conv2d, activation: nn.Module | None = None, residual: bool = False) -> None:
        super().__init__()
        if type(conv) is not nn.Conv2d:
            raise TypeError(f"FusedConv2d: conv must be an nn.Conv2d, got {type(conv).__name__}")
        if activation is not None and type(activation) not in _ACTIVATIONS:
            raise TypeError(
                f"FusedConv2d: activation {type(activation).__name__} has no oneDNN post-op "
                f"(supported: {', '.join(t.__name__ for t in _ACTIVATIONS)})"
            )
        self.conv = conv
        self.activation = activation
        self.residual = residual

    def extra_repr(self) -> str:
        return f"residual={self.residual}"

    def forward(self, x: Tensor, other: Tensor | None = None) -> Tensor:
        if self.residual and other is None:
            raise TypeError("FusedConv2d: residual=True needs the tensor `other` to add")
        if self._fast(x, other):
            conv = self.conv
            args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
            unary, scalars = _post_op(self.activation)
            kernel = torch.ops.mkldnn._convolution_pointwise
            if other is None:
                return kernel(x, conv.weight, conv.bias, *args, unary, scalars, "")
            if unary in ("none", "relu"):  # the binary kernel takes no other activation after the addition
                return kernel.binary(x, other, conv.weight, conv.bias, *args, "add", None,
                                     None if unary == "none" else unary, [], "")  # fmt: skip
            y = kernel.binary(x, other, conv.weight, conv.bias, *args, "add", None, None, [], "")
            return self.activation(y)  # type: ignore[misc]
        y = self.conv(x)
        if self.residual:
            y = y + other
        return self.activation(y) if self.activation is not None else y

    def _fast(self, x: Tensor, other: Tensor | None) -> bool:
        """Whether the oneDNN kernel computes exactly what the modules would (else they run)."""
        conv = self.conv
        weight = conv.weight
        if (
            torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.onnx.is_in_onnx_export() or not onednn_available() or torch.is_autocast_enabled("cpu")
        ):  # fmt: skip
            return False
        if x.device.type != "cpu" or x.dtype != torch.float32 or x.dim() != 4 or x.numel() == 0:
            return False
        if weight.dtype != torch.float32 or weight.device.type != "cpu" or conv.padding_mode != "zeros":
            return False
        if isinstance(conv.padding, str) or (conv.bias is not None and conv.bias.dtype != torch.float32):
            return False
        if x.shape[1] != conv.in_channels:
            return False  # the module raises its own error
        tensors = [t for t in (x, weight, conv.bias, other) if t is not None]
        if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
            return False
        if other is None:
            return True
        geometry = zip(x.shape[2:], conv.padding, conv.dilation, conv.kernel_size, conv.stride, strict=True)
        spatial = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in geometry]
        out = [x.shape[0], conv.out_channels, *spatial]
        return (
            isinstance(other, Tensor) and list(other.shape) == out and other.dtype == torch.float32
            and other.device.type == "cpu"
        )  # fmt: skip


def _activation_of(node: fx.Node, scope: nn.Module) -> nn.Module | None:
    """The activation module that ``node`` applies to its only argument, or ``None``."""
    if node.op == "call_module":
        module = scope.get_submodule(node.target)
        return module if type(module) in _ACTIVATIONS and len(node.args) == 1 and not node.kwargs else None
    if node.op == "call_function" and node.target in _ACTIVATION_FUNCTIONS and len(node.args) == 1:
        inplace = node.kwargs.get("inplace", False)
        return nn.ReLU(inplace=bool(inplace)) if set(node.kwargs) <= {"inplace"} else None
    return None


def module_calls(graph: fx.Graph) -> dict[str, int]:
    """How many times ``graph`` calls each submodule (a module called twice is never fused away).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU())
        >>> dict(module_calls(fx.symbolic_trace(net).graph))
        {'0': 1, '1': 1}
    """
    calls: dict[str, int] = defaultdict(int)
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] += 1
    return calls


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _drop_identities(scope: nn.Module, graph: fx.Graph) -> None:
    for node in list(graph.nodes):
        if node.op == "call_module" and type(scope.get_submodule(node.target)) is nn.Identity and node.args:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)


def fuse_epilogues(scope: nn.Module, graph: fx.Graph) -> tuple[fx.Graph, list[tuple[str, ...]]]:
    """Rewrite ``graph`` (traced from ``scope``) so that each ``Conv2d`` called once, whose output feeds only
    an activation, only an addition (then, optionally, only an activation), becomes one
    :class:`FusedConv2d` call registered on ``scope`` under the convolution's name.

    Returns:
        The rewritten graph and, per fusion, the names of the joined nodes (convolution first).

    Example:
        >>> class Block(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.conv = nn.Conv2d(4, 4, 3, padding=1)
        ...     def forward(self, x):
        ...         return torch.relu(self.conv(x) + x)
        >>> block = Block()
        >>> graph, joined = fuse_epilogues(block, fx.symbolic_trace(block).graph)
        >>> joined, type(block.conv).__name__
        ([('conv', 'add', 'relu')], 'FusedConv2d')
    """
    _drop_identities(scope, graph)
    calls = module_calls(graph)
    fused = []
    for node in list(graph.nodes):
        if node.op != "call_module" or calls[node.target] != 1 or len(node.args) != 1 or node.kwargs:
            continue
        conv = scope.get_submodule(node.target)
        if type(conv) is not nn.Conv2d:
            continue
        activation, chain, other = None, [node], None
        user = _only_user(node)
        if user is not None and user.op == "call_function" and user.target in _ADDS and len(user.args) == 2 \
                and not user.kwargs and node in user.args:  # fmt: skip
            operand = user.args[1] if user.args[0] is node else user.args[0]
            if isinstance(operand, fx.Node) and operand is not node:
                other, chain = operand, [node, user]
        after = _only_user(chain[-1])
        if after is not None and _activation_of(after, scope) is not None:
            activation, chain = _activation_of(after, scope), [*chain, after]
        if len(chain) == 1:
            continue
        replacement = FusedConv2d(conv, activation, residual=other is not None)
        scope.set_submodule(node.target, replacement)
        with graph.inserting_before(chain[-1]):
            args = (node.args[0],) if other is None else (node.args[0], other)
            new = graph.call_module(node.target, args)
        fused.append(tuple(str(n.target) if n.op == "call_module" else n.name for n in chain))
        chain[-1].replace_all_uses_with(new)
        for old in reversed(chain):
            graph.erase_node(old)
    graph.lint()
    return graph, fused


def fuse_sequential_epilogues(sequence: nn.Sequential) -> list[tuple[str, ...]]:
    """In place, in a plain ``nn.Sequential`` (its own ``forward``): each ``Conv2d`` followed (after
    ``nn.Identity`` children) by a supported activation becomes a :class:`FusedConv2d` and the activation an
    ``nn.Identity``, so the sequence keeps its length and indices (a backbone taps its stages by index).

    Returns:
        Per fusion, the child names (convolution, activation).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Identity(), nn.ReLU6())
        >>> fuse_sequential_epilogues(net), [type(m).__name__ for m in net]
        ([('0', '2')], ['FusedConv2d', 'Identity', 'Identity'])
    """
    if type(sequence).forward is not nn.Sequential.forward:
        return []
    children = list(sequence.named_children())
    fused = []
    for index, (name, conv) in enumerate(children):
        if type(conv) is not nn.Conv2d:
            continue
        after = index + 1
        while after < len(children) and type(children[after][1]) is nn.Identity:
            after += 1
        if after < len(children) and type(children[after][1]) in _ACTIVATIONS:
            act_name, activation = children[after]
            setattr(sequence, name, FusedConv2d(conv, activation))
            setattr(sequence, act_name, nn.Identity())
            fused.append((name, act_name))
    return fused
