"""Low-rank factorisation: rank by energy against a hand loop; the factor layers compose exactly.

The structure tests put small integers into the factor layers themselves (not SVD output), rebuild the
one weight they stand for by an explicit sum, and compare the two forward passes on integer inputs in
float64 — every value is an integer far below 2⁵³, so both are exact and must be equal. That checks the
reshapes, strides, paddings and dilations; the SVD itself is torch's (LAPACK).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visionkit.compress.lowrank import (
    factorize_conv_separable,
    factorize_conv_tucker2,
    factorize_linear,
    factorize_model,
    factorized_structure,
    rank_for_energy,
    rank_for_size,
)
from visionkit.errors import ConfigError


def _hand_rank(singular_values: list[float], energy: float) -> int:
    total = sum(s * s for s in singular_values)
    kept = 0.0
    for rank, s in enumerate(singular_values, 1):
        kept += s * s
        if kept >= energy * total:
            return rank
    return len(singular_values)


@pytest.mark.parametrize("energy", [0.5, 0.64, 0.9, 0.99, 1.0])
def test_rank_for_energy_equals_hand_loop(energy: float) -> None:
    values = [4.0, 3.0, 2.0, 1.0, 1.0, 0.5]  # squares sum exactly: 30.25
    assert rank_for_energy(torch.tensor(values), energy) == _hand_rank(values, energy)


def test_rank_for_energy_boundary_is_inclusive() -> None:
    assert rank_for_energy(torch.tensor([3.0, 1.0]), 0.9) == 1  # 9 / 10 = 0.9 exactly: rank 1 suffices


def test_rank_for_size() -> None:
    assert rank_for_size(100, 50, 0.3) == 10  # 10 · 150 = 1500 = 0.3 · 5000
    with pytest.raises(ConfigError, match="size"):
        rank_for_size(10, 10, 1.5)


def _integers(module: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randint(-2, 3, parameter.shape, generator=generator))


def test_separable_structure_composes_to_one_convolution() -> None:
    conv = nn.Conv2d(3, 4, (3, 5), stride=(2, 1), padding=(1, 2), dilation=(1, 2)).double()
    pair = factorized_structure(conv, "separable", 2).double()
    _integers(pair, 0)
    vertical, horizontal = pair[0].weight, pair[1].weight  # (r, in, kh, 1), (out, r, 1, kw)
    weight = torch.einsum("riy,orx->oiyx", vertical[..., 0], horizontal[:, :, 0])
    x = torch.randint(-3, 4, (2, 3, 9, 11), generator=torch.Generator().manual_seed(1)).double()
    expected = nn.functional.conv2d(x, weight, pair[1].bias, conv.stride, conv.padding, conv.dilation)
    assert torch.equal(pair(x), expected)


def test_tucker2_structure_composes_to_one_convolution() -> None:
    conv = nn.Conv2d(5, 6, 3, stride=2, padding=1).double()
    layers = factorized_structure(conv, "tucker2", (2, 3)).double()
    _integers(layers, 2)
    first, core, last = (layer.weight for layer in layers)
    weight = torch.einsum("si,rskl,or->oikl", first[:, :, 0, 0], core, last[:, :, 0, 0])
    x = torch.randint(-3, 4, (2, 5, 7, 7), generator=torch.Generator().manual_seed(3)).double()
    expected = nn.functional.conv2d(x, weight, layers[2].bias, conv.stride, conv.padding)
    assert torch.equal(layers(x), expected)


def test_svd_factors_are_the_truncated_svd() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(7, 5).double()
    pair = factorize_linear(linear, 3)
    u, s, vh = torch.linalg.svd(linear.weight.detach(), full_matrices=False)
    assert torch.equal(pair[0].weight, s[:3].sqrt()[:, None] * vh[:3])
    assert torch.equal(pair[1].weight, u[:, :3] * s[:3].sqrt())
    assert torch.equal(pair[1].bias, linear.bias)


def test_factorize_model_skips_layers_that_would_grow() -> None:
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))  # rank 1 of 64x1: 65 > 64 params
    ranks = factorize_model(net, "svd", energy=0.5)
    assert list(ranks) == ["0"] and isinstance(net[0], nn.Sequential) and isinstance(net[2], nn.Linear)
    assert net(torch.randn(3, 64)).shape == (3, 1)


def test_exactly_one_of_energy_and_size() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        factorize_model(nn.Linear(4, 4), "svd", energy=None, size=None)
    with pytest.raises(ConfigError, match="method"):
        factorize_model(nn.Linear(4, 4), "cp", energy=0.9)  # type: ignore[arg-type]


def test_separable_and_tucker2_factorise_convolutions_of_a_model() -> None:
    torch.manual_seed(0)
    for method in ("separable", "tucker2"):
        net = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 8, 1))
        ranks = factorize_model(net, method, energy=0.5)
        assert list(ranks) == ["0"], method  # 1x1 convolutions are left alone
        assert net(torch.randn(1, 16, 6, 6)).shape == (1, 8, 6, 6)
    full = nn.Conv2d(4, 4, 3)
    assert sum(p.numel() for p in factorize_conv_separable(full, 12).parameters()) > 0
    assert factorize_conv_tucker2(full, (4, 4))[1].weight.shape == (4, 4, 3, 3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_factorize_model_uses_one_svd_in_the_chosen_precision(dtype: torch.dtype) -> None:
    """The rank comes from the singular values of that SVD (hand loop) and the factors are its truncation
    (same operations on the same tensors: equal)."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(40, 30))
    weight = net[0].weight.detach().clone()
    ranks = factorize_model(net, "svd", energy=0.6, svd_dtype=dtype)
    u, s, vh = torch.linalg.svd(weight.to(dtype), full_matrices=False)
    rank = _hand_rank(s.tolist(), 0.6)
    assert ranks == {"0": rank} and rank * 70 < 1200
    root = s[:rank].sqrt()
    assert torch.equal(net[0][0].weight, (root[:, None] * vh[:rank]).float())
    assert torch.equal(net[0][1].weight, (u[:, :rank] * root).float())
