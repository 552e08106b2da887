"""compress.measure.paired_accuracy_gain against a plain loop over the same bootstrap draws."""

from __future__ import annotations

import doctest
from fractions import Fraction

import numpy as np
import pytest
import torch
from tests.tolerances import gamma, unit_roundoff

import visionkit.compress.measure as measure
from visionkit.compress.measure import paired_accuracy_gain


def _reference(baseline: np.ndarray, candidate: np.ndarray, resamples: int, seed: int) -> list[Fraction]:
    """Each draw's gain as an exact fraction: the same index draws, per-image scores averaged by hand."""
    generator = np.random.default_rng(seed)
    count = len(baseline)

    def score(row: np.ndarray) -> Fraction:
        values = [Fraction(int(v)) for v in np.atleast_1d(row)]
        return sum(values, Fraction(0)) / len(values)

    gains = []
    for _ in range(resamples):
        picks = generator.integers(0, count, count)
        gains.append(sum((score(candidate[i]) - score(baseline[i]) for i in picks), Fraction(0)) / count)
    return gains


@pytest.mark.parametrize("seeds", [None, 3])
def test_gains_equal_the_plain_loop(seeds: int | None) -> None:
    """A per-image score ``k/S`` is one rounding (``u``); an accuracy ``Σ wᵢ sᵢ / N`` (integer weights
    summing to ``N``) is a dot product of ``N`` terms (``γ(N)``, Higham 3.1) and a division: within
    ``γ(N + 3)·Σ wᵢ sᵢ / N ≤ γ(N + 3)`` of the exact value; a gain, a difference of two, within
    ``2·γ(N + 3)`` plus its own rounding."""
    rng = np.random.default_rng(4)
    shape = (40,) if seeds is None else (40, seeds)
    baseline, candidate = (rng.integers(0, 2, shape) for _ in range(2))
    result = paired_accuracy_gain(baseline, candidate, resamples=300, seed=7)
    exact = _reference(baseline, candidate, 300, 7)
    bound = 2 * gamma(40 + 3, torch.float64) + unit_roundoff(torch.float64)
    rows = [Fraction(int(np.sum(v)), np.size(v)) for v in candidate - baseline]
    assert abs(Fraction(result["gain"]) - sum(rows, Fraction(0)) / 40) <= Fraction(bound)
    floats = sorted(float(g) for g in exact)
    low, high = np.percentile(floats, [2.5, 97.5])
    assert abs(result["low"] - low) <= bound * 2 and abs(result["high"] - high) <= bound * 2
    below = sum(g <= 0 for g in exact) / 300
    near_zero = sum(abs(g) <= Fraction(bound) for g in exact) / 300
    assert abs(result["below_zero"] - below) <= near_zero


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="one shape"):
        paired_accuracy_gain(np.ones(4), np.ones(5))
    with pytest.raises(ValueError, match="one shape"):
        paired_accuracy_gain(np.ones(0), np.ones(0))


def test_docstring_examples_run() -> None:
    assert doctest.testmod(measure, optionflags=doctest.ELLIPSIS).failed == 0
