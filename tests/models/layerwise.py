"""Layer-by-layer comparison of two copies of a network (e.g. contiguous and channels_last), each layer
given the same input (and output gradient), with the derived rounding bound of that layer type.

Every leaf module of the reference model records its input and output (and its output gradient, in
training); the same-named module of the other copy is run on that input (converted to the other memory
format) and compared. Per layer, both evaluations are within one local bound of the exact result, so
they differ by at most twice that (any summation order and fused multiply-adds: ``γ(n)`` of
tests/tolerances.py):

* ``Conv2d``: output ``γ(K + 1)·(|W| ∗ |x| + |b|)``, ``K`` the fan-in; input gradient
  ``γ(K' + 1)·(|W|ᵀ ∗ |g|)``, ``K' = C_out/groups·kh·kw``; weight gradient
  ``γ(N·H'·W' + 1)·(|x| ⋆ |g|)``; bias gradient ``γ(N·H'·W')·Σ|g|``;
* ``Linear``: the same with matrix products;
* ``BatchNorm2d``: evaluation ``γ(6)·(|x·α| + |b| + |μ·α|)``; training: the two-pass statistics and torch's
  forward/backward formulas in running-error arithmetic (tests/bn_bounds.py);
* ``MaxPool2d``: output exact (a selection), input gradient: the same routed gradients summed in another
  order, at most ``⌈k/s⌉²`` of them;
* ``AdaptiveAvgPool2d(1)``: ``γ(HW)·mean|x|``; gradient: the same share ``g/HW`` everywhere (one rounding);
* ``ReLU``, ``ReLU6``, ``Dropout`` (the same mask: the same seed), ``Flatten``, ``Identity``: exact.

Operations between modules (residual additions, flattening) are element-wise on the same numbers in
either memory format: identical, so the layers compose to the same network.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

import bn_bounds
from running_error import assert_bounded
from tolerances import gamma, sum_difference_bound, unit_roundoff

EXACT = (nn.ReLU, nn.ReLU6, nn.Dropout, nn.Flatten, nn.Identity, nn.Hardtanh)


def _record(model: nn.Module, x: torch.Tensor, backward: bool, seed: int):
    """Inputs, outputs and output gradients of every leaf module (the loss: sum of squared outputs)."""
    records, handles = {}, []
    for name, module in model.named_modules():
        if len(list(module.children())) == 0:

            def hook(module, inputs, output, name=name):
                records[name] = {"input": inputs[0].detach().clone(), "output": output.detach().clone()}
                if backward and output.requires_grad:
                    output.register_hook(
                        lambda grad, name=name: records[name].__setitem__("grad", grad.clone())
                    )

            handles.append(module.register_forward_hook(hook))
    torch.manual_seed(seed)
    output = model(x)
    if backward:
        output.square().sum().backward()
    for handle in handles:
        handle.remove()
    return records


def _run(module: nn.Module, x: torch.Tensor, grad: torch.Tensor | None, seed: int):
    """Output and (with ``grad``) the gradients of ``module`` at ``x``: (output, input grad, param grads)."""
    module = copy.deepcopy(module)  # running statistics must not move twice
    x = x.clone().requires_grad_(grad is not None)
    torch.manual_seed(seed)
    output = module(x)
    if grad is None:
        return output.detach(), None, {}
    params = dict(module.named_parameters())
    grads = torch.autograd.grad(output, [x, *params.values()], grad, allow_unused=True)
    return output.detach(), grads[0], dict(zip(params, grads[1:], strict=True))


def _conv_bounds(module: nn.Conv2d, x, grad, dtype):
    settings = {
        "stride": module.stride,
        "padding": module.padding,
        "dilation": module.dilation,
        "groups": module.groups,
    }
    w, xa = module.weight.detach().double().abs(), x.double().abs()
    bias = None if module.bias is None else module.bias.detach().double().abs()
    bounds = {"output": gamma(module.weight[0].numel() + 1, dtype) * F.conv2d(xa, w, bias, **settings)}
    if grad is not None:
        ga = grad.double().abs()
        fan_out = module.out_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        bounds["input"] = gamma(fan_out + 1, dtype) * conv2d_input(x.shape, w, ga, **settings)
        terms = grad.shape[0] * grad.shape[2] * grad.shape[3]
        bounds["weight"] = gamma(terms + 1, dtype) * conv2d_weight(xa, module.weight.shape, ga, **settings)
        if module.bias is not None:
            bounds["bias"] = gamma(terms, dtype) * ga.sum(dim=(0, 2, 3))
    return bounds


def _linear_bounds(module: nn.Linear, x, grad, dtype):
    w, xa = module.weight.detach().double().abs(), x.double().abs()
    bias = None if module.bias is None else module.bias.detach().double().abs()
    bounds = {"output": gamma(module.in_features + 1, dtype) * F.linear(xa, w, bias)}
    if grad is not None:
        ga = grad.double().abs()
        bounds["input"] = gamma(module.out_features + 1, dtype) * ga @ w
        bounds["weight"] = gamma(x.shape[0] + 1, dtype) * ga.T @ xa
        if module.bias is not None:
            bounds["bias"] = gamma(x.shape[0], dtype) * ga.sum(0)
    return bounds


def _batch_norm_bounds(module: nn.BatchNorm2d, x, grad, dtype, training: bool):
    channel = (1, -1, 1, 1)
    if not training:
        alpha = module.weight.detach().double().abs() / (module.running_var.double() + module.eps).sqrt()
        shift = module.bias.detach().double().abs() + module.running_mean.double().abs() * alpha
        return {"output": gamma(6, dtype) * (x.double().abs() * alpha.view(channel) + shift.view(channel))}

    def layout(bounded):
        return bounded.error.reshape(x.shape[1], x.shape[0], *x.shape[2:]).transpose(0, 1)

    w, b, eps = module.weight, module.bias, module.eps
    bounds = {"output": layout(bn_bounds.forward(x, w, b, eps, dtype, ours=False))}
    if grad is not None:
        bounds["input"] = layout(bn_bounds.grad_input(x, w, grad, eps, dtype, ours=False))
        bounds["weight"], bounds["bias"] = (
            g.error for g in bn_bounds.grad_parameters(x, grad, eps, dtype, ours=False)
        )
    return bounds


def _pool_bounds(module, x, grad, dtype, reference_module):
    if isinstance(module, nn.AdaptiveAvgPool2d):
        assert module.output_size in (1, (1, 1))
        cells = x.shape[-2] * x.shape[-1]
        bounds = {"output": gamma(cells, dtype) * x.double().abs().mean(dim=(-2, -1), keepdim=True)}
        if grad is not None:
            bounds["input"] = (unit_roundoff(dtype) * grad.double().abs() / cells).expand(x.shape)
        return bounds
    bounds = {"output": torch.zeros(())}
    if grad is not None:
        leaf = x.double().clone().requires_grad_()
        copy.deepcopy(reference_module).double()(leaf).backward(grad.double().abs())
        kernel = module.kernel_size if isinstance(module.kernel_size, int) else module.kernel_size[0]
        stride = module.stride if isinstance(module.stride, int) else module.stride[0]
        bounds["input"] = sum_difference_bound(leaf.grad, math.ceil(kernel / stride) ** 2, dtype)
    return bounds


def _bounds(module, x, grad, dtype, training):
    if isinstance(module, nn.Conv2d):
        return _conv_bounds(module, x, grad, dtype)
    if isinstance(module, nn.Linear):
        return _linear_bounds(module, x, grad, dtype)
    if isinstance(module, nn.BatchNorm2d):
        return _batch_norm_bounds(module, x, grad, dtype, training)
    if isinstance(module, (nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
        return _pool_bounds(module, x, grad, dtype, module)
    if isinstance(module, EXACT):
        return {"output": torch.zeros(()), "input": torch.zeros(())}
    raise NotImplementedError(f"no derived bound for a {type(module).__name__} layer")


def assert_layers_agree(
    reference: nn.Module, other: nn.Module, x: torch.Tensor, memory_format, seed: int = 1
):
    """Every leaf layer of ``other`` (run in ``memory_format``) against the same layer of
    ``reference`` on the reference's inputs (and output gradients when ``reference.training``)."""
    training = reference.training
    dtype = x.dtype
    records = _record(reference, x, backward=training, seed=seed)
    modules = dict(other.named_modules())
    for name, record in records.items():
        module, grad = modules[name], record.get("grad")
        convert = (
            (lambda t: t.contiguous(memory_format=memory_format))
            if record["input"].dim() == 4
            else (lambda t: t)
        )
        reference_run = _run(dict(reference.named_modules())[name], record["input"], grad, seed)
        other_run = _run(module, convert(record["input"]), None if grad is None else convert(grad), seed)
        bounds = _bounds(module, record["input"], grad, dtype, training)
        assert_bounded(other_run[0], reference_run[0], 2 * bounds["output"], f"{name} output")
        if grad is None:
            continue
        if reference_run[1] is not None:
            assert_bounded(
                other_run[1],
                reference_run[1],
                2 * bounds.get("input", torch.zeros(())),
                f"{name} input gradient",
            )
        for key, value in reference_run[2].items():
            assert_bounded(other_run[2][key], value, 2 * bounds[key], f"{name} {key} gradient")
