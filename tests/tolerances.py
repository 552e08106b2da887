"""Derived tolerances for comparing two floating-point computations (used across the test suite).

A comparison in these tests is either exact by construction (same operations in the same order on the
same inputs: ``torch.equal`` / ``atol=0, rtol=0``) or bounded by the error model below, never by a
constant that happened to pass on one machine.

The model (IEEE 754, round to nearest, Higham, *Accuracy and Stability of Numerical Algorithms*, §2.2):

* ``+ − × /`` and ``sqrt`` are correctly rounded: ``fl(a ∘ b) = (a ∘ b)(1 + δ)``, ``|δ| ≤ u = ε/2``
  (``ε`` = machine epsilon of the dtype).
* ``exp``, ``log``, ``pow``, ``sin``... are not: every implementation torch or our C code may call —
  glibc's libm, SLEEF's ``u10`` kernels (torch's AVX2/AVX-512 paths), MKL VML in HA mode (torch's
  float ``exp``/``log`` on MKL builds, whose code path depends on the CPU vendor) — documents a maximum
  error of 1 ulp. 1 ulp of a value ``y`` is at most ``ε·|y|``, so each call is within relative ``ε`` of
  the exact result, and two implementations are within ``2ε`` of each other.
* A sum of ``n`` terms in any order (pairwise, blocked, vectorised, sequential) is within
  ``γ(n − 1)·Σ|xᵢ|`` of the exact sum, ``γ(n) = n·u / (1 − n·u)`` (Higham, Lemma 3.1 / eq. 4.4); two
  implementations that sum the same values in different orders are within twice that of each other.

Each test that uses these functions says which operations the two sides differ in; the bound is then
computed from that count and the data, so it holds on any CPU, kernel (``ATEN_CPU_CAPABILITY``) or thread
count.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch

__all__ = [
    "LAPACK_BACKWARD_CONSTANT",
    "LIBM_ULPS",
    "abs_sum_upper",
    "assert_fraction_within",
    "assert_numbers_within",
    "assert_within",
    "binomial_interval",
    "eps",
    "exp_argument_error",
    "gamma",
    "lapack_backward_error",
    "mean_difference_bound",
    "mean_error_bound",
    "product_ratio_bound",
    "sum_difference_bound",
    "unit_roundoff",
]

#: Maximum documented error, in ulps, of one libm / SLEEF-u10 / MKL-VML-HA call (exp, log, pow, ...).
LIBM_ULPS = 1


def eps(dtype: torch.dtype) -> float:
    """Machine epsilon: the distance from 1.0 to the next representable number (2⁻⁵² for float64)."""
    return torch.finfo(dtype).eps


def unit_roundoff(dtype: torch.dtype) -> float:
    """``u = ε/2``: the relative error bound of one correctly rounded operation."""
    return eps(dtype) / 2


def gamma(n: int, dtype: torch.dtype) -> float:
    """Higham's ``γₙ = n·u / (1 − n·u)``: relative error bound of ``n`` chained rounded operations."""
    nu = n * unit_roundoff(dtype)
    if nu >= 1:
        raise ValueError(f"n·u = {nu} >= 1: no bound for {n} operations in {dtype}")
    return _round_up(nu / (1 - nu))


def sum_difference_bound(abs_sum: torch.Tensor | float, n: int, dtype: torch.dtype) -> torch.Tensor | float:
    """Largest difference between two evaluations of a sum of ``n`` terms in different orders.

    Each is within ``γ(n − 1)·Σ|xᵢ|`` of the exact sum, so they are within ``2·γ(n − 1)·Σ|xᵢ|`` of each
    other. ``abs_sum`` is ``Σ|xᵢ|`` (a tensor for many sums at once).
    """
    return 2 * gamma(max(n - 1, 1), dtype) * abs_sum


def product_ratio_bound(
    num_factors: torch.Tensor | int, side_a: tuple[float, torch.dtype], side_b: tuple[float, torch.dtype]
):
    """Bound on ``|a / b − 1|`` for two evaluations ``a``, ``b`` of the product ``s · f₁ · … · f_k``.

    ``side_a = (factor_error, dtype)``: that side's factors are within relative ``factor_error`` of the
    exact ones (0 when computed exactly, ``ε`` for one libm-class call) and each of its ``k``
    multiplications rounds in ``dtype`` (relative ``u``); ``s`` is the same number on both sides. So
    ``a ∈ s∏fᵢ · [((1 − rₐ)(1 − uₐ))ᵏ, ((1 + rₐ)(1 + uₐ))ᵏ]``, likewise ``b``, and ``|a/b − 1|`` is at most
    the larger of ``hiₐᵏ/lo_bᵏ − 1`` and ``1 − loₐᵏ/hi_bᵏ``: evaluated exactly with fractions and rounded
    up. ``num_factors`` may be a tensor of per-element counts; the result then has its shape.
    """

    def limits(side: tuple[float, torch.dtype]) -> tuple[Fraction, Fraction]:
        r, u = Fraction(side[0]), Fraction(unit_roundoff(side[1]))
        return (1 - r) * (1 - u), (1 + r) * (1 + u)

    (lo_a, hi_a), (lo_b, hi_b) = limits(side_a), limits(side_b)

    def bound(k: int) -> float:
        return _round_up(max(hi_a**k / lo_b**k - 1, 1 - lo_a**k / hi_b**k))

    if isinstance(num_factors, torch.Tensor):
        counts = num_factors.to(torch.int64)
        table = [bound(k) for k in range(int(counts.max()) + 1 if counts.numel() else 1)]
        return torch.tensor(table, dtype=torch.float64)[counts]
    return bound(int(num_factors))


def exp_argument_error(max_argument: float, argument_error: float) -> float:
    """Relative change of ``exp(x)`` when ``x`` (``|x| ≤ max_argument``) carries a relative error of at
    most ``argument_error``: ``exp(x̂)/exp(x) = exp(x̂ − x)`` and ``|x̂ − x| ≤ max_argument·argument_error``,
    so the change is at most ``expm1(max_argument·argument_error)`` (rounded up). The ``exp`` call's own
    error (``LIBM_ULPS``) comes on top."""
    return math.nextafter(math.expm1(max_argument * argument_error), math.inf)


def assert_within(
    actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor | float, what: str = ""
) -> None:
    """Element-wise ``|actual − expected| ≤ bound`` (a derived bound, scalar or per element), computed in
    float64; equal infinities and NaN positions must match. Reports the worst element on failure."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert a.shape == e.shape, f"{what} shape {tuple(a.shape)} != {tuple(e.shape)}"
    assert torch.equal(torch.isnan(a), torch.isnan(e)), f"{what} NaN positions differ"
    finite = torch.isfinite(a) & torch.isfinite(e)
    assert torch.equal(a[~finite & ~torch.isnan(a)], e[~finite & ~torch.isnan(e)]), (
        f"{what} infinities differ"
    )
    b = torch.as_tensor(bound, dtype=torch.float64).expand_as(a)
    excess = ((a - e).abs() - b).masked_fill(~finite, -math.inf)
    if excess.numel() and float(excess.max()) > 0:
        i = int(excess.argmax())
        raise AssertionError(
            f"{what} element {i}: |{a.flatten()[i].item()!r} - {e.flatten()[i].item()!r}| = "
            f"{(a - e).abs().flatten()[i].item():.3e} exceeds its derived bound {b.flatten()[i].item():.3e} "
            f"({int((excess > 0).sum())} of {a.numel()} elements over)"
        )


def _round_up(value: Fraction | float) -> float:
    """A float ≥ ``value`` (the bound must not shrink when it is converted)."""
    as_float = float(value)
    return as_float if Fraction(as_float) >= Fraction(value) else math.nextafter(as_float, math.inf)


# ----------------------------------------------------------------------------------------- statistics
def binomial_interval(trials: int, probability: float, false_failure: float) -> tuple[int, int]:
    """Counts ``[low, high]`` that a ``Binomial(trials, probability)`` count leaves with probability at
    most ``false_failure`` (each tail gets half of it; summed exactly from the distribution).

    For a check that a random procedure picks something with the right frequency: with ``m`` such counts
    checked at once, pass ``false_failure / m`` (union bound) and state the total in the test. This is a
    property of the distribution, so it holds whatever random stream a kernel draws.
    """
    q = 1 - probability
    pmf = [math.comb(trials, k) * probability**k * q ** (trials - k) for k in range(trials + 1)]
    low, tail = 0, 0.0
    while tail + pmf[low] <= false_failure / 2:
        tail += pmf[low]
        low += 1
    high, tail = trials, 0.0
    while tail + pmf[high] <= false_failure / 2:
        tail += pmf[high]
        high -= 1
    return low, high


def abs_sum_upper(terms: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """``Σ|xᵢ|`` over ``dim`` in float64, raised by ``γ(n − 1)`` so that it is not below the exact sum (the
    ``abs_sum`` argument of :func:`sum_difference_bound` when it is computed from the data)."""
    terms = terms.detach().double().abs()
    dims = (dim,) if isinstance(dim, int) else dim
    n = math.prod(terms.shape[d] for d in dims)
    return terms.sum(dim) * (1 + gamma(max(n - 1, 1), torch.float64))


def mean_error_bound(abs_sum: torch.Tensor | float, n: int, dtype: torch.dtype, divisor: float | None = None):
    """Largest error of one evaluation of ``(x₁ + … + xₙ) / d`` (``d`` exact, default ``n``) against the
    exact value, the ``xᵢ`` being exact: ``n − 1`` additions in any order give ``Σxᵢ(1 + θᵢ)``,
    ``|θᵢ| ≤ γ(n − 1)``, and the division one more rounding, so the error is at most ``γ(n)·Σ|xᵢ|/d``
    (Higham, Lemma 3.3). ``abs_sum`` is ``Σ|xᵢ|``. Terms that are exact zeros add no rounding (``a + 0``
    is exact), so a sum over an array with zeros in between (``np.nanmean``) is covered with ``n`` the
    count of the others."""
    if n == 0:
        return 0.0
    return gamma(n, dtype) * abs_sum / (n if divisor is None else divisor)


def mean_difference_bound(
    abs_sum: torch.Tensor | float, n: int, dtype: torch.dtype, divisor: float | None = None
):
    """Largest difference between two evaluations of ``(x₁ + … + xₙ) / d`` from the same ``xᵢ`` (e.g.
    ``np.mean`` against ``np.nanmean`` or a Python ``sum(...) / n``): each is within
    :func:`mean_error_bound` of the exact value."""
    return 2 * mean_error_bound(abs_sum, n, dtype, divisor)


def assert_numbers_within(actual, expected, bound, what: str = "") -> None:
    """:func:`assert_within` for numpy arrays, Python floats or tensors (as float64 tensors)."""
    a = torch.as_tensor(_float64_array(actual), dtype=torch.float64)
    e = torch.as_tensor(_float64_array(expected), dtype=torch.float64)
    assert_within(a, e, bound, what)


def assert_fraction_within(actual: float, exact: Fraction, bound: Fraction | float, what: str = "") -> None:
    """``|actual − exact| ≤ bound`` evaluated exactly (``actual`` a float, ``exact`` a ``Fraction``)."""
    error = abs(Fraction(float(actual)) - exact)
    assert error <= Fraction(bound), (
        f"{what}: |{float(actual)!r} - {exact}| = {float(error):.3e} exceeds its derived bound "
        f"{float(bound):.3e}"
    )


def _float64_array(values):
    """``values`` (array-like, tensor or number) as a float64 numpy array."""
    import numpy as np

    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64)


#: LAPACK's SVD and symmetric eigensolvers are backward stable: the computed decomposition of an m×n ``A``
#: is, up to ``‖δV‖ ≤ p·ε`` in its orthogonal factors, the exact one of ``A + E``, ``‖E‖₂ ≤ p(m, n)·ε·‖A‖₂``,
#: where LAPACK documents ``p(m, n)`` only as "a modestly growing function" (Users' Guide §4.9). Its
#: Householder reductions have ``‖E‖_F ≤ γ̃(m·n)·‖A‖_F``, ``γ̃(k) = c·k·u`` with a small integer ``c``
#: (Higham, Thm 19.4 and §19.3). This is the one assumption our bounds take on faith: ``p(m, n) = 10·m·n``
#: (``c`` up to 20). MKL, OpenBLAS and reference LAPACK differ in their code paths (and MKL's by CPU vendor)
#: but all fall under it.
LAPACK_BACKWARD_CONSTANT = 10


def lapack_backward_error(m: int, n: int, dtype: torch.dtype) -> float:
    """``p(m, n)·ε``: the relative backward error ``‖E‖₂ / ‖A‖₂`` (and the orthogonality defect of the
    computed singular / eigen vectors) assumed for LAPACK's SVD or eigensolver on an ``m×n`` matrix."""
    return LAPACK_BACKWARD_CONSTANT * m * n * eps(dtype)


# ----------------------------------------------------------------------------------------- gradcheck
# torch.autograd.gradcheck (float64, step h = 1e-6, atol = 1e-5, rtol = 1e-3) compares the analytic
# Jacobian with central differences, whose error is h²/6·|f'''| (truncation, ~1e-13 for the O(1)
# derivatives of the functions tested) plus (|f̂(x+h) − f(x+h)| + |f̂(x−h) − f(x−h)|)/(2h) <= γ(k)·|f|/h
# (the rounding of the two evaluations: ~1e-8 for |f| ~ 1 and k ~ 100 operations). Both are orders of
# magnitude below atol, and another CPU or kernel changes the rounding term only within that same
# ~1e-8, so a gradcheck's outcome does not depend on the machine. Functions with kinks (max pooling,
# RoI Pool, clamps) are checked at points farther than h from every kink (distinct values, margins).
