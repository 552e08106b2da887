"""LR range test on a quadratic whose divergence threshold is known; budgeted random search."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from tolerances import gamma
from visionkit.engine.lr_finder import lr_range_test, plot_lr_finder
from visionkit.engine.search import random_search


def _regression():
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(64, 4, generator=generator) * torch.tensor([3.0, 1.0, 0.5, 0.2])
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.01 * torch.randn(
        64, 1, generator=generator
    )
    # full-batch GD on mean((Xw - y)^2) diverges exactly above lr = 2 / lambda_max(2/N X^T X)
    hessian = 2 / len(inputs) * inputs.T @ inputs
    return inputs, targets, 2 / float(torch.linalg.eigvalsh(hessian).max())


def test_range_test_brackets_the_divergence_threshold_and_restores_state(tmp_path: Path) -> None:
    inputs, targets, threshold = _regression()
    model = nn.Linear(4, 1, bias=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.123, momentum=0.0)
    before_model, before_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    result = lr_range_test(
        model,
        optimizer,
        [(inputs, targets)],
        nn.functional.mse_loss,
        start_lr=1e-5,
        end_lr=10.0,
        num_steps=120,
    )
    # behaviour checks: diverged at 0.87 against the threshold 0.149; the suggestion (an argmin over the
    # smoothed slopes) moves with the kernels — 0.034 native, 0.011 default, 0.043 avx2 — all well below
    assert result.diverged_at is not None and result.diverged_at > threshold  # stable below 2/lambda_max
    assert result.suggestion < threshold
    assert result.losses[0] > min(result.losses)
    assert all(b > a for a, b in zip(result.lrs, result.lrs[1:], strict=False))  # geometric increase
    # lrs[k] = start·ratio**k with ratio the same float as here; start·ratio**0 is start, start·ratio**1
    # rounds once and the quotient once: within γ₂ (relative)
    ratio = (10.0 / 1e-5) ** (1 / 119)
    assert abs(result.lrs[1] / result.lrs[0] - ratio) <= gamma(2, torch.float64) * ratio
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before_model.items())
    assert (
        optimizer.state_dict()["param_groups"][0]["lr"] == before_optimizer["param_groups"][0]["lr"] == 0.123
    )
    with Image.open(plot_lr_finder(result, tmp_path / "lr.png")) as image:
        assert image.format == "PNG"


def test_range_test_arguments() -> None:
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="start_lr"):
        lr_range_test(model, optimizer, [], nn.functional.mse_loss, start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="num_steps"):
        lr_range_test(model, optimizer, [], nn.functional.mse_loss, num_steps=1)


@dataclass(frozen=True)
class Recipe:
    lr: float = 0.1
    width: int = 8
    optimizer: str = "sgd"


def _score(recipe: Recipe) -> float:
    return -((math.log10(recipe.lr) + 2) ** 2) - abs(recipe.width - 20) / 10 - (recipe.optimizer != "adam")


def test_random_search_finds_good_region_within_budget() -> None:
    calls = []

    def objective(recipe: Recipe) -> float:
        calls.append(recipe)
        return _score(recipe)

    space = {"lr": (1e-5, 1.0, "log"), "width": (4, 64), "optimizer": ["sgd", "adam"]}
    result = random_search(Recipe(), space, objective, budget=40, seed=1)
    assert len(calls) == len(result.trials) == 40
    assert result.best_score == max(t.score for t in result.trials) == _score(result.best_recipe)
    assert result.best_recipe.optimizer == "adam" and 1e-3 < result.best_recipe.lr < 1e-1
    assert all(isinstance(t.values["width"], int) and 4 <= t.values["width"] <= 64 for t in result.trials)
    assert all(1e-5 <= t.values["lr"] <= 1.0 for t in result.trials)
    again = random_search(Recipe(), space, _score, budget=40, seed=1)
    assert [t.values for t in again.trials] == [t.values for t in result.trials]
    worst = random_search(Recipe(), space, _score, budget=40, seed=1, maximize=False)
    assert worst.best_score == min(t.score for t in result.trials)


@pytest.mark.parametrize(
    ("space", "message"),
    [({"depth": [1, 2]}, "unknown recipe fields \\['depth'\\]"), ({"lr": (0.0, 1.0, "log")}, "0 < low"),
     ({"lr": []}, "empty"), ({"lr": "fast"}, "must be a list")],
)  # fmt: skip
def test_random_search_rejects_bad_spaces(space, message) -> None:
    with pytest.raises(ValueError, match=message):
        random_search(Recipe(), space, _score, budget=2)
    with pytest.raises(ValueError, match="budget"):
        random_search(Recipe(), {}, _score, budget=0)
