"""A derived bound on the rounding error of an evaluation-mode network, carried alongside its forward pass.

:class:`ErrorShadow` is a ``TorchFunctionMode``: while the network runs, every supported operation on a
tracked tensor also computes ``E``, a bound per sample on the Euclidean norm of ``x̂ − x`` — the computed
activation minus the exact one (exact arithmetic on exact inputs and exact parameters). Rules, per sample
(``γ(n)`` from tests/tolerances.py; every sum in any order, fused multiply-adds allowed):

* convolution / linear: ``E' = ‖W‖₂·E + ‖γ(K + 1)·(|W| ∗ (|x̂| + 2E) + |b|)‖₂ + ‖|ΔW| ∗ (|x̂| + 2E) + |Δb|‖₂``
  with ``K`` the fan-in and ``ΔW`` the parameters' own error bound. ``‖W‖₂`` bounds the operator norm: a
  zero-padded, strided convolution is a selection of a circular convolution on a grid at least as large,
  whose singular values are those of the ``C_out × C_in`` matrices of the kernel's 2-D DFT at every
  frequency (Sedghi, Gupta & Long, ICLR 2019); computed with SVD in float64 and raised by 1e-10 relative;
* batch norm (evaluation): ``y = x·α + β`` per channel, ``E' = max|α|·E`` + ≤ 6 roundings of
  ``|x̂α| + |b| + |μα|`` + the effect of the parameters' error bounds;
* ReLU, ReLU6 (hardtanh), dropout in evaluation, flatten: 1-Lipschitz, exact;
* max pooling: an input is in at most ``⌈k/s⌉²`` windows, so ``E' = ⌈k/s⌉·E``;
* global average pooling: ``E' = E/√(HW)`` + ``γ(HW)·mean|x̂|``;
* addition: ``E' = E_a + E_b + ‖u·|ŷ|‖₂``.

Magnitudes use ``|x̂| + 2E``, which bounds the activations of this evaluation and of any other one
bounded by ``E`` (another implementation, another machine), so the same ``E`` serves both sides of a
comparison: two evaluations differ by at most ``2E`` per element (an element is at most the norm).
An operation on a tracked tensor without a rule raises, so the bound is never silently incomplete.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from tolerances import gamma, unit_roundoff

_NORM_SLACK = 1 + 1e-10


def conv_operator_norm(weight: torch.Tensor, height: int, width: int, groups: int) -> float:
    """Upper bound of the spectral norm of the convolution of a ``height × width`` input."""
    out_channels, in_per_group, kh, kw = weight.shape
    grid = (height + kh, width + kw)
    spectrum = torch.fft.fft2(weight.detach().double(), s=grid)  # [Co, Ci/g, N1, N2]
    per_group = spectrum.reshape(groups, out_channels // groups, in_per_group, *grid).permute(0, 3, 4, 1, 2)
    return float(torch.linalg.matrix_norm(per_group, ord=2).max()) * _NORM_SLACK


def _l2(elementwise: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm of a ``[N, ...]`` tensor, raised by γ(n) (float64 evaluation)."""
    flat = elementwise.double().reshape(elementwise.shape[0], -1)
    return flat.norm(dim=1) * (1 + gamma(flat.shape[1] + 1, torch.float64))


class ErrorShadow(TorchFunctionMode):
    """Track per-sample error bounds ``E`` (``Tensor[N]``, float64) of a network's activations.

    Args:
        dtype: the dtype the network computes in.
        parameter_errors: bounds ``|ΔP|`` per parameter tensor (by identity), default exact.
        input_errors: ``{id(input): E}`` for inputs that carry an error.
    """

    def __init__(self, dtype: torch.dtype, parameter_errors=None, input_errors=None) -> None:
        super().__init__()
        self.u = unit_roundoff(dtype)
        self.dtype = dtype
        self.parameter_errors = parameter_errors or {}
        self.errors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for tensor, error in (input_errors or {}).items():
            self.errors[id(tensor)] = (tensor, error)

    def error(self, tensor: torch.Tensor) -> torch.Tensor | None:
        entry = self.errors.get(id(tensor))
        return entry[1] if entry is not None and entry[0] is tensor else None

    def _delta(self, parameter: torch.Tensor | None) -> torch.Tensor:
        if parameter is None:
            return torch.zeros(())
        entry = self.parameter_errors.get(id(parameter))
        return torch.zeros_like(parameter, dtype=torch.float64) if entry is None else entry

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
        tracked = [t for t in tensors if self.error(t) is not None]
        if not tracked:
            return out
        name = getattr(func, "__name__", str(func))
        rule = getattr(self, f"_rule_{name}", None)
        if rule is None:
            if name in ("dim", "is_floating_point", "size", "__get__", "shape"):
                return out
            raise NotImplementedError(f"ErrorShadow has no rule for {name}: the bound would be incomplete")
        self.errors[id(out)] = (out, rule(out, *args, **kwargs))
        return out

    # ------------------------------------------------------------------------------------------ rules
    def _magnitude(self, x: torch.Tensor) -> torch.Tensor:
        error = self.error(x)
        return x.detach().double().abs() + 2 * error.view(-1, *([1] * (x.dim() - 1)))

    def _rule_conv2d(self, out, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
        error = self.error(x)
        absolute = self._magnitude(x)
        settings = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
        fan_in = weight[0].numel()
        bias_abs = None if bias is None else bias.detach().double().abs()
        rounding = gamma(fan_in + 1, self.dtype) * F.conv2d(
            absolute, weight.detach().double().abs(), bias_abs, **settings
        )
        delta_b = self._delta(bias) if bias is not None else None
        perturbed = F.conv2d(absolute, self._delta(weight), delta_b, **settings)
        norm = conv_operator_norm(weight, x.shape[-2], x.shape[-1], groups)
        return norm * error + _l2(rounding) + _l2(perturbed)

    def _rule_linear(self, out, x, weight, bias=None):
        error = self.error(x)
        absolute = self._magnitude(x)
        bias_abs = None if bias is None else bias.detach().double().abs()
        rounding = gamma(weight.shape[1] + 1, self.dtype) * F.linear(
            absolute, weight.detach().double().abs(), bias_abs
        )
        perturbed = F.linear(absolute, self._delta(weight), None if bias is None else self._delta(bias))
        norm = float(torch.linalg.matrix_norm(weight.detach().double(), ord=2)) * _NORM_SLACK
        return norm * error + _l2(rounding) + _l2(perturbed)

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
        assert not training, "ErrorShadow covers batch norm in evaluation mode only"
        error = self.error(x)
        channel = (1, -1, 1, 1)
        rv, rm = running_var.double(), running_mean.double()
        drv, drm = self._delta(running_var), self._delta(running_mean)
        w, b = weight.detach().double(), bias.detach().double()
        dw, db = self._delta(weight), self._delta(bias)
        scale = (rv + eps).sqrt()
        low = (rv - drv + eps).clamp(min=1e-300).sqrt()
        alpha = (w / scale).abs()
        # |Δα| <= |Δw|/s_min + |w|·|Δσ²|/(2 s_min³);  β = b − μ·α
        delta_alpha = dw / low + w.abs() * drv / (2 * low**3)
        absolute = self._magnitude(x)
        parameters = absolute * delta_alpha.view(channel) + (db + drm * alpha + rm.abs() * delta_alpha).view(
            channel
        )
        rounding = gamma(6, self.dtype) * (
            absolute * alpha.view(channel) + (b.abs() + rm.abs() * alpha).view(channel)
        )
        return float((alpha + delta_alpha).max()) * error + _l2(rounding) + _l2(parameters)

    def _rule_relu(self, out, x, inplace=False):
        return self.error(x)

    def _rule_hardtanh(self, out, x, *args, **kwargs):
        return self.error(x)

    def _rule_dropout(self, out, x, p=0.5, training=True, inplace=False):
        assert not training, "ErrorShadow covers dropout in evaluation mode only"
        return self.error(x)

    def _rule_flatten(self, out, x, *args, **kwargs):
        return self.error(x)

    def _rule_max_pool2d(
        self, out, x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
    ):
        """F.max_pool2d."""
        kernel = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        stride = kernel if stride is None else ((stride, stride) if isinstance(stride, int) else stride)
        assert dilation in (1, (1, 1)), "ErrorShadow: max pooling without dilation only"
        windows = math.ceil(kernel[0] / stride[0]) * math.ceil(kernel[1] / stride[1])
        return math.sqrt(windows) * self.error(x)

    def _rule_adaptive_avg_pool2d(self, out, x, output_size):
        assert output_size in (1, (1, 1)), "ErrorShadow: global average pooling only"
        cells = x.shape[-2] * x.shape[-1]
        rounding = gamma(cells, self.dtype) * self._magnitude(x).mean(dim=(-2, -1))
        return self.error(x) / math.sqrt(cells) + _l2(rounding)

    def _rule_add(self, out, a, b, *args, **kwargs):
        total = sum(
            self.error(t) for t in (a, b) if isinstance(t, torch.Tensor) and self.error(t) is not None
        )
        return total + _l2(self.u * out.detach().double().abs() * (1 + self.u))

    _rule___add__ = _rule_add
