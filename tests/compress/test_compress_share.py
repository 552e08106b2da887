"""k-means weight sharing against plain loops; Huffman against brute force; shared gradients; storage."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from visionkit.compress.share import (
    codebook_parameter_groups,
    decode_shared,
    huffman_code_lengths,
    kmeans_1d,
    nearest_centroid,
    pack_indices,
    share_weights,
    storage_report,
    unpack_indices,
)
from visionkit.errors import ConfigError


def _reference_kmeans(values: list[float], k: int, iterations: int) -> tuple[list[float], list[int]]:
    """Lloyd's algorithm, one value at a time: strict < keeps the lower centroid on ties."""
    lo, hi = min(values), max(values)
    centroids = [lo + (hi - lo) * j / (k - 1) for j in range(k)] if k > 1 else [lo]

    def assign() -> list[int]:
        result = []
        for v in values:
            best = 0
            for j in range(1, k):
                if abs(v - centroids[j]) < abs(v - centroids[best]):
                    best = j
            result.append(best)
        return result

    labels = assign()
    for _ in range(iterations):
        for j in range(k):
            members = [v for v, label in zip(values, labels, strict=True) if label == j]
            if members:
                centroids[j] = sum(members) / len(members)
        updated = assign()
        if updated == labels:
            break
        labels = updated
    return centroids, labels


@pytest.mark.parametrize(("count", "k", "seed"), [(40, 4, 0), (200, 16, 1), (7, 8, 2), (30, 1, 3)])
def test_kmeans_equals_plain_loop(count: int, k: int, seed: int) -> None:
    # multiples of 1/64 in [-2, 2]: every sum is exact in any order, so both sides agree bit for bit;
    # many values repeat, so ties between two centroids occur
    generator = torch.Generator().manual_seed(seed)
    values = torch.randint(-128, 129, (count,), generator=generator).double() / 64
    centroids, labels = kmeans_1d(values, k)
    reference_centroids, reference_labels = _reference_kmeans(values.tolist(), k, 50)
    assert labels.tolist() == reference_labels
    assert centroids.tolist() == reference_centroids


def test_nearest_centroid_breaks_ties_to_the_lower_index() -> None:
    assert nearest_centroid(torch.tensor([0.5, 1.5, 3.0]), torch.tensor([0.0, 1.0, 2.0])).tolist() == [
        0,
        1,
        2,
    ]


def _brute_force_cost(frequencies: list[int]) -> int:
    """Cheapest Σ f·ℓ over all code-length vectors satisfying Kraft's equality (an optimal prefix code)."""
    n = len(frequencies)
    best = math.inf
    for lengths in itertools.product(range(1, n), repeat=n):
        if sum(2.0**-length for length in lengths) == 1.0:
            best = min(best, sum(f * length for f, length in zip(frequencies, lengths, strict=True)))
    return int(best)


@pytest.mark.parametrize(
    "frequencies", [[5, 2, 1, 1], [1, 1, 1, 1, 1], [10, 1, 1], [3, 3], [7, 6, 5, 4, 3, 2]]
)
def test_huffman_is_optimal(frequencies: list[int]) -> None:
    lengths = huffman_code_lengths(dict(enumerate(frequencies)))
    assert sum(2.0 ** -lengths[s] for s in lengths) == 1.0  # a complete prefix code
    assert sum(frequencies[s] * lengths[s] for s in lengths) == _brute_force_cost(frequencies)


def test_huffman_single_symbol_and_empty() -> None:
    assert huffman_code_lengths({3: 10}) == {3: 1}
    assert huffman_code_lengths({}) == {}


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 8])
def test_pack_unpack_round_trip(bits: int) -> None:
    indices = torch.randint(0, 2**bits, (37,), generator=torch.Generator().manual_seed(bits)).to(torch.uint8)
    packed = pack_indices(indices, bits)
    assert packed.numel() == math.ceil(37 * bits / 8)
    assert torch.equal(unpack_indices(packed, bits, 37), indices)


def test_shared_gradient_is_the_sum_over_each_cluster() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(12, 6)
    x = torch.randn(5, 12)
    shared = share_weights(nn.Sequential(layer), bits=2)["0"]
    dense_weight = layer.weight.detach().clone().requires_grad_(True)
    nn.functional.linear(x, dense_weight, layer.bias).square().sum().backward()
    layer(x).square().sum().backward()
    expected = [0.0] * 4
    for g, index in zip(dense_weight.grad.flatten().tolist(), shared.indices.flatten().tolist(), strict=True):
        expected[index] += g
    # both sides sum the same per-weight gradients (each computed identically) in different orders
    abs_sums = [0.0] * 4
    for g, index in zip(dense_weight.grad.flatten().tolist(), shared.indices.flatten().tolist(), strict=True):
        abs_sums[index] += abs(g)
    n = shared.indices.numel()
    u = torch.finfo(torch.float32).eps / 2
    for got, want, bound in zip(shared.codebook.grad.tolist(), expected, abs_sums, strict=True):
        assert abs(got - want) <= 2 * (n * u / (1 - n * u)) * bound


def test_codebook_step_is_scaled_to_the_mean_gradient() -> None:
    layer = nn.Linear(16, 8)
    share_weights(nn.Sequential(layer), bits=2)
    groups = codebook_parameter_groups(layer, lr=0.1)
    assert [g["lr"] for g in groups] == [0.1, 0.1 * 4 / 128]


def test_shared_model_runs_decodes_and_stores_7x_smaller_at_4_bits() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 6 * 6, 64))
    shared = share_weights(net, bits=4)
    assert all(layer.codebook.numel() == 16 for layer in shared.values())
    x = torch.randn(2, 3, 8, 8)
    before = net(x)
    report = storage_report(net)
    assert report["packed_ratio"] >= 7.0
    decode_shared(net)
    assert isinstance(net[0].weight, nn.Parameter) and net[0].weight.unique().numel() <= 16
    assert torch.equal(net(x), before)


def test_bits_out_of_range_is_an_error() -> None:
    with pytest.raises(ConfigError, match="bits=9"):
        share_weights(nn.Sequential(nn.Linear(2, 2)), bits=9)
