"""The running error analysis (tests/running_error.py) against exact arithmetic: every float32 and float64
evaluation lies within its bound of the exact result (rationals for + − × /, mpmath at 60 digits for the
functions), on random inputs including cancellation and exact cases; and the exactness rules are right."""

from __future__ import annotations

import mpmath
import pytest
import torch

from running_error import Bounded, exact, safe_divide

mpmath.mp.dps = 60


def _inputs(seed: int, n: int = 400) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, generator=g) * 10).float().double()
    y = (x + torch.randn(n, generator=g) * 1e-3 * x.abs()).float().double()  # near-cancellation with x
    z = (torch.rand(n, generator=g) * 5 + 0.1).float().double()
    return x, y, z


def _exact(expression, *columns) -> list:
    return [expression(*(mpmath.mpf(float(v)) for v in row)) for row in zip(*columns, strict=True)]


FORMULAS = {
    "sum_product_quotient": (
        lambda x, y, z: (x - y) * z / (x + z) + y / 2,
        lambda t: (t[0] - t[1]) * t[2] / (t[0] + t[2]) + t[1] / 2,
    ),
    "exp_log": (
        lambda x, y, z: (z.log() * x / 20).exp() - z.sqrt(),
        lambda t: torch.exp(torch.log(t[2]) * t[0] / 20) - torch.sqrt(t[2]),
    ),
    "atan2_square": (
        lambda x, y, z: (x.atan2(z) - y.atan2(z)).square() * (4 / 3.14159),
        lambda t: (torch.atan2(t[0], t[2]) - torch.atan2(t[1], t[2])) ** 2 * (4 / 3.14159),
    ),
}
EXACT = {
    "sum_product_quotient": lambda x, y, z: (x - y) * z / (x + z) + y / 2,
    "exp_log": lambda x, y, z: mpmath.exp(mpmath.log(z) * x / 20) - mpmath.sqrt(z),
    "atan2_square": lambda x, y, z: (mpmath.atan2(x, z) - mpmath.atan2(y, z)) ** 2 * mpmath.mpf(4 / 3.14159),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_evaluation_lies_within_its_bound_of_the_exact_value(name, dtype):
    tracked, direct = FORMULAS[name]
    x, y, z = _inputs(seed=len(name))
    bounded = tracked(exact(x, dtype), exact(y, dtype), exact(z, dtype))
    evaluated = direct([t.to(dtype) for t in (x, y, z)]).double()
    truth = _exact(EXACT[name], x, y, z)
    assert torch.isfinite(bounded.error).all()
    for i, value in enumerate(truth):
        gap = abs(mpmath.mpf(float(evaluated[i])) - value)
        assert gap <= float(bounded.error[i]), (name, i, float(gap), float(bounded.error[i]))


def test_exact_operations_are_recognised_and_others_are_not():
    a = exact(torch.tensor([3.0, 1.5, 1e8, 2.0**-30]), torch.float32)
    b = exact(torch.tensor([2.0, 1.0, 1.0, 3.0]), torch.float32)
    difference = a - b
    # 3 − 2 and 1.5 − 1 are exact (Sterbenz), 1e8 − 1 is not (float32 has 24 bits), 2⁻³⁰ − 3 is not either
    assert difference.error.tolist()[:2] == [0.0, 0.0] and difference.error[2] > 0 and difference.error[3] > 0
    assert ((a * 2).error == 0).all() and ((a / 4).error == 0).all()  # powers of two
    assert (a * 3).error[0] == 0  # an integer product that float32 holds
    assert (a * 0.1).error.gt(0).all()  # 0.1 is rounded to float32, then the product
    zero_denominator = safe_divide(a, b - b)
    assert zero_denominator.value.eq(0).all() and zero_denominator.error.eq(0).all()


def test_an_undecided_branch_has_no_finite_bound():
    x = exact(torch.tensor([1.0, 1.0]), torch.float32)
    y = exact(torch.tensor([3.0, 1.0]), torch.float32)
    almost_zero = x / y * 3 - x  # 1/3·3 − 1: zero or not, depending on the rounding
    assert not torch.isfinite(safe_divide(x, almost_zero).error[0])
    assert isinstance(almost_zero, Bounded)
