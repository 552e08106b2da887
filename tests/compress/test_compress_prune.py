"""Unstructured magnitude pruning against plain loops; the mask survives fine-tuning; sparse storage."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visionkit.compress.prune import (
    MaskHook,
    layer_sparsity,
    magnitude_masks,
    magnitude_prune,
    sparse_size_bytes,
    sparsity_schedule,
)
from visionkit.engine.trainer import Trainer
from visionkit.errors import ConfigError


def _reference_masks(weights: dict[str, torch.Tensor], amount: float, scope: str) -> dict[str, torch.Tensor]:
    """Plain loop: list every (|w|, layer position, flat index), sort, drop the first round(amount·n)."""
    groups = [[name] for name in weights] if scope == "layer" else [list(weights)]
    masks = {name: torch.ones(w.numel(), dtype=torch.bool) for name, w in weights.items()}
    for names in groups:
        entries = []
        for name in names:
            for index, value in enumerate(weights[name].flatten().tolist()):
                entries.append((abs(value), names.index(name), index, name))
        entries.sort(key=lambda e: (e[0], e[1], e[2]))
        for _, _, index, name in entries[: round(amount * len(entries))]:
            masks[name][index] = False
    return {name: mask.view_as(weights[name]) for name, mask in masks.items()}


@pytest.mark.parametrize("scope", ["layer", "global"])
@pytest.mark.parametrize("amount", [0.1, 0.5, 0.93])
def test_masks_equal_plain_loop_with_ties(scope: str, amount: float) -> None:
    generator = torch.Generator().manual_seed(0)
    weights = {  # integers in [-3, 3]: many ties at every threshold
        "a": torch.randint(-3, 4, (6, 5), generator=generator).float(),
        "b": torch.randint(-3, 4, (4, 3, 2, 2), generator=generator).float(),
    }
    ours = magnitude_masks(weights, amount, scope)
    reference = _reference_masks(weights, amount, scope)
    for name in weights:
        assert torch.equal(ours[name], reference[name]), name


def test_layer_sparsity_is_reported_and_global_scope_differs() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    with torch.no_grad():
        net[2].weight.mul_(10)  # the second layer is larger: global pruning hits the first harder
    magnitude_prune(net, 0.5, scope="global")
    sparsity = layer_sparsity(net)
    assert sparsity["0"] > 0.5 > sparsity["2"]
    total = sum(sparsity[n] * m.weight.numel() for n, m in (("0", net[0]), ("2", net[2])))
    assert total == round(0.5 * (200 + 100))


def test_mask_survives_fine_tuning_with_momentum_and_weight_decay() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(4)]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    Trainer(net, optimizer, data, loss_fn=nn.functional.cross_entropy, max_epochs=1).train()  # momentum state
    masks = magnitude_prune(net, 0.75)
    Trainer(net, optimizer, data, loss_fn=nn.functional.cross_entropy, max_epochs=2,
            hooks=[MaskHook(net, masks)]).train()  # fmt: skip
    for name, mask in masks.items():
        assert torch.all(net.get_submodule(name).weight[~mask] == 0)
        assert torch.all(net.get_submodule(name).weight[mask] != 0)


def test_schedules_follow_their_formulas() -> None:
    assert sparsity_schedule(0.8, 3, "one_shot") == [0.8, 0.8, 0.8]
    assert sparsity_schedule(0.8, 4, "linear") == [0.0 + (0.8 - 0.0) * t / 4 for t in range(1, 5)]
    cubic = sparsity_schedule(0.9, 5, "cubic", initial=0.1)
    for t, value in enumerate(cubic, 1):
        assert value == 0.9 + (0.1 - 0.9) * (1 - t / 5) ** 3  # Zhu & Gupta, same operations
    assert cubic[-1] == 0.9


def test_sparse_size_counts_values_indices_and_row_pointers() -> None:
    weight = torch.zeros(3, 2, 2, 2)
    weight[0, 0, 0, 0] = 1.0
    weight[2, 1, 1, 1] = -2.0
    assert sparse_size_bytes(weight) == 2 * (4 + 4) + (3 + 1) * 4


@pytest.mark.parametrize("amount", [0.0, 1.0, -1.0, 2.0])
def test_sparsity_outside_open_interval_is_an_error(amount: float) -> None:
    with pytest.raises(ConfigError, match="sparsity"):
        magnitude_prune(nn.Linear(2, 2), amount)


def test_unknown_layer_name_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="'fc9'"):
        magnitude_prune(nn.Sequential(nn.Linear(2, 2)), 0.5, layers=["fc9"])
