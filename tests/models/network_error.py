"""A first-order bound on the rounding error of a network's outputs, from its own Jacobian.

Worst-case bounds that push ``|W|`` (or operator norms) through 20 layers grow by the norm of every layer
(``√fan-in`` or more each) and say nothing. Rounding errors enter the outputs through the network's actual
Jacobian instead: if every operation ``l`` adds an error ``δ_l`` to its output, then to first order

    ``Δout_k = Σ_l ⟨∂out_k/∂a_l, δ_l⟩``,  so  ``|Δout_k| <= Σ_l ⟨|∂out_k/∂a_l|, r_l⟩``

with ``r_l`` an element-wise bound of ``δ_l`` (Higham, *Accuracy and Stability*, §3.5: a first-order
bound neglects products of errors, here relative ``~1e-13``). :class:`LocalRounding` (a
``TorchFunctionMode``) records every operation's output and ``r_l`` during a forward pass; the
gradients ``∂out_k/∂a_l`` come from one backward pass per checked output. Local bounds, for one
evaluation, with ``γ(n)`` of tests/tolerances.py (any summation order, fused multiply-adds allowed):

* convolution / transposed convolution / linear: ``γ(K + 1)·(|W| ∗ |x̂| + |b|)``, ``K`` the fan-in
  (direct convolution or GEMM: oneDNN's direct algorithm, im2col + BLAS; never Winograd or FFT at
  these batch sizes);
* batch norm, evaluation: ``γ(6)·(|x̂·α| + |b| + |μ·α|)`` for ``y = x·α + β`` (α, β from ≤ 4 roundings);
  training: the running bound of the two-pass batch statistics and the affine map (tests/nn/bn_bounds.py);
* addition, subtraction, multiplication: ``u·|ŷ|``; division: ``γ(2)·|ŷ|`` (or a product with a rounded
  reciprocal); global average pooling: ``γ(HW)·mean|x̂|`` (adaptive: ``γ`` of the largest bin);
* leaky ReLU: ``u·|ŷ|`` (one product on the negative side);
* ReLU, ReLU6, max pooling, dropout, flatten: exact (a selection or an exact scaling by 1/(1 − p) is not:
  dropout in training mode rounds once, ``u·|ŷ|``).

Parameters and buffers that another implementation computes differently (a closed formula with ``sin``)
perturb an operation's output by at most ``|ΔW| ∗ |x̂| + |Δb|`` (convolution, linear) or the first-order
change of ``x·α + β`` (batch norm), added to ``r_l``; a perturbed input enters through ``∂out/∂x``. A
(clipped) ReLU whose input lies within its error of the kink could switch sides, which the Jacobian would
not describe: the inputs are asserted to stay clear of it by a relative ``2⁻³⁰``, far above the local
errors (``γ(K)``, ~1e-13 relative in float64, 1e-4 at most in float32 for these fan-ins).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

import bn_bounds
from tolerances import gamma, unit_roundoff


class LocalRounding(TorchFunctionMode):
    """Record ``(output, r)`` of every supported operation of a forward pass (gradients enabled)."""

    def __init__(self, dtype: torch.dtype, parameter_errors: dict[int, torch.Tensor] | None = None) -> None:
        super().__init__()
        self.dtype, self.u = dtype, unit_roundoff(dtype)
        self.parameter_errors = parameter_errors or {}  # |ΔP| by id(P): P computed otherwise elsewhere
        self.records: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.relu_inputs: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._bound_of: dict[int, torch.Tensor] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        rule = getattr(self, f"_rule_{name}", None)
        if rule is not None and isinstance(out, torch.Tensor):
            bound = rule(out, *args, **kwargs)
            if bound is not None:
                self.records.append((out, bound))
        return out

    def _abs(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.detach().double().abs()

    def _delta(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        if tensor is None:
            return None
        return self.parameter_errors.get(id(tensor), torch.zeros_like(tensor, dtype=torch.float64))

    def _rule_conv2d(self, out, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        settings = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
        magnitude = F.conv2d(
            self._abs(x), self._abs(weight), None if bias is None else self._abs(bias), **settings
        )
        perturbation = F.conv2d(self._abs(x), self._delta(weight), self._delta(bias), **settings)
        return gamma(weight[0].numel() + 1, self.dtype) * magnitude + perturbation

    def _rule_conv_transpose2d(
        self, out, x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
    ):
        settings = {"stride": stride, "padding": padding, "output_padding": output_padding,
                    "groups": groups, "dilation": dilation}  # fmt: skip
        magnitude = F.conv_transpose2d(
            self._abs(x), self._abs(weight), None if bias is None else self._abs(bias), **settings
        )
        perturbation = F.conv_transpose2d(self._abs(x), self._delta(weight), self._delta(bias), **settings)
        fan_in = weight.shape[0] // groups * weight.shape[2] * weight.shape[3]  # at most, per output
        return gamma(fan_in + 1, self.dtype) * magnitude + perturbation

    def _rule_linear(self, out, x, weight, bias=None):
        magnitude = F.linear(self._abs(x), self._abs(weight), None if bias is None else self._abs(bias))
        perturbation = F.linear(self._abs(x), self._delta(weight), self._delta(bias))
        return gamma(weight.shape[1] + 1, self.dtype) * magnitude + perturbation

    def _rule_batch_norm(
        self,
        out,
        x,
        running_mean,
        running_var,
        weight=None,
        bias=None,
        training=False,
        momentum=0.1,
        eps=1e-5,
    ):
        channel = (1, -1, 1, 1)
        if training:
            bounded = bn_bounds.forward(x.detach(), weight, bias, eps, self.dtype, ours=False)
            return bounded.error.reshape(x.shape[1], x.shape[0], *x.shape[2:]).transpose(0, 1)
        scale = (running_var.double() + eps).sqrt()
        alpha = self._abs(weight) / scale
        shift = self._abs(bias) + running_mean.double().abs() * alpha
        rounding = gamma(6, self.dtype) * (self._abs(x) * alpha.view(channel) + shift.view(channel))
        # perturbed statistics and affine parameters, to first order:
        # Δy = Δb + Δw·(x − μ)/s − α·Δμ − (x − μ)·w·Δσ²/(2 s³)
        centred = (x.detach().double() - running_mean.double().view(channel)).abs()
        per_centred = self._delta(weight) / scale + self._abs(weight) * self._delta(running_var) / (
            2 * scale**3
        )
        fixed = self._delta(bias) + alpha * self._delta(running_mean)
        return rounding + centred * per_centred.view(channel) + fixed.view(channel)

    def _rule_relu(self, out, x, inplace=False):
        assert not inplace, "run the network with inplace activations switched off"
        self.relu_inputs.append((x, out))
        return None

    def _rule_add(self, out, *args, **kwargs):
        return self.u * self._abs(out)

    _rule___add__ = _rule_add
    _rule_sub = _rule___sub__ = _rule_mul = _rule___mul__ = _rule_add  # one correctly rounded operation

    def _rule_div(self, out, *args, **kwargs):
        # a division, or (another runtime may rewrite a division by a constant so) a product with the
        # rounded reciprocal: two roundings
        return gamma(2, self.dtype) * self._abs(out)

    _rule___truediv__ = _rule_div

    def _rule_leaky_relu(self, out, x, negative_slope=0.01, inplace=False):
        assert not inplace, "run the network with inplace activations switched off"
        self.relu_inputs.append((x, out))
        return self.u * self._abs(out)  # the negative side is one rounded product

    def _rule_adaptive_avg_pool2d(self, out, x, output_size):
        if output_size in (1, (1, 1)):
            return gamma(x.shape[-2] * x.shape[-1], self.dtype) * self._abs(x).mean(
                dim=(-2, -1), keepdim=True
            )
        # any output size: each bin spans at most ceil(H / h) + 1 rows (and columns) and is their mean
        h, w = (output_size, output_size) if isinstance(output_size, int) else output_size
        largest = (-(-x.shape[-2] // h) + 1) * (-(-x.shape[-1] // w) + 1)
        return gamma(largest, self.dtype) * F.adaptive_avg_pool2d(self._abs(x), output_size)

    def _rule_dropout(self, out, x, p=0.5, training=True, inplace=False):
        return self.u * self._abs(out) if training and p > 0 else None

    def _rule_hardtanh(self, out, x, min_val=-1.0, max_val=1.0, inplace=False):
        assert not inplace, "run the network with inplace activations switched off"
        self.relu_inputs.append((x, out))
        return None

    def assert_kinks_are_clear(self, relative_margin: float) -> None:
        """Precondition of the first-order bound: no (clipped-)ReLU input that is not exactly 0 lies
        within ``relative_margin`` of its tensor's largest magnitude from the kink at 0 (see the
        module docstring; the local errors are ~γ(K) of the magnitudes, orders of magnitude below)."""
        for x, _ in self.relu_inputs:
            values = x.detach().double()
            nonzero = values[values != 0].abs()
            if nonzero.numel():
                assert float(nonzero.min()) > relative_margin * float(values.abs().max()), (
                    "a kink is too close"
                )


def without_inplace(model: nn.Module) -> nn.Module:
    """The same model with in-place activations switched off (values unchanged; autograd needs the
    intermediate outputs)."""
    for module in model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    return model


def first_order_output_bound(
    model: nn.Module,
    x: torch.Tensor,
    outputs: list[tuple[int, ...]],
    dtype: torch.dtype,
    parameter_errors: dict[str, torch.Tensor] | None = None,
    input_error: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's output and, for each index in ``outputs``, the first-order bound of its rounding
    error for one evaluation (see the module docstring). ``parameter_errors``: bounds ``|ΔP|`` by name;
    ``input_error``: a bound ``|Δx|``."""
    model = without_inplace(model)
    leaf = x.detach().clone().requires_grad_(input_error is not None)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    by_id = {id(tensors[name]): error for name, error in (parameter_errors or {}).items()}
    recorder = LocalRounding(dtype, by_id)
    with recorder:
        output = model(leaf)
    recorder.assert_kinks_are_clear(2.0**-30)
    records = list(recorder.records) + ([(leaf, input_error)] if input_error is not None else [])
    bounds = []
    for index in outputs:
        grads = torch.autograd.grad(
            output[index], [t for t, _ in records], retain_graph=True, allow_unused=True
        )
        total = sum(
            (grad.detach().double().abs() * bound).sum()
            for grad, (_, bound) in zip(grads, records, strict=True)
            if grad is not None
        )
        bounds.append(torch.as_tensor(total, dtype=torch.float64) * (1 + 1e-10))  # the float64 sums
    return output.detach(), torch.stack(bounds)
