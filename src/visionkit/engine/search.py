"""Budgeted random search over a recipe's fields (handbook §6; Bergstra & Bengio 2012: random search
beats grid search when only a few hyper-parameters matter).

A search space maps recipe field names to a list of choices, or to ``(low, high)`` — uniform, integer
when both ends are ``int`` — or ``(low, high, "log")`` — log-uniform (learning rates, weight decay).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

RecipeT = TypeVar("RecipeT")


@dataclass
class Trial:
    """One evaluated configuration."""

    values: dict[str, Any]
    score: float


@dataclass
class SearchResult:
    """All trials in order, and the best recipe and score."""

    best_recipe: Any
    best_score: float
    trials: list[Trial]


def _sample(name: str, space: Any, generator: random.Random) -> Any:
    if isinstance(space, list):
        if not space:
            raise ValueError(f"search space for {name!r} is an empty list")
        return generator.choice(space)
    if isinstance(space, tuple) and len(space) == 3 and space[2] == "log":
        low, high = float(space[0]), float(space[1])
        if not 0 < low < high:
            raise ValueError(f"log-uniform space for {name!r} needs 0 < low < high, got {space}")
        return math.exp(generator.uniform(math.log(low), math.log(high)))
    if isinstance(space, tuple) and len(space) == 2:
        low, high = space
        if isinstance(low, int) and isinstance(high, int):
            return generator.randint(low, high)
        return generator.uniform(float(low), float(high))
    raise ValueError(
        f"search space for {name!r} must be a list, (low, high) or (low, high, 'log'); got {space!r}"
    )


def random_search(
    recipe: RecipeT,
    space: Mapping[str, Sequence[Any] | tuple[Any, ...]],
    objective: Callable[[RecipeT], float],
    *,
    budget: int,
    seed: int = 0,
    maximize: bool = True,
) -> SearchResult:
    """Evaluate ``objective`` on ``budget`` random variations of ``recipe`` and keep the best.

    Args:
        recipe: a frozen dataclass recipe (the base configuration).
        space: field name -> choices list / ``(low, high)`` / ``(low, high, "log")``.
        objective: recipe -> score (e.g. validation accuracy).
        budget: number of trials (objective evaluations).
        seed: seeds the sampler (same seed, same trials).
        maximize: ``False`` for losses.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True)
        ... class R:
        ...     lr: float = 1.0
        >>> score = lambda r: -abs(math.log10(r.lr) + 2)  # best at lr = 1e-2
        >>> result = random_search(R(), {"lr": (1e-4, 1.0, "log")}, score, budget=20)
        >>> 3e-3 < result.best_recipe.lr < 3e-2
        True
    """
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    fields = {field.name for field in dataclasses.fields(recipe)}  # type: ignore[arg-type]
    unknown = sorted(set(space) - fields)
    if unknown:
        raise ValueError(f"search space names unknown recipe fields {unknown}; valid: {sorted(fields)}")
    generator = random.Random(seed)
    trials: list[Trial] = []
    best_recipe, best_score = recipe, -math.inf if maximize else math.inf
    for _ in range(budget):
        values = {name: _sample(name, options, generator) for name, options in space.items()}
        candidate = dataclasses.replace(recipe, **values)  # type: ignore[type-var]
        score = float(objective(candidate))
        trials.append(Trial(values, score))
        if (score > best_score) if maximize else (score < best_score):
            best_recipe, best_score = candidate, score
    return SearchResult(best_recipe, best_score, trials)


__all__ = ["SearchResult", "Trial", "random_search"]
