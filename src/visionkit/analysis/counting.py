"""Cost rules: parameters, multiply-accumulates (MACs) and other arithmetic for layers and tensor ops.

Conventions (stated, not guessed):

* **MACs** are the multiply-accumulates of weight layers and matrix products only: convolutions
  (``out elements × in_channels/groups × kernel area``; dilation does not change it), transposed
  convolutions (``in elements × out_channels/groups × kernel area``), linear layers
  (``out elements × in_features``) and matmul/bmm (``out elements × inner dim``). Biases are not
  MACs. This is what torchvision, the MobileNet papers and torchinfo report
  (resnet50 at 224: 4.089 G).
* **FLOPs = 2 × MACs** (one multiply and one add each).
* **Other ops** counts every remaining arithmetic operation separately, so nothing is hidden:
  normalization 2 per element (scale, shift — the inference form), activations 1 per element,
  element-wise add/sub/mul/div 1 per output element, max/avg pooling ``kernel area`` per output
  element, adaptive/global pooling 1 per input element, bilinear resampling 4 per output element,
  nearest resampling 0 (a copy).
* Layers known to cost nothing (dropout, identity, flatten, cat, reshapes, indexing) are counted as 0
  on purpose. Anything else is reported as *uncounted* by name — never a silent zero.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["FREE_OPS", "LayerCost", "module_cost", "op_cost"]


class LayerCost(tuple):
    """``(macs, other_ops)`` for one call; ``None`` from the cost functions means "no rule"."""

    def __new__(cls, macs: int = 0, other_ops: int = 0) -> LayerCost:
        return super().__new__(cls, (int(macs), int(other_ops)))

    @property
    def macs(self) -> int:
        return self[0]

    @property
    def other_ops(self) -> int:
        return self[1]


_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
_ACTIVATIONS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Softmax, nn.LogSoftmax,
)  # fmt: skip
_FREE_MODULES = (nn.Dropout, nn.Dropout2d, nn.Dropout1d, nn.Dropout3d, nn.AlphaDropout, nn.Identity,
                 nn.Flatten, nn.Unflatten, nn.ZeroPad2d, nn.ConstantPad2d, nn.ReflectionPad2d,
                 nn.ReplicationPad2d, nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle)  # fmt: skip


def _first_tensor(values: Any) -> Tensor | None:
    if isinstance(values, Tensor):
        return values
    if isinstance(values, (list, tuple)):
        for value in values:
            found = _first_tensor(value)
            if found is not None:
                return found
    if isinstance(values, dict):
        return _first_tensor(list(values.values()))
    return None


def _kernel_area(kernel_size: Any) -> int:
    return math.prod(kernel_size) if isinstance(kernel_size, (tuple, list)) else int(kernel_size) ** 2


def module_cost(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> LayerCost | None:
    """Cost of one call of a leaf module, or ``None`` when there is no rule for its type."""
    x, y = _first_tensor(inputs), _first_tensor(output)
    if x is None or y is None:
        return LayerCost() if isinstance(module, _FREE_MODULES) else None
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        per_input = module.out_channels // module.groups * math.prod(module.kernel_size)
        return LayerCost(x.numel() * per_input)
    if isinstance(module, nn.modules.conv._ConvNd):
        per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
        return LayerCost(y.numel() * per_output)
    if isinstance(module, nn.Linear):
        return LayerCost(y.numel() * module.in_features)
    if isinstance(module, nn.Bilinear):
        return LayerCost(y.numel() * module.in1_features * module.in2_features)
    if isinstance(module, _NORMS):
        return LayerCost(0, 2 * y.numel())
    if isinstance(module, _ACTIVATIONS):
        return LayerCost(0, y.numel())
    if isinstance(
        module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
    ):
        dims = int(type(module).__name__[-2])
        kernel = module.kernel_size
        area = math.prod(kernel) if isinstance(kernel, (tuple, list)) else int(kernel) ** dims
        return LayerCost(0, y.numel() * area)
    if isinstance(module, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
                           nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)):  # fmt: skip
        return LayerCost(0, x.numel())
    if isinstance(module, nn.Upsample):
        return LayerCost(0, 0 if module.mode == "nearest" else 4 * y.numel())
    if isinstance(module, _FREE_MODULES):
        return LayerCost()
    return None


#: tensor functions that do no arithmetic (shape, indexing, copies, metadata)
FREE_OPS = frozenset(
    [
        "cat",
        "stack",
        "concat",
        "concatenate",
        "flatten",
        "unflatten",
        "view",
        "view_as",
        "reshape",
        "reshape_as",
        "permute",
        "transpose",
        "t",
        "contiguous",
        "size",
        "dim",
        "numel",
        "__len__",
        "__getitem__",
        "__setitem__",
        "split",
        "chunk",
        "unbind",
        "unsqueeze",
        "squeeze",
        "expand",
        "expand_as",
        "repeat",
        "to",
        "clone",
        "copy_",
        "fill_",
        "zero_",
        "detach",
        "cpu",
        "cuda",
        "type",
        "float",
        "double",
        "half",
        "bfloat16",
        "is_floating_point",
        "is_contiguous",
        "narrow",
        "select",
        "flip",
        "roll",
        "tolist",
        "item",
        "__format__",
        "__repr__",
        "__bool__",
        "__index__",
        "__int__",
        "__float__",
        "__iter__",
        "__hash__",
        "__eq__",
        "dtype",
        "shape",
        "device",
        "requires_grad",
        "data",
        "grad",
        "is_cuda",
        "layout",
        "new_zeros",
        "new_ones",
        "new_empty",
        "new_full",
        "zeros_like",
        "ones_like",
        "empty_like",
        "full_like",
        "zeros",
        "ones",
        "empty",
        "full",
        "arange",
        "tensor",
        "as_tensor",
        "pad",
        "channel_shuffle",
        "pixel_shuffle",
        "dropout",
        "dropout2d",
        "dropout1d",
        "identity",
        "__contains__",
        "stride",
        "storage_offset",
        "data_ptr",
        "element_size",
        "get_device",
        "is_complex",
        "isfinite",
        "equal",
        "allclose",
        "__reduce_ex__",
        "__deepcopy__",
        "requires_grad_",
        "unique_consecutive",
    ]
)

_ELEMENTWISE = frozenset(
    [
        "add",
        "add_",
        "__add__",
        "__iadd__",
        "__radd__",
        "sub",
        "sub_",
        "__sub__",
        "__isub__",
        "__rsub__",
        "mul",
        "mul_",
        "__mul__",
        "__imul__",
        "__rmul__",
        "gt",
        "ge",
        "lt",
        "le",
        "eq",
        "ne",
        "__gt__",
        "__ge__",
        "__lt__",
        "__le__",
        "__ne__",
        "div",
        "div_",
        "__truediv__",
        "__itruediv__",
        "__rtruediv__",
        "neg",
        "__neg__",
        "abs",
        "exp",
        "log",
        "sqrt",
        "rsqrt",
        "pow",
        "__pow__",
        "clamp",
        "clamp_",
        "clip",
        "maximum",
        "minimum",
        "where",
        "relu",
        "relu_",
        "relu6",
        "leaky_relu",
        "leaky_relu_",
        "hardtanh",
        "hardtanh_",
        "sigmoid",
        "sigmoid_",
        "tanh",
        "tanh_",
        "silu",
        "gelu",
        "hardswish",
        "hardsigmoid",
        "elu",
        "selu",
        "mish",
        "softplus",
        "softmax",
        "log_softmax",
        "sum",
        "mean",
        "amax",
        "amin",
        "max",
        "min",
    ]
)


def op_cost(name: str, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> LayerCost | None:
    """Cost of a tensor function called outside a leaf module (``name`` is its short name)."""
    if name in FREE_OPS or name.endswith("__get__") or name.startswith("_"):
        return LayerCost()
    y = _first_tensor(output)
    if name in _ELEMENTWISE:
        x = _first_tensor(args)
        return LayerCost(0, max(y.numel() if y is not None else 0, x.numel() if x is not None else 0))
    if y is None:
        return None
    if name in ("matmul", "mm", "bmm", "__matmul__", "__rmatmul__", "baddbmm", "addmm"):
        tensors = [a for a in args if isinstance(a, Tensor)]
        inner = tensors[-2].shape[-1] if len(tensors) >= 2 else 0
        return LayerCost(y.numel() * inner)
    if name == "linear":
        return LayerCost(y.numel() * args[1].shape[1])
    if name in ("conv1d", "conv2d", "conv3d"):
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return LayerCost(y.numel() * math.prod(weight.shape[1:]))
    if name in ("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"):
        weight = args[1] if len(args) > 1 else kwargs["weight"]
        return LayerCost(_first_tensor(args).numel() * math.prod(weight.shape[1:]))  # type: ignore[union-attr]
    if name in ("max_pool2d", "avg_pool2d", "max_pool1d", "avg_pool1d"):
        kernel = args[1] if len(args) > 1 else kwargs.get("kernel_size")
        area = _kernel_area(kernel) if name.endswith("2d") else int(kernel)  # type: ignore[arg-type]
        return LayerCost(0, y.numel() * area)
    if name.startswith("adaptive_"):
        return LayerCost(0, _first_tensor(args).numel())  # type: ignore[union-attr]
    if name in ("interpolate", "upsample"):
        mode = kwargs.get("mode", args[3] if len(args) > 3 else "nearest")
        return LayerCost(0, 0 if mode == "nearest" else 4 * y.numel())
    if name in ("batch_norm", "layer_norm", "group_norm", "instance_norm"):
        return LayerCost(0, 2 * y.numel())
    return None


def count_parameters(module: nn.Module, recurse: bool = True) -> int:
    """Number of parameter elements (shared parameters once)."""
    return sum(p.numel() for p in module.parameters(recurse=recurse))


def dtype_bytes(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()
