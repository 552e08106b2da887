"""k-means weight sharing (handbook §27 "parameter sharing"; Han et al. 2016, "Deep Compression").

The weights of a layer are clustered into ``2^bits`` values (1-D k-means, centroids initialised linearly
between the smallest and largest weight, as the paper found best). The layer then stores a *codebook*
of ``2^bits`` floats and one ``bits``-bit index per weight; its forward decodes ``codebook[indices]``
(a ``torch.nn.utils.parametrize`` parametrization), so the model still runs and can be fine-tuned:
the gradient of a centroid is the sum of the gradients of the weights that share it. Huffman coding of
the indices (:func:`huffman_code_lengths`) shrinks the storage further.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> layer = nn.Linear(64, 32)
    >>> shared = share_weights(nn.Sequential(layer), bits=4)
    >>> layer.weight.unique().numel() <= 16, shared["0"].indices.dtype
    (True, torch.uint8)
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from visionkit.compress.prune import prunable_layers
from visionkit.engine.compressed import unpack_indices
from visionkit.errors import ConfigError

__all__ = [
    "CodebookWeight",
    "SharedLayer",
    "codebook_parameter_groups",
    "decode_shared",
    "huffman_code_lengths",
    "kmeans_1d",
    "nearest_centroid",
    "pack_indices",
    "share_weights",
    "shared_layers",
    "storage_report",
    "unpack_indices",
]


def nearest_centroid(values: Tensor, centroids: Tensor, chunk: int = 1 << 16) -> Tensor:
    """Index of the nearest centroid of each value, ``|v − c|`` in float64; ties go to the lower index.

    Args:
        values: ``(N,)``; centroids: ``(K,)``.

    Returns:
        ``(N,)`` int64.
    """
    values, centroids = values.double(), centroids.double()
    parts = [
        (values[start : start + chunk, None] - centroids[None]).abs().argmin(1)  # argmin: first minimum
        for start in range(0, values.numel(), chunk)
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def kmeans_1d(values: Tensor, clusters: int, *, iterations: int = 50) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means on scalars with linear initialisation (float64 inside).

    Each iteration assigns every value to its nearest centroid (:func:`nearest_centroid`) and moves each
    centroid to the mean of its values; a centroid with no values stays where it is. Stops when the
    assignment no longer changes or after ``iterations``.

    Args:
        values: ``(N,)`` with ``N >= 1``.
        clusters: number of centroids ``K >= 1``.

    Returns:
        ``(centroids (K,) float64, assignment (N,) int64)``.

    Example:
        >>> kmeans_1d(torch.tensor([0.0, 0.1, 1.0, 1.2], dtype=torch.float64), 2)[0].tolist()
        [0.05, 1.1]
    """
    if values.numel() == 0:
        raise ConfigError("kmeans_1d: no values to cluster")
    if clusters < 1:
        raise ConfigError(f"kmeans_1d: clusters={clusters}, expected >= 1")
    values = values.detach().double().flatten()
    low, high = values.min(), values.max()
    steps = torch.arange(clusters, dtype=torch.float64)
    centroids = low + (high - low) * steps / max(clusters - 1, 1)  # linear initialisation
    assignment = nearest_centroid(values, centroids)
    for _ in range(iterations):
        sums = torch.zeros(clusters, dtype=torch.float64).index_add_(0, assignment, values)
        counts = torch.bincount(assignment, minlength=clusters)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        updated = nearest_centroid(values, centroids)
        if torch.equal(updated, assignment):
            break
        assignment = updated
    return centroids, assignment


class CodebookWeight(nn.Module):
    """Parametrization ``weight = codebook[indices]``: the stored parameter is the ``(K,)`` codebook.

    ``right_inverse`` (used when it is registered) returns the per-cluster mean of a dense weight under
    the fixed indices — the least-squares codebook, equal to the k-means centroids at convergence.
    """

    def __init__(self, indices: Tensor, clusters: int) -> None:
        super().__init__()
        self.clusters = clusters
        self.register_buffer("indices", indices.to(torch.uint8))

    def forward(self, codebook: Tensor) -> Tensor:
        return codebook[self.indices.long()]

    def right_inverse(self, weight: Tensor) -> Tensor:
        flat, index = weight.detach().flatten(), self.indices.long().flatten()
        sums = torch.zeros(self.clusters, dtype=weight.dtype, device=weight.device).index_add_(0, index, flat)
        counts = torch.bincount(index, minlength=self.clusters).to(weight.dtype)
        return sums / counts.clamp(min=1)


@dataclass
class SharedLayer:
    """One shared layer: its ``codebook`` ``(2^bits,)`` and ``indices`` (the weight's shape, uint8)."""

    bits: int
    codebook: Tensor
    indices: Tensor


def _check_bits(bits: int) -> None:
    if not (isinstance(bits, int) and 1 <= bits <= 8):
        raise ConfigError(f"bits={bits!r}: expected an integer from 1 to 8 (2 to 256 shared values)")


def share_layer(module: nn.Module, bits: int, *, iterations: int = 50, indices: Tensor | None = None) -> None:
    """Cluster ``module.weight`` (or use the given ``indices``) and parametrize it by its codebook."""
    _check_bits(bits)
    weight = module.weight
    if indices is None:
        _, assignment = kmeans_1d(weight.detach().flatten(), 2**bits, iterations=iterations)
        indices = assignment.view(weight.shape)
    parametrize.register_parametrization(module, "weight", CodebookWeight(indices, 2**bits), unsafe=True)


def share_weights(
    model: nn.Module, bits: int = 4, *, layers: Sequence[str] | None = None, iterations: int = 50
) -> dict[str, SharedLayer]:
    """Replace the weights of every Conv2d/Linear (or ``layers``) by a shared codebook, in place.

    Returns:
        layer name -> :class:`SharedLayer` (views of the live codebook and indices).
    """
    _check_bits(bits)
    for _name, module in prunable_layers(model, layers).items():
        if not parametrize.is_parametrized(module, "weight"):
            share_layer(module, bits, iterations=iterations)
    return shared_layers(model)


def shared_layers(model: nn.Module) -> dict[str, SharedLayer]:
    """Every layer of ``model`` whose weight is a :class:`CodebookWeight`."""
    found = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module, "weight"):
            decode = module.parametrizations.weight[0]
            if isinstance(decode, CodebookWeight):
                codebook = module.parametrizations.weight.original
                found[name] = SharedLayer(int(math.log2(decode.clusters)), codebook, decode.indices)
    return found


def codebook_parameter_groups(model: nn.Module, lr: float) -> list[dict[str, object]]:
    """Optimizer groups for fine-tuning a shared model: each codebook at ``lr · K / n`` (``n`` weights
    share its ``K`` centroids), every other trainable parameter at ``lr``.

    A centroid's gradient is the *sum* of the gradients of the weights that share it (Deep Compression);
    scaling its step by ``K / n`` makes it a step along their mean gradient, so the ``lr`` that fine-tunes
    the dense model also fine-tunes the codebooks instead of overshooting by a factor of ``n / K``.
    """
    groups: list[dict[str, object]] = []
    codebooks = set()
    for layer in shared_layers(model).values():
        codebooks.add(id(layer.codebook))
        groups.append({"params": [layer.codebook], "lr": lr * layer.codebook.numel() / layer.indices.numel()})
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in codebooks]
    return ([{"params": others, "lr": lr}] if others else []) + groups


def decode_shared(model: nn.Module) -> nn.Module:
    """Turn every shared layer back into a plain dense weight (the decoded values), in place."""
    for name in shared_layers(model):
        parametrize.remove_parametrizations(model.get_submodule(name), "weight", leave_parametrized=True)
    return model


def pack_indices(indices: Tensor, bits: int) -> Tensor:
    """Pack ``bits``-bit indices into bytes, ``8 // bits`` per byte for 1, 2, 4, 8 bits, otherwise as a
    little-endian bit stream. Returns a flat uint8 tensor of ``ceil(N · bits / 8)`` bytes.

    Example:
        >>> pack_indices(torch.tensor([1, 2, 3, 15], dtype=torch.uint8), 4).tolist()
        [33, 243]
    """
    _check_bits(bits)
    flat = indices.flatten().long()
    positions = torch.arange(bits)
    stream = ((flat[:, None] >> positions) & 1).flatten()  # bit j of index i at i * bits + j
    stream = torch.cat([stream, stream.new_zeros(-stream.numel() % 8)])
    return (stream.view(-1, 8) << torch.arange(8)).sum(1).to(torch.uint8)


def huffman_code_lengths(frequencies: dict[int, int]) -> dict[int, int]:
    """Code length in bits of each symbol of an optimal prefix code (Huffman 1952).

    A single symbol gets length 1. Ties between equal weights are merged in insertion order, so the
    lengths are deterministic.

    Example:
        >>> huffman_code_lengths({0: 5, 1: 2, 2: 1, 3: 1})
        {0: 1, 1: 2, 2: 3, 3: 3}
    """
    symbols = [s for s, f in frequencies.items() if f > 0]
    if len(symbols) <= 1:
        return {s: 1 for s in symbols}
    heap = [(frequencies[s], order, [s]) for order, s in enumerate(symbols)]
    heapq.heapify(heap)
    lengths = dict.fromkeys(symbols, 0)
    order = len(heap)
    while len(heap) > 1:
        weight_a, _, group_a = heapq.heappop(heap)
        weight_b, _, group_b = heapq.heappop(heap)
        for symbol in group_a + group_b:
            lengths[symbol] += 1
        heapq.heappush(heap, (weight_a + weight_b, order, group_a + group_b))
        order += 1
    return lengths


def storage_report(model: nn.Module) -> dict[str, float]:
    """Bytes of the shared weights: dense float32, packed codebook + indices, Huffman-coded indices.

    Returns:
        ``dense_bytes`` (32 bits per weight), ``packed_bytes`` (codebook in float32 + ``bits`` per index),
        ``huffman_bytes`` (codebook + Huffman-coded indices + a one-byte code length per symbol),
        ``weights`` (count) and the two ratios ``packed_ratio`` and ``huffman_ratio`` (dense / coded).
    """
    dense = packed = huffman = weights = 0.0
    for layer in shared_layers(model).values():
        count = layer.indices.numel()
        codebook_bytes = layer.codebook.numel() * 4
        weights += count
        dense += count * 4
        packed += codebook_bytes + math.ceil(count * layer.bits / 8)
        frequencies = Counter(layer.indices.flatten().tolist())
        lengths = huffman_code_lengths(dict(frequencies))
        bits = sum(frequencies[s] * lengths[s] for s in lengths)
        huffman += codebook_bytes + math.ceil(bits / 8) + layer.codebook.numel()
    return {
        "weights": weights,
        "dense_bytes": dense,
        "packed_bytes": packed,
        "huffman_bytes": huffman,
        "packed_ratio": dense / packed if packed else math.nan,
        "huffman_ratio": dense / huffman if huffman else math.nan,
    }
