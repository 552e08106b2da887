"""Initialization schemes, tested statistically."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from running_error import Bounded, assert_bounded
from tolerances import gamma, lapack_backward_error, unit_roundoff
from visionkit.nn import init_weights
from visionkit.nn.init import (
    SCHEMES,
    fan_in_and_fan_out,
    kaiming_normal_,
    kaiming_uniform_,
    lecun_normal_,
    orthogonal_,
    prior_probability_bias_,
    small_normal_,
    sparse_,
    xavier_normal_,
    xavier_uniform_,
    zeros_,
)


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _deep_relu_net(depth: int, width: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers)


def _second_moments(net: nn.Sequential, width: int) -> tuple[float, float]:
    """``q₀ = E[x²]`` of the input batch and ``q_L = E[a_L²]`` after the net (means over batch and units)."""
    x = torch.randn(2000, width, generator=_generator())
    with torch.no_grad():
        return float(x.pow(2).mean()), float(net(x).pow(2).mean())


def _layer_factors(net: nn.Sequential, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer ``F = q_{l+1} / q_l`` and an estimate of its variance given the layer's input (float64).

    With zero biases and rows ``w_i`` of ``W`` drawn independently from a symmetric law with covariance
    ``s²I``, the unit means ``T_i = mean_b relu(w_i·a_b)²`` are, given the input ``a``, independent with
    mean ``s²/2·mean_b‖a_b‖²``; so ``F = mean_i T_i / q`` has conditional mean ``n·s²/2`` and variance
    ``Var(T)/(n·q²)``, estimated by the sample variance of the ``n`` values ``T_i``."""
    factors, variances, a = [], [], x.double()
    for linear in net[::2]:
        linear = linear.requires_grad_(False)
        q = a.square().mean()
        z = a @ linear.weight.double().T + linear.bias.double()
        unit_means = torch.relu(z).square().mean(0)
        factors.append(unit_means.mean() / q)
        variances.append(unit_means.var() / (len(unit_means) * q * q))
        a = torch.relu(z)
    return torch.stack(factors), torch.stack(variances)


def test_he_keeps_relu_activations_through_50_layers() -> None:
    width, depth = 256, 50
    # He: s² = 2/n, so each ReLU layer keeps the second moment in expectation (F has mean 1 given its
    # input); the 50 centred factors form a martingale difference sequence, whose sum over its estimated
    # standard deviation is N(0, 1) in the limit (martingale CLT): |Z| > 6 has probability 2e-9.
    net = init_weights(_deep_relu_net(depth, width), "he", generator=_generator())
    factors, variances = _layer_factors(net, torch.randn(1000, width, generator=_generator()))
    z = float((factors - 1).sum() / variances.sum().sqrt())
    assert abs(z) < 6, f"He init drifts: Z = {z:.2f} over {depth} layers (factors {factors.tolist()})"
    # small_random and LeCun: factors of mean n·s²/2 = 0.0128 and 0.5, so E[q_L] = (n·s²/2)^L·q₀ exactly,
    # and by Markov P(q_L > E[q_L] / 1e-9) <= 1e-9 (raised by the float32 rounding of 2L layers' sums).
    rounding = (1 + gamma(width + 1, torch.float32)) ** (2 * depth)
    for scheme, factor in (("small_random", width * 0.01**2 / 2), ("lecun", 0.5)):
        q0, q_final = _second_moments(
            init_weights(_deep_relu_net(depth, width), scheme, generator=_generator()), width
        )
        assert q_final < factor**depth * q0 / 1e-9 * rounding  # the handbook's warning: the signal vanishes


def test_zeros_is_the_symmetry_trap() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    init_weights(net, "zeros")
    net(torch.randn(16, 4)).pow(2).sum().backward()
    grad = net[0].weight.grad
    assert torch.equal(grad, torch.zeros_like(grad))  # no unit can ever differ from another
    init_weights(net, "small_random", generator=_generator())
    net.zero_grad()
    net(torch.randn(16, 4)).pow(2).sum().backward()
    # with symmetric weights the two rows would get the same operations on the same numbers: equal
    assert not torch.equal(net[0].weight.grad[0], net[0].weight.grad[1])


@pytest.mark.parametrize(
    ("function", "expected_std"),
    [
        (lambda w: small_normal_(w, generator=_generator()), 0.01),
        (lambda w: lecun_normal_(w, generator=_generator()), 1 / math.sqrt(400)),
        (lambda w: xavier_normal_(w, generator=_generator()), math.sqrt(2 / (400 + 300))),
        (lambda w: xavier_uniform_(w, generator=_generator()), math.sqrt(2 / (400 + 300))),
        (lambda w: kaiming_normal_(w, generator=_generator()), math.sqrt(2 / 400)),
        (lambda w: kaiming_uniform_(w, generator=_generator()), math.sqrt(2 / 400)),
        (lambda w: kaiming_normal_(w, "fan_out", generator=_generator()), math.sqrt(2 / 300)),
    ],
)
def test_standard_deviations(function, expected_std: float) -> None:  # type: ignore[no-untyped-def]
    weight = function(torch.empty(300, 400)).double()  # statistics in float64: rounding ~1e-11, negligible
    n = weight.numel()
    # n i.i.d. draws of mean 0 and variance σ²: the mean has standard error σ/√n; the sample variance
    # has variance σ⁴(2/(n − 1) + (κ − 3)/n) with kurtosis κ = 3 (normal) or 1.8 (uniform), so the
    # sample standard deviation has relative standard error <= sqrt(2/(n − 1))/2. Six standard errors
    # each: false failure <= 2e-9 per check (normal approximation, n = 120000).
    assert abs(float(weight.mean())) < 6 * expected_std / math.sqrt(n)
    assert abs(float(weight.std()) / expected_std - 1) < 6 * math.sqrt(2 / (n - 1)) / 2


def test_uniform_bounds() -> None:
    weight = xavier_uniform_(torch.empty(30, 40), generator=_generator())
    # draws from [−a, a]: the float32 cast of the bound and the affine map of the uniform variate round
    # at most 3 times, each up by a factor (1 + u) at most
    assert float(weight.abs().max()) <= math.sqrt(6 / 70) * (1 + unit_roundoff(torch.float32)) ** 3


def test_sparse_has_exactly_k_nonzeros_per_unit() -> None:
    weight = sparse_(torch.empty(64, 32, 3, 3), connections=10, generator=_generator())
    assert (weight.view(64, -1) != 0).sum(dim=1).tolist() == [10] * 64
    # 640 normal draws: relative standard error of the sample std sqrt(2/(n − 1))/2; six of them
    nonzero = weight[weight != 0].double()
    assert abs(float(nonzero.std()) / 0.01 - 1) < 6 * math.sqrt(2 / (nonzero.numel() - 1)) / 2
    net = init_weights(nn.Sequential(nn.Linear(100, 20)), "sparse", generator=_generator())
    assert (net[0].weight != 0).sum(dim=1).tolist() == [10] * 20
    with pytest.raises(ValueError, match="connections"):
        sparse_(torch.empty(4, 5), connections=10)


def test_orthogonal() -> None:
    tall = orthogonal_(torch.empty(50, 20), generator=_generator())
    assert_bounded(tall.T @ tall, torch.eye(20), orthogonality_bound(50, 20))
    wide = orthogonal_(torch.empty(8, 4, 3, 3), gain=2.0, generator=_generator()).view(8, -1)
    assert_bounded(wide @ wide.T, 4.0 * torch.eye(8), 4 * orthogonality_bound(36, 8))


def orthogonality_bound(m: int, n: int) -> float:
    """|QᵀQ − I| entry-wise for float32 copies of a float64 Householder Q (m×n, unit columns): the float64
    Q is orthonormal to ``lapack_backward_error(m, n)`` (tests/tolerances.py: Higham, Thm 19.4, with the
    LAPACK constant the suite assumes); rounding it to float32 moves each product q_ki·q_kj by
    (2u + u²)|q_ki q_kj|; the float32 dot product of m terms adds γ(m − 1)·Σ|q_ki q_kj|;
    Σ|q_ki q_kj| <= ‖q_i‖‖q_j‖ = 1 (+ that defect)."""
    u = unit_roundoff(torch.float32)
    defect = lapack_backward_error(m, n, torch.float64)
    return (2 * u + u * u + gamma(m - 1, torch.float32)) * (1 + defect) + defect


@pytest.mark.parametrize("prior", [0.01, 0.1, 0.5, 0.9])
def test_prior_probability_bias(prior: float) -> None:
    bias = prior_probability_bias_(torch.empty(5), prior)
    value = -math.log((1 - prior) / prior)
    assert torch.equal(bias, torch.full((5,), value))  # the same Python value, rounded to float32
    # sigmoid(b) = π for the exact b: b carries the float64 analysis of −log((1 − π)/π) plus its float32
    # rounding, then the float32 sigmoid 1/(1 + exp(−b)); the expected tensor rounds π to float32 too
    b64 = -(((1 - Bounded(torch.tensor(prior, dtype=torch.float64), 0.0, torch.float64)) / prior).log())
    b = Bounded(b64.value, b64.error + unit_roundoff(torch.float32) * b64.magnitude(), torch.float32)
    probability = 1 / (1 + (-b).exp())
    bound = probability.error + unit_roundoff(torch.float32) * prior
    assert_bounded(torch.sigmoid(bias), torch.full((5,), prior, dtype=torch.float64), bound)
    with pytest.raises(ValueError, match="prior"):
        prior_probability_bias_(torch.empty(1), 1.0)


def test_init_weights_biases_and_norms() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Linear(8, 2))
    with torch.no_grad():
        net[1].weight.fill_(3.0)
    init_weights(net, "xavier_uniform", bias=0.01, generator=_generator())
    assert torch.equal(net[0].bias, torch.full((8,), 0.01))
    assert torch.equal(net[1].weight, torch.ones(8)) and torch.equal(net[1].bias, torch.zeros(8))
    assert torch.equal(zeros_(torch.ones(3)), torch.zeros(3))
    for scheme in SCHEMES:
        init_weights(nn.Sequential(nn.Conv2d(16, 8, 3), nn.Linear(16, 4)), scheme, generator=_generator())
    with pytest.raises(ValueError, match="scheme must be one of"):
        init_weights(net, "glorot")
    assert fan_in_and_fan_out(torch.empty(64, 3, 7, 7)) == (147, 3136)
