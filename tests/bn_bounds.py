"""Batch normalisation, ours (visionkit.nn.norm) and torch's CPU kernel, in running-error arithmetic
(tests/running_error.py), for the derived bounds of tests/nn/test_nn_norm.py.

Both compute the statistics with the two-pass algorithm (the mean, then the squared deviations from it);
torch accumulates in double for float32 inputs, which the float32 analysis here covers (each of its
steps is at least as accurate). Everything is laid out per channel, ``[C, n]`` with ``n = N·H·W``.

* ours:  ``x̂ = (x − μ)·r``, ``y = x̂·w + b``, ``r = 1/sqrt(Σ(x − μ)²/n + ε)``; backward
  ``gb = Σdy``, ``gw = Σ dy·x̂``, ``dx = (w·r)·((dy − gb/n) − (x̂·gw)/n)``;
* torch: ``α = r·w``, ``β = b − μ·α``, ``y = x·α + β`` (the vectorised kernel may fuse the multiply-add,
  which only removes a rounding); backward ``s = Σdy``, ``p = Σ(x − μ)·dy``, ``k = p·r·r/n``,
  ``dx = (((dy − s/n) − (x − μ)·k)·r)·w``, ``gw = p·r``, ``gb = s``;
* running buffers ``ρ·(1 − m) + m·stat`` with the unbiased variance ``Σ(x − μ)²/(n − 1)``; evaluation
  ``y = x·(w·r') + (b − ρ_μ·(w·r'))``, ``r' = 1/sqrt(ρ_σ² + ε)``.
"""

from __future__ import annotations

import torch

from running_error import Bounded, exact


def per_channel(tensor: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` → ``[C, N·H·W]``."""
    return tensor.detach().transpose(0, 1).reshape(tensor.shape[1], -1)


def statistics(x: torch.Tensor, dtype) -> tuple[Bounded, Bounded, Bounded, Bounded, int]:
    """Values ``[C, n]``, mean ``[C]``, deviations ``[C, n]``, ``Σ(x − μ)²`` ``[C]`` and ``n``."""
    values = exact(per_channel(x), dtype)
    n = values.value.shape[1]
    mean = values.sum(1) / n
    centered = values - mean.unsqueeze(1)
    return values, mean, centered, centered.square().sum(1), n


def _inverse_std(variance: Bounded, eps: float) -> Bounded:
    return 1 / (variance + eps).sqrt()  # torch's rsqrt: a square root and a division


def forward(x, weight, bias, eps, dtype, ours: bool) -> Bounded:
    """Training-mode output ``[C, n]``."""
    values, mean, centered, squares, n = statistics(x, dtype)
    w, b = exact(weight.detach(), dtype).unsqueeze(1), exact(bias.detach(), dtype).unsqueeze(1)
    r = _inverse_std(squares / n, eps).unsqueeze(1)
    if ours:
        return centered * r * w + b
    alpha = r * w
    return values * alpha + (b - mean.unsqueeze(1) * alpha)


def grad_input(x, weight, grad_output, eps, dtype, ours: bool) -> Bounded:
    """``dL/dx`` ``[C, n]`` of the training-mode output for the output gradient ``grad_output``."""
    _, _, centered, squares, n = statistics(x, dtype)
    w = exact(weight.detach(), dtype).unsqueeze(1)
    r = _inverse_std(squares / n, eps).unsqueeze(1)
    dy = exact(per_channel(grad_output), dtype)
    if ours:
        x_hat = centered * r
        total, dot = dy.sum(1).unsqueeze(1), (dy * x_hat).sum(1).unsqueeze(1)
        return (w * r) * ((dy - total / n) - (x_hat * dot) / n)
    total, dot = dy.sum(1).unsqueeze(1), (centered * dy).sum(1).unsqueeze(1)
    k = dot * r * r / n
    return (((dy - total / n) - centered * k) * r) * w


def grad_parameters(x, grad_output, eps, dtype, ours: bool) -> tuple[Bounded, Bounded]:
    """``dL/dw`` and ``dL/db`` ``[C]``."""
    _, _, centered, squares, n = statistics(x, dtype)
    r = _inverse_std(squares / n, eps)
    dy = exact(per_channel(grad_output), dtype)
    if ours:
        return (dy * (centered * r.unsqueeze(1))).sum(1), dy.sum(1)
    return (centered * dy).sum(1) * r, dy.sum(1)


def running_update(running_mean: Bounded, running_var: Bounded, x, momentum: float, dtype):
    """The buffers after one training step (either implementation's order: the same bound)."""
    _, mean, _, squares, n = statistics(x, dtype)
    return (
        running_mean * (1 - momentum) + momentum * mean,
        running_var * (1 - momentum) + momentum * (squares / (n - 1)),
    )


def evaluation(x, weight, bias, running_mean: Bounded, running_var: Bounded, eps, dtype) -> Bounded:
    """Evaluation-mode output ``[C, n]`` from (bounded) running buffers."""
    values = exact(per_channel(x), dtype)
    w, b = exact(weight.detach(), dtype), exact(bias.detach(), dtype)
    scale = w * _inverse_std(running_var, eps)
    return values * scale.unsqueeze(1) + (b - running_mean * scale).unsqueeze(1)
