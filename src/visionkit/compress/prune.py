"""Unstructured magnitude pruning with masks and sparsity schedules (handbook §27; Han et al. 2015,
"Learning both Weights and Connections").

The smallest-magnitude weights are set to zero, per layer (each layer loses the same fraction) or
globally (one threshold over all chosen layers). A :class:`MaskHook` keeps them at zero while the
model is fine-tuned. Iterative pruning raises the sparsity step by step along a schedule
(:func:`sparsity_schedule`: one-shot, linear, or the cubic schedule of Zhu & Gupta 2017).

What it buys: *storage*. A zero still costs a multiply on dense CPU kernels, so the model is exactly
as slow as before (``benchmarks/bench_compress.py`` measures it); :func:`sparse_size_bytes` gives the
size in compressed-sparse-row form, which is what shrinks.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> masks = magnitude_prune(net, 0.75)
    >>> [round(s, 2) for s in layer_sparsity(net).values()]
    [0.75, 0.75]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from visionkit.errors import ConfigError

__all__ = [
    "MaskHook",
    "apply_masks",
    "dense_size_bytes",
    "layer_sparsity",
    "magnitude_masks",
    "magnitude_prune",
    "prunable_layers",
    "sparse_size_bytes",
    "sparsity_schedule",
    "storage_ratio",
]


def prunable_layers(model: nn.Module, layers: Sequence[str] | None = None) -> dict[str, nn.Module]:
    """The ``Conv2d``/``Linear`` layers to prune: all of them, or those named in ``layers``.

    Raises:
        ConfigError: a name in ``layers`` is not a Conv2d/Linear of ``model`` (the message names it).
    """
    found = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    if layers is None:
        return found
    unknown = [name for name in layers if name not in found]
    if unknown:
        raise ConfigError(
            f"layers: {unknown} are not Conv2d/Linear layers of the model; known: {sorted(found)}"
        )
    return {name: found[name] for name in layers}


def _check_amount(amount: float) -> None:
    if not (isinstance(amount, int | float) and 0.0 < amount < 1.0):
        raise ConfigError(f"sparsity={amount!r}: expected a fraction strictly between 0 and 1")


def magnitude_masks(
    weights: dict[str, Tensor], amount: float, scope: Literal["layer", "global"] = "layer"
) -> dict[str, Tensor]:
    """Boolean keep-masks zeroing the ``amount`` fraction of smallest |w|, per tensor or over all of them.

    ``k = round(amount · n)`` weights are removed; ties at the threshold are broken by position (the
    earlier weight is removed first), so exactly ``k`` go.

    Example:
        >>> magnitude_masks({"w": torch.tensor([0.5, -0.1, 0.3, 0.1])}, 0.5)["w"]
        tensor([ True, False,  True, False])
    """
    _check_amount(amount)
    if scope == "layer":
        return {
            name: _keep_largest(w.detach().abs().flatten(), amount).view_as(w) for name, w in weights.items()
        }
    if scope != "global":
        raise ConfigError(f"scope={scope!r}: expected 'layer' or 'global'")
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    keep = _keep_largest(flat, amount)
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start : start + w.numel()].view_as(w)
        start += w.numel()
    return masks


def _keep_largest(magnitudes: Tensor, amount: float) -> Tensor:
    removed = round(amount * magnitudes.numel())
    keep = torch.ones_like(magnitudes, dtype=torch.bool)
    order = torch.sort(magnitudes, stable=True).indices  # ascending; equal values keep index order
    keep[order[:removed]] = False
    return keep


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Zero the masked-out weights of each named layer, in place."""
    for name, mask in masks.items():
        model.get_submodule(name).weight.mul_(mask)


def magnitude_prune(
    model: nn.Module,
    amount: float,
    *,
    scope: Literal["layer", "global"] = "layer",
    layers: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """Zero the smallest-magnitude weights of the Conv2d/Linear layers in place; returns the masks.

    Args:
        amount: target sparsity in (0, 1) of each layer (``"layer"``) or of all chosen layers together.
        layers: layer names (default: every Conv2d and Linear).
    """
    chosen = prunable_layers(model, layers)
    masks = magnitude_masks({name: m.weight for name, m in chosen.items()}, amount, scope)
    apply_masks(model, masks)
    return masks


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of exactly-zero weights of every Conv2d/Linear layer."""
    return {
        name: float((m.weight == 0).sum()) / m.weight.numel() for name, m in prunable_layers(model).items()
    }


def sparsity_schedule(
    final: float, steps: int, kind: Literal["one_shot", "linear", "cubic"] = "cubic", initial: float = 0.0
) -> list[float]:
    """Sparsity after each of ``steps`` pruning rounds.

    ``cubic`` is Zhu & Gupta (2017): ``s_t = s_f + (s_i − s_f)(1 − t/n)³`` — fast early, gentle late.

    Example:
        >>> [round(s, 3) for s in sparsity_schedule(0.8, 4, "cubic")]
        [0.463, 0.7, 0.788, 0.8]
    """
    _check_amount(final)
    if steps < 1:
        raise ConfigError(f"steps={steps}: expected at least 1 pruning round")
    if kind == "one_shot":
        return [final] * steps
    if kind == "linear":
        return [initial + (final - initial) * (t + 1) / steps for t in range(steps)]
    if kind == "cubic":
        return [final + (initial - final) * (1 - (t + 1) / steps) ** 3 for t in range(steps)]
    raise ConfigError(f"schedule={kind!r}: expected 'one_shot', 'linear' or 'cubic'")


class MaskHook:
    """Trainer hook: re-apply the masks after every optimizer step, so pruned weights stay zero while
    fine-tuning (momentum and weight decay would otherwise move them)."""

    def __init__(self, model: nn.Module, masks: dict[str, Tensor]) -> None:
        self.model, self.masks = model, masks

    def before_train(self) -> None:
        apply_masks(self.model, self.masks)

    def before_step(self) -> None:
        """Nothing before a batch."""

    def after_step(self) -> None:
        apply_masks(self.model, self.masks)

    def after_epoch(self) -> None:
        """Nothing after an epoch."""

    def after_train(self) -> None:
        """Nothing at the end."""


def sparse_size_bytes(weight: Tensor, value_bytes: int = 4, index_bytes: int = 4) -> int:
    """Bytes of ``weight`` stored as compressed sparse rows (rows = output channels): the nonzero
    values, one column index per value, and ``rows + 1`` row pointers.

    Example:
        >>> sparse_size_bytes(torch.tensor([[0.0, 2.0], [0.0, 0.0]]))  # 1 value, 1 index, 3 pointers
        20
    """
    rows = weight.shape[0] if weight.dim() else 1
    nonzero = int((weight != 0).sum())
    return nonzero * (value_bytes + index_bytes) + (rows + 1) * index_bytes


def dense_size_bytes(weight: Tensor) -> int:
    """Bytes of ``weight`` stored densely."""
    return weight.numel() * weight.element_size()


def storage_ratio(model: nn.Module) -> float:
    """Dense bytes / CSR bytes summed over every Conv2d/Linear weight (> 1 when sparse storage pays)."""
    layers = prunable_layers(model).values()
    dense = sum(dense_size_bytes(m.weight) for m in layers)
    sparse = sum(min(sparse_size_bytes(m.weight), dense_size_bytes(m.weight)) for m in layers)
    return dense / max(sparse, 1)
