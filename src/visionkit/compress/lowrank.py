"""Low-rank factorisation of Linear and Conv2d layers (handbook §27 "low-rank factorization").

* Linear ``W (out × in) ≈ U_r Σ_r V_rᵀ`` (truncated SVD, Denton et al. 2014): two Linear layers,
  ``in → r`` with weight ``√Σ_r V_rᵀ`` and ``r → out`` with ``U_r √Σ_r`` and the original bias.
  ``r(in + out)`` parameters instead of ``in · out``.
* Conv2d, spatially separable (Jaderberg et al. 2014, scheme 2):
  ``W[o, i, y, x] ≈ Σ_r V[r, i, y] H[o, r, x]``, from the SVD of ``W`` reshaped to
  ``(in·k_h) × (out·k_w)``: a ``k_h×1`` conv ``in → r`` then a ``1×k_w`` conv ``r → out``.
* Conv2d, Tucker-2 (Kim et al. 2016): HOSVD of the output and input modes, ``1×1 in → r_in``, a
  ``k×k`` core ``r_in → r_out`` and ``1×1 r_out → out``.

The rank of each layer is the smallest that keeps a fraction ``energy`` of ``Σ σᵢ²``
(:func:`rank_for_energy`), or the largest whose factors fit ``size`` times the original parameters
(:func:`rank_for_size`). A factorisation that would not reduce the parameters leaves the layer as it is.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> fc = nn.Linear(64, 64)
    >>> small = factorize_linear(fc, rank=8)
    >>> [layer.weight.shape for layer in small]
    [torch.Size([8, 64]), torch.Size([64, 8])]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from visionkit.compress.prune import prunable_layers
from visionkit.engine.compressed import factorized_structure
from visionkit.engine.compressed import linear_structure as _structure_linear
from visionkit.engine.compressed import separable_structure as _structure_separable
from visionkit.engine.compressed import tucker2_structure as _structure_tucker2
from visionkit.errors import ConfigError

__all__ = [
    "factorize_conv_separable",
    "factorize_conv_tucker2",
    "factorize_linear",
    "factorize_model",
    "factorized_structure",
    "rank_for_energy",
    "rank_for_size",
]

Method = Literal["svd", "separable", "tucker2"]


def rank_for_energy(singular_values: Tensor, energy: float) -> int:
    """Smallest ``r`` with ``Σ_{i<r} σᵢ² ≥ energy · Σ σᵢ²`` (``σ`` sorted descending; at least 1).

    Example:
        >>> rank_for_energy(torch.tensor([3.0, 2.0, 1.0]), 0.9)  # 9/14 < 0.9 <= 13/14
        2
    """
    if not 0.0 < energy <= 1.0:
        raise ConfigError(f"energy={energy!r}: expected a fraction in (0, 1]")
    squares = singular_values.double() ** 2
    total = float(squares.sum())
    if total == 0.0:
        return 1
    cumulative = torch.cumsum(squares, 0)
    return int((cumulative < energy * total).sum()) + 1 if energy < 1.0 else int((squares > 0).sum())


def rank_for_size(rows: int, columns: int, size: float) -> int:
    """Largest rank ``r`` with ``r (rows + columns) <= size · rows · columns`` (at least 1)."""
    if not 0.0 < size < 1.0:
        raise ConfigError(f"size={size!r}: expected a fraction of the parameters in (0, 1)")
    return max(1, math.floor(size * rows * columns / (rows + columns)))


def _split(
    matrix: Tensor, rank: int, svd: tuple[Tensor, Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """``A (m × r), B (r × n)`` with ``A B`` the best rank-``r`` approximation of ``matrix`` (float64 SVD,
    or the given ``svd = (U, S, Vᴴ)`` of it)."""
    u, s, vh = svd if svd is not None else torch.linalg.svd(matrix.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return u[:, :rank] * root, root[:, None] * vh[:rank]


def _like(tensor: Tensor, reference: Tensor) -> Tensor:
    return tensor.to(dtype=reference.dtype, device=reference.device)


@torch.no_grad()
def factorize_linear(
    linear: nn.Linear, rank: int, svd: tuple[Tensor, Tensor, Tensor] | None = None
) -> nn.Sequential:
    """``Linear(in, r, bias=False) → Linear(r, out)`` holding the rank-``r`` truncated SVD of the weight
    (computed in float64, or ``svd = (U, S, Vᴴ)`` already computed, e.g. in float32 for a large layer)."""
    weight = linear.weight
    first, second = _structure_linear(linear, rank)
    a, b = _split(weight, rank, svd)  # weight ≈ a @ b, a: (out, r), b: (r, in)
    first.weight.copy_(_like(b, weight))
    second.weight.copy_(_like(a, weight))
    if linear.bias is not None:
        second.bias.copy_(linear.bias)
    return nn.Sequential(first, second)


@torch.no_grad()
def factorize_conv_separable(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """``k_h×1`` then ``1×k_w`` convolutions with ``rank`` channels between (Jaderberg scheme 2)."""
    layers = _structure_separable(conv, rank)
    out_c, in_c, kh, kw = conv.weight.shape
    matrix = conv.weight.permute(1, 2, 0, 3).reshape(in_c * kh, out_c * kw)  # rows (i, y), columns (o, x)
    a, b = _split(matrix, rank)  # a: (in·kh, r), b: (r, out·kw)
    layers[0].weight.copy_(_like(a.T.reshape(rank, in_c, kh, 1), conv.weight))
    layers[1].weight.copy_(_like(b.reshape(rank, out_c, kw).permute(1, 0, 2).unsqueeze(2), conv.weight))
    if conv.bias is not None:
        layers[1].bias.copy_(conv.bias)
    return layers


def _mode_basis(weight: Tensor, mode: int, rank: int) -> Tensor:
    """Leading ``rank`` left singular vectors of the mode-``mode`` unfolding of a 4-D tensor."""
    unfolded = weight.movedim(mode, 0).reshape(weight.shape[mode], -1)
    return torch.linalg.svd(unfolded, full_matrices=False)[0][:, :rank]


@torch.no_grad()
def factorize_conv_tucker2(conv: nn.Conv2d, ranks: tuple[int, int]) -> nn.Sequential:
    """``1×1 in → r_in``, ``k×k r_in → r_out`` (the Tucker core), ``1×1 r_out → out`` (HOSVD factors).

    ``W ≈ core ×₀ U_out ×₁ U_in`` with ``core = W ×₀ U_outᵀ ×₁ U_inᵀ``; ``ranks = (r_in, r_out)``.
    """
    layers = _structure_tucker2(conv, ranks)
    weight = conv.weight.double()
    u_out, u_in = _mode_basis(weight, 0, ranks[1]), _mode_basis(weight, 1, ranks[0])
    core = torch.einsum("oikl,or,is->rskl", weight, u_out, u_in)  # (r_out, r_in, kh, kw)
    layers[0].weight.copy_(_like(u_in.T[:, :, None, None], conv.weight))
    layers[1].weight.copy_(_like(core, conv.weight))
    layers[2].weight.copy_(_like(u_out[:, :, None, None], conv.weight))
    if conv.bias is not None:
        layers[2].bias.copy_(conv.bias)
    return layers


def _singular_values(module: nn.Module, method: Method, mode: int = 0) -> Tensor:
    weight = module.weight.detach().double()
    if method == "svd":
        return torch.linalg.svdvals(weight)
    if method == "separable":
        out_c, in_c, kh, kw = weight.shape
        return torch.linalg.svdvals(weight.permute(1, 2, 0, 3).reshape(in_c * kh, out_c * kw))
    return torch.linalg.svdvals(weight.movedim(mode, 0).reshape(weight.shape[mode], -1))


def _choose(module: nn.Module, method: Method, energy: float | None, size: float | None) -> Any:
    """The rank (or Tucker ranks) for ``module``, or ``None`` when it would not save parameters."""
    weight = module.weight
    params = weight.numel()
    if method == "svd":
        rows, columns = weight.shape
    elif method == "separable":
        rows, columns = weight.shape[1] * weight.shape[2], weight.shape[0] * weight.shape[3]
    else:
        ranks = []
        for mode, width in ((1, weight.shape[1]), (0, weight.shape[0])):
            if energy is not None:
                ranks.append(min(width, rank_for_energy(_singular_values(module, method, mode), energy)))
            else:
                ranks.append(max(1, round(width * math.sqrt(size or 1.0))))
        r_in, r_out = ranks
        cost = (
            weight.shape[1] * r_in
            + r_in * r_out * weight.shape[2] * weight.shape[3]
            + r_out * weight.shape[0]
        )
        return (r_in, r_out) if cost < params else None
    rank = (
        rank_for_energy(_singular_values(module, method), energy)
        if energy is not None
        else rank_for_size(rows, columns, size or 1.0)
    )
    return rank if rank * (rows + columns) < params else None


def _factorize_svd(module: nn.Linear, energy: float | None, size: float | None, dtype: torch.dtype) -> Any:
    """``(rank, factorised layers)`` from one SVD of the weight in ``dtype``, or ``None`` (no saving)."""
    rows, columns = module.weight.shape
    svd = torch.linalg.svd(module.weight.detach().to(dtype), full_matrices=False)
    rank = (
        rank_for_energy(svd[1], energy) if energy is not None else rank_for_size(rows, columns, size or 1.0)
    )
    if rank * (rows + columns) >= rows * columns:
        return None
    return rank, factorize_linear(module, rank, svd)


def factorize_model(
    model: nn.Module,
    method: Method = "svd",
    *,
    energy: float | None = 0.9,
    size: float | None = None,
    layers: Sequence[str] | None = None,
    svd_dtype: torch.dtype = torch.float64,
) -> dict[str, Any]:
    """Factorise, in place, the Linear layers (``"svd"``) or the k×k Conv2d layers (``"separable"``,
    ``"tucker2"``) of ``model``, each at the rank keeping ``energy`` (or fitting ``size``).

    ``svd_dtype`` (``"svd"`` only): the precision of the one SVD per layer that gives both the rank and
    the factors. float64 by default; float32 is several times faster on the 4096 × 25088 fully
    connected layers of VGG (relative error of the factors ~ 1e-6 of ‖W‖ instead of ~ 1e-15).

    Returns:
        layer name -> rank (Tucker-2: ``[r_in, r_out]``) of every factorised layer; skipped layers
        (no parameter saving) are absent.
    """
    if (energy is None) == (size is None):
        raise ConfigError(
            "give exactly one of energy= (kept fraction of Σσ²) or size= (fraction of parameters)"
        )
    if method not in ("svd", "separable", "tucker2"):
        raise ConfigError(f"method={method!r}: expected 'svd', 'separable' or 'tucker2'")
    kind = nn.Linear if method == "svd" else nn.Conv2d
    chosen = {
        name: m
        for name, m in prunable_layers(model, layers).items()
        if isinstance(m, kind) and (kind is nn.Linear or max(m.kernel_size) > 1)
    }
    ranks: dict[str, Any] = {}
    for name, module in chosen.items():
        if method == "svd":
            done = _factorize_svd(module, energy, size, svd_dtype)
            if done is not None:
                _replace(model, name, done[1])
                ranks[name] = done[0]
            continue
        rank = _choose(module, method, energy, size)
        if rank is None:
            continue
        factory = {
            "svd": factorize_linear,
            "separable": factorize_conv_separable,
            "tucker2": factorize_conv_tucker2,
        }
        _replace(model, name, factory[method](module, rank))
        ranks[name] = list(rank) if isinstance(rank, tuple) else rank
    return ranks


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
