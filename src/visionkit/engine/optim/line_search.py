"""Line searches for quasi-Newton methods: strong Wolfe (Nocedal & Wright, Alg. 3.5/3.6) and Armijo.

A line search receives ``phi(t) -> (loss, flat_gradient)`` at ``x + t d`` and returns an accepted step
``t`` together with the loss and gradient there, so the caller never re-evaluates.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Evaluate = Callable[[float], tuple[float, torch.Tensor]]


@dataclass
class LinePoint:
    """One evaluated point of a line search: step, loss, flat gradient and directional derivative."""

    step: float
    loss: float
    grad: torch.Tensor
    slope: float


def _point(evaluate: Evaluate, step: float, direction: torch.Tensor) -> LinePoint:
    loss, grad = evaluate(step)
    return LinePoint(step, loss, grad, float(grad.dot(direction)))


def _cubic_minimum(a: LinePoint, b: LinePoint) -> float:
    """Minimiser of the cubic through two points with slopes (N&W eq. 3.59), bisection as fallback."""
    low, high = min(a.step, b.step), max(a.step, b.step)
    if a.step == b.step:
        return a.step
    d1 = a.slope + b.slope - 3 * (a.loss - b.loss) / (a.step - b.step)
    radicand = d1 * d1 - a.slope * b.slope
    if radicand < 0 or not math.isfinite(radicand):
        return (low + high) / 2
    d2 = math.copysign(math.sqrt(radicand), b.step - a.step)
    denominator = b.slope - a.slope + 2 * d2
    if denominator == 0:
        return (low + high) / 2
    step = b.step - (b.step - a.step) * (b.slope + d2 - d1) / denominator
    margin = 0.1 * (high - low)  # keep away from the ends so the bracket always shrinks
    return min(max(step, low + margin), high - margin)


def strong_wolfe(
    evaluate: Evaluate,
    direction: torch.Tensor,
    start: LinePoint,
    step: float,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_evaluations: int = 25,
    tolerance_change: float = 1e-9,
) -> tuple[LinePoint, int]:
    """Find a step satisfying the strong Wolfe conditions along a descent ``direction``.

    Conditions: sufficient decrease ``f(t) <= f(0) + c1 t f'(0)`` and curvature ``|f'(t)| <= c2 |f'(0)|``.

    Args:
        evaluate: ``t -> (loss, flat gradient)`` at ``x + t * direction``.
        direction: flat search direction, shape ``(n,)``; ``start.slope`` must be negative.
        start: the point ``t = 0``.
        step: first trial step (> 0).

    Returns:
        The accepted point and the number of evaluations used.
    """
    previous, evaluations = start, 0
    bracket: tuple[LinePoint, LinePoint] | None = None
    while evaluations < max_evaluations:
        current = _point(evaluate, step, direction)
        evaluations += 1
        if current.loss > start.loss + c1 * step * start.slope or (
            evaluations > 1 and current.loss >= previous.loss
        ):
            bracket = (previous, current)
            break
        if abs(current.slope) <= -c2 * start.slope:
            return current, evaluations
        if current.slope >= 0:
            bracket = (current, previous)
            break
        previous, step = current, step * 2.0
    if bracket is None:
        return previous, evaluations
    low, high = bracket  # low: the lowest loss so far satisfying sufficient decrease
    while evaluations < max_evaluations:
        if abs(high.step - low.step) * float(direction.abs().max()) < tolerance_change:
            break
        current = _point(evaluate, _cubic_minimum(low, high), direction)
        evaluations += 1
        if current.loss > start.loss + c1 * current.step * start.slope or current.loss >= low.loss:
            high = current
            continue
        if abs(current.slope) <= -c2 * start.slope:
            return current, evaluations
        if current.slope * (high.step - low.step) >= 0:
            high = low
        low = current
    return low, evaluations


def armijo_backtracking(
    evaluate: Evaluate,
    direction: torch.Tensor,
    start: LinePoint,
    step: float,
    *,
    c1: float = 1e-4,
    shrink: float = 0.5,
    max_evaluations: int = 25,
) -> tuple[LinePoint, int]:
    """Halve the step until the Armijo sufficient-decrease condition holds (or evaluations run out)."""
    for evaluation in range(1, max_evaluations + 1):
        current = _point(evaluate, step, direction)
        if current.loss <= start.loss + c1 * step * start.slope:
            return current, evaluation
        step *= shrink
    return start, max_evaluations  # no acceptable step: stay at the start point


__all__ = ["LinePoint", "armijo_backtracking", "strong_wolfe"]
