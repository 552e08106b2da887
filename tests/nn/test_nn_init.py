"""Initialization schemes, tested statistically."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

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


def _second_moment_after(net: nn.Sequential, width: int) -> float:
    x = torch.randn(2000, width, generator=_generator())
    with torch.no_grad():
        return float(net(x).pow(2).mean())


def test_he_keeps_relu_activations_through_50_layers() -> None:
    width = 256
    net = init_weights(_deep_relu_net(50, width), "he", generator=_generator())
    # He: Var(pre-activation) = 2 E[a_prev^2], and ReLU halves it back, so E[a^2] stays 1 at every layer
    assert 0.4 < _second_moment_after(net, width) < 2.5
    small = init_weights(_deep_relu_net(50, width), "small_random", generator=_generator())
    assert _second_moment_after(small, width) < 1e-30  # the handbook's warning: the signal vanishes
    lecun = init_weights(_deep_relu_net(50, width), "lecun", generator=_generator())
    assert _second_moment_after(lecun, width) < 1e-10  # 1/sqrt(n) halves the variance at every ReLU


def test_zeros_is_the_symmetry_trap() -> None:
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    init_weights(net, "zeros")
    net(torch.randn(16, 4)).pow(2).sum().backward()
    grad = net[0].weight.grad
    assert torch.equal(grad, torch.zeros_like(grad))  # no unit can ever differ from another
    init_weights(net, "small_random", generator=_generator())
    net.zero_grad()
    net(torch.randn(16, 4)).pow(2).sum().backward()
    assert not torch.allclose(net[0].weight.grad[0], net[0].weight.grad[1])


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
    weight = function(torch.empty(300, 400))
    assert abs(float(weight.mean())) < 0.02 * expected_std
    assert float(weight.std()) == pytest.approx(expected_std, rel=0.02)


def test_uniform_bounds() -> None:
    weight = xavier_uniform_(torch.empty(30, 40), generator=_generator())
    assert float(weight.abs().max()) <= math.sqrt(6 / 70)


def test_sparse_has_exactly_k_nonzeros_per_unit() -> None:
    weight = sparse_(torch.empty(64, 32, 3, 3), connections=10, generator=_generator())
    assert (weight.view(64, -1) != 0).sum(dim=1).tolist() == [10] * 64
    assert float(weight[weight != 0].std()) == pytest.approx(0.01, rel=0.15)
    net = init_weights(nn.Sequential(nn.Linear(100, 20)), "sparse", generator=_generator())
    assert (net[0].weight != 0).sum(dim=1).tolist() == [10] * 20
    with pytest.raises(ValueError, match="connections"):
        sparse_(torch.empty(4, 5), connections=10)


def test_orthogonal() -> None:
    tall = orthogonal_(torch.empty(50, 20), generator=_generator())
    torch.testing.assert_close(tall.T @ tall, torch.eye(20), atol=1e-5, rtol=0)
    wide = orthogonal_(torch.empty(8, 4, 3, 3), gain=2.0, generator=_generator()).view(8, -1)
    torch.testing.assert_close(wide @ wide.T, 4.0 * torch.eye(8), atol=1e-4, rtol=0)


@pytest.mark.parametrize("prior", [0.01, 0.1, 0.5, 0.9])
def test_prior_probability_bias(prior: float) -> None:
    bias = prior_probability_bias_(torch.empty(5), prior)
    assert float(bias[0]) == pytest.approx(-math.log((1 - prior) / prior), rel=1e-6)
    torch.testing.assert_close(torch.sigmoid(bias), torch.full((5,), prior))
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
