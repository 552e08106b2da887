"""Running error analysis: a formula evaluated together with a bound on its rounding error.

The error model is the one of :mod:`tolerances` (correctly rounded ``+ − × /`` and ``sqrt`` with relative
error ``u``; ``exp``, ``log``, ``atan2``, ``pow``... within ``LIBM_ULPS`` ulp, i.e. relative ``ε``).
A :class:`Bounded` holds

* ``value``: the formula evaluated in float64 with torch, used for magnitudes only, and
* ``error``: a bound on ``|x̂ − x|``, where ``x`` is the exact (real-number) result of the formula on the
  exact inputs and ``x̂`` the result of evaluating it in ``dtype``, operation by operation in the order
  written (Wilkinson's running error analysis; Higham, *Accuracy and Stability*, §3.3).

Each operation adds the propagated input errors (the operation's Lipschitz constant on the interval the
inputs may lie in) and its own rounding. Magnitudes are taken as ``|value| + 2·error``: ``value`` is the
same formula in float64, so ``|value − x| <= error`` (the bound for float64 is not larger than the one for
a coarser ``dtype``) and ``|x̂ − x| <= error``. Two evaluations of one formula in dtypes ``a`` and ``b``
(say the library in float32 and a float64 reference) then differ by at most ``error_a + error_b``:
:func:`assert_evaluations_agree`.

A formula with a branch (``where``, a clamp at 0, a ``> 0`` test) is only bounded when both evaluations
take the same branch; :meth:`Bounded.certain_sign` asserts that, from the data. Results with no finite
bound (a denominator whose interval contains 0) carry ``error = inf``, so a comparison fails instead of
passing on a guessed tolerance.

The bound itself is computed in float64 with a few hundred operations at most, each off by a relative
``2⁻⁵³``; :data:`BOUND_SLACK` (a relative ``2⁻³⁶``) covers that, so the reported bound is never below the
true one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from tolerances import LIBM_ULPS, assert_within, eps, gamma, unit_roundoff

__all__ = [
    "BOUND_SLACK",
    "Bounded",
    "assert_bounded",
    "assert_evaluations_agree",
    "assert_formulas_agree",
    "concatenate",
    "exact",
    "safe_divide",
    "stack",
    "where",
]

#: Relative margin added to a computed bound for the float64 rounding of the bound's own arithmetic.
BOUND_SLACK = 2.0**-36

_Operand = "Bounded | float | int"


def _power_of_two(value: torch.Tensor) -> torch.Tensor:
    return torch.frexp(value).mantissa.abs() == 0.5


def _short(value: torch.Tensor) -> torch.Tensor:
    """At most 26 significant bits: the float64 product of two such numbers is exact."""
    return (torch.frexp(value).mantissa * 2.0**26).frac() == 0


def _holds(value: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return value.to(dtype).double() == value


def exact(tensor: torch.Tensor, dtype: torch.dtype) -> Bounded:
    """Inputs given exactly in ``dtype`` (their float64 copy holds the same numbers): error 0."""
    as_dtype = tensor.to(dtype)
    assert torch.equal(as_dtype.double(), tensor.double()), "input is not representable in dtype"
    value = tensor.double()
    return Bounded(value, torch.zeros_like(value), dtype)


class Bounded:
    """A float64 ``value`` and a bound ``error`` on the rounding error of evaluating it in ``dtype``."""

    __array_priority__ = 1000  # ``number ∘ Bounded`` dispatches to the reflected methods

    def __init__(self, value: torch.Tensor, error: torch.Tensor, dtype: torch.dtype) -> None:
        error = torch.as_tensor(error, dtype=torch.float64)
        # inf · 0 in a propagation is an unbounded error, not an exact result
        self.value, self.error, self.dtype = value, torch.nan_to_num(error, nan=math.inf), dtype

    # ------------------------------------------------------------------------------------------ helpers
    @property
    def u(self) -> float:
        return unit_roundoff(self.dtype)

    @property
    def libm(self) -> float:
        """Relative error of one libm-class call (``LIBM_ULPS`` ulp <= ``LIBM_ULPS·ε`` relative)."""
        return LIBM_ULPS * eps(self.dtype)

    def magnitude(self) -> torch.Tensor:
        """Bounds ``|x|`` and ``|x̂|`` at once (see the module docstring)."""
        return self.value.abs() + 2 * self.error

    def lower(self) -> torch.Tensor:
        """A lower bound of ``|x|`` and ``|x̂|`` (0 where the interval may contain 0)."""
        return (self.value.abs() - 2 * self.error).clamp(min=0)

    def _new(self, value: torch.Tensor, error: torch.Tensor) -> Bounded:
        return Bounded(value, error, self.dtype)

    def _lift(self, other: _Operand) -> Bounded:  # type: ignore[valid-type]
        """A Python number as an operand: rounded to ``dtype`` once (torch casts the scalar) unless it is
        representable there."""
        if isinstance(other, Bounded):
            assert other.dtype == self.dtype, f"mixed dtypes {self.dtype} and {other.dtype}"
            return other
        c = float(other)
        representable = float(torch.tensor(c, dtype=self.dtype)) == c
        value = torch.full_like(self.value, c)
        return self._new(value, torch.zeros_like(value) if representable else self.u * value.abs())

    def _is_exact(self) -> torch.Tensor:
        return self.error == 0

    def _rounding(self, exact_mask: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        """``u·magnitude`` except where the operation is known to be exact."""
        return torch.where(exact_mask, 0.0, self.u * magnitude)

    def _integer_exact(self, other: Bounded, result: torch.Tensor) -> torch.Tensor:
        """Exact inputs that are integers, and an integer result that ``dtype`` holds exactly."""
        digits = round(1 - math.log2(eps(self.dtype)))  # significand bits: 24 (float32), 53 (float64)
        both = self._is_exact() & other._is_exact()
        integers = (self.value == self.value.round()) & (other.value == other.value.round())
        return both & integers & (result == result.round()) & (result.abs() <= 2.0**digits)

    # ------------------------------------------------------------------------------------------ + − × /
    def __add__(self, other: _Operand) -> Bounded:  # type: ignore[valid-type]
        if hasattr(other, "gradient_error"):  # a value with derivatives: its own reflected operation
            return NotImplemented
        other = self._lift(other)
        value = self.value + other.value
        propagated = self.error + other.error
        both = self._is_exact() & other._is_exact()
        exact_op = self._integer_exact(other, value) | (both & ((other.value == 0) | (self.value == 0)))
        exact_op = exact_op | both & _sum_is_exact(self.value, other.value, value) & _holds(value, self.dtype)
        magnitude = value.abs() + 2 * propagated
        return self._new(value, propagated + self._rounding(exact_op, magnitude))

    __radd__ = __add__

    def __neg__(self) -> Bounded:
        return self._new(-self.value, self.error)

    def __sub__(self, other: _Operand) -> Bounded:  # type: ignore[valid-type]
        if hasattr(other, "gradient_error"):  # a value with derivatives: its own reflected operation
            return NotImplemented
        other = self._lift(other)
        value = self.value - other.value
        propagated = self.error + other.error
        both = self._is_exact() & other._is_exact()
        # Sterbenz: y/2 <= x <= 2y makes x − y exact; so do x − 0 and integer differences.
        a, b = self.value, other.value
        close = (a.abs() >= b.abs() / 2) & (a.abs() <= 2 * b.abs()) & (a * b > 0)
        sterbenz = both & (close | (b == 0) | (a == 0))
        exact_op = sterbenz | self._integer_exact(other, value)
        exact_op = exact_op | both & _sum_is_exact(a, -b, value) & _holds(value, self.dtype)
        magnitude = value.abs() + 2 * propagated
        return self._new(value, propagated + self._rounding(exact_op, magnitude))

    def __rsub__(self, other: _Operand) -> Bounded:  # type: ignore[valid-type]
        if hasattr(other, "gradient_error"):  # a value with derivatives: its own reflected operation
            return NotImplemented
        return self._lift(other) - self

    def __mul__(self, other: _Operand) -> Bounded:  # type: ignore[valid-type]
        if hasattr(other, "gradient_error"):  # a value with derivatives: its own reflected operation
            return NotImplemented
        other = self._lift(other)
        value = self.value * other.value
        m1, m2 = self.magnitude(), other.magnitude()
        propagated = m1 * other.error + m2 * self.error
        # scaling by an exact power of two does not round (no underflow in these tests' ranges)
        exact_op = (other._is_exact() & _power_of_two(other.value)) | (
            self._is_exact() & _power_of_two(self.value)
        )
        exact_op = exact_op | self._integer_exact(other, value)
        exact_op = (
            exact_op | (self._is_exact() & (self.value == 0)) | (other._is_exact() & (other.value == 0))
        )
        both = self._is_exact() & other._is_exact()
        exact_op = exact_op | both & _short(self.value) & _short(other.value) & _holds(value, self.dtype)
        return self._new(value, propagated + self._rounding(exact_op, m1 * m2))

    __rmul__ = __mul__

    def __truediv__(self, other: _Operand) -> Bounded:  # type: ignore[valid-type]
        if hasattr(other, "gradient_error"):  # a value with derivatives: its own reflected operation
            return NotImplemented
        other = self._lift(other)
        value = self.value / other.value
        low = other.lower()
        m1, m2 = self.magnitude(), other.magnitude()
        # |x̂/ŷ − x/y| = |y(x̂ − x) − x(ŷ − y)| / |ŷ y| <= (m2·e1 + m1·e2) / low²
        propagated = (m2 * self.error + m1 * other.error) / (low * low)
        exact_op = other._is_exact() & _power_of_two(other.value)
        # an exact quotient that dtype holds (6 / 3): q·b is exact in float64 for short q and b
        both = self._is_exact() & other._is_exact()
        divides = both & _short(value) & _short(other.value) & (value * other.value == self.value)
        exact_op = exact_op | divides & _holds(value, self.dtype)
        rounding = torch.where(exact_op, 0.0, self.u * m1 / low)
        error = torch.where(low > 0, propagated + rounding, math.inf)
        return self._new(value, error)

    def __rtruediv__(self, other: _Operand) -> Bounded:  # type: ignore[valid-type]
        if hasattr(other, "gradient_error"):  # a value with derivatives: its own reflected operation
            return NotImplemented
        return self._lift(other) / self

    # ------------------------------------------------------------------------------------------ exact ops
    def abs(self) -> Bounded:
        return self._new(self.value.abs(), self.error)

    def clamp(self, min: float | None = None, max: float | None = None) -> Bounded:
        """``max(min(x, max), min)`` (a bound that ``dtype`` cannot hold is rounded first: torch casts the
        scalar, and the lifted constant carries that rounding)."""
        result = self if min is None else self.maximum(min)
        return result if max is None else result.minimum(max)

    def maximum(self, other: _Operand) -> Bounded:  # type: ignore[valid-type]
        """``max`` is 1-Lipschitz in each argument and exact: the error is the larger input error, or the
        error of the certain winner when the two intervals do not overlap."""
        other = self._lift(other)
        first = self.value - 2 * self.error >= other.value + 2 * other.error
        second = other.value - 2 * other.error >= self.value + 2 * self.error
        error = torch.where(
            first, self.error, torch.where(second, other.error, self.error.maximum(other.error))
        )
        return self._new(torch.maximum(self.value, other.value), error)

    def minimum(self, other: _Operand) -> Bounded:  # type: ignore[valid-type]
        return -((-self).maximum(-self._lift(other)))

    def __getitem__(self, index) -> Bounded:
        return self._new(self.value[index], self.error[index])

    def flatten(self) -> Bounded:
        """``flatten(1)``."""
        return self._new(self.value.flatten(1), self.error.flatten(1))

    def unsqueeze(self, dim: int) -> Bounded:
        return self._new(self.value.unsqueeze(dim), self.error.unsqueeze(dim))

    def reshape(self, *shape: int) -> Bounded:
        return self._new(self.value.reshape(*shape), self.error.reshape(*shape))

    def amax(self, dim: int) -> Bounded:
        """``max`` over ``dim``: 1-Lipschitz in the sup norm, so the error is the largest one of the row."""
        return self._new(self.value.amax(dim), self.error.amax(dim))

    # ------------------------------------------------------------------------------------------ sums
    def sum(self, dim: int) -> Bounded:
        """A sum of ``n`` terms in any order: ``Σ eᵢ + γ(n − 1)·Σ mᵢ`` (Higham, eq. 4.4)."""
        n = self.value.shape[dim]
        rounding = gamma(max(n - 1, 1), self.dtype) * self.magnitude().sum(dim) if n > 1 else 0.0
        return self._new(self.value.sum(dim), self.error.sum(dim) + rounding)

    # ------------------------------------------------------------------------------------------ functions
    def _libm(self, value: torch.Tensor, propagated: torch.Tensor, result_bound: torch.Tensor) -> Bounded:
        """One libm-class call: the propagated error plus ``LIBM_ULPS`` ulp of a result <= result_bound."""
        return self._new(value, propagated + self.libm * result_bound)

    def sqrt(self) -> Bounded:
        """Correctly rounded; ``|√a − √b| <= min(√|a − b|, |a − b| / (√lo_a + √lo_b))``."""
        value = self.value.sqrt()
        low = self.lower().sqrt()
        holder = self.error.sqrt()
        lipschitz = torch.where(low > 0, self.error / (2 * low), math.inf)
        propagated = torch.minimum(holder, lipschitz)
        # the root of an exact perfect square that dtype holds (√1, √4, √0.25) is exact
        short = (torch.frexp(value).mantissa * 2.0**26).frac() == 0  # then value·value is exact in float64
        holds = value.to(self.dtype).double() == value
        perfect = self._is_exact() & short & (value * value == self.value) & holds
        rounding = torch.where(perfect, 0.0, self.u * (value + 2 * propagated))
        return self._new(value, propagated + rounding)

    def exp(self) -> Bounded:
        """``|exp(x̂) − exp(x)| <= exp(max(x̂, x))·|x̂ − x|``."""
        top = torch.exp(self.value + 2 * self.error)
        return self._libm(self.value.exp(), top * self.error, top)

    def log(self) -> Bounded:
        """Needs ``x > 0`` on the whole interval: ``|log x̂ − log x| <= |x̂ − x| / min(x̂, x)``."""
        low = torch.where(self.value > 0, self.lower(), 0.0)
        propagated = torch.where(low > 0, self.error / low, math.inf)
        value = self.value.log()
        return self._libm(value, propagated, value.abs() + 2 * propagated)

    def log1p(self) -> Bounded:
        """Needs ``x > −1`` on the whole interval: ``|log1p x̂ − log1p x| <= |x̂ − x| / (1 + min)``."""
        low = self.value - 2 * self.error + 1
        propagated = torch.where(low > 0, self.error / low.clamp(min=1e-300), math.inf)
        value = self.value.log1p()
        return self._libm(value, propagated, value.abs() + 2 * propagated)

    def expm1(self) -> Bounded:
        """``|expm1(x̂) − expm1(x)| <= exp(max(x̂, x))·|x̂ − x|``."""
        top = torch.exp(self.value + 2 * self.error)
        value = self.value.expm1()
        return self._libm(value, top * self.error, value.abs() + 2 * top * self.error)

    def pow(self, exponent: float) -> Bounded:
        """``x ** exponent`` of a non-negative base as torch computes it: exponent 2 by a product, 0.5 by
        sqrt, 0 and 1 exactly; others by a libm-class pow. Propagation: ``γ·max^(γ−1)·e`` for ``γ >= 1``,
        Hölder ``e^γ`` (or ``γ·min^(γ−1)·e``) for ``0 < γ < 1``."""
        if exponent == 2:
            return self * self
        if exponent == 0.5:
            return self.sqrt()
        if exponent == 1:
            return self
        if exponent == 0:
            return self._new(torch.ones_like(self.value), torch.zeros_like(self.error))
        assert exponent > 0 and bool((self.value >= 0).all()), "pow: a positive exponent of a base >= 0"
        value = self.value.pow(exponent)
        high, low = self.value + 2 * self.error, self.lower()
        if exponent >= 1:
            propagated = exponent * high.pow(exponent - 1) * self.error
        else:
            lipschitz = torch.where(low > 0, exponent * low.pow(exponent - 1) * self.error, math.inf)
            propagated = torch.minimum(self.error.pow(exponent), lipschitz)
        return self._libm(value, propagated, value + 2 * propagated)

    def log2(self) -> Bounded:
        """Needs ``x > 0`` on the whole interval: ``|log2 x̂ − log2 x| <= |x̂ − x| / (min(x̂, x)·ln 2)``."""
        low = torch.where(self.value > 0, self.lower(), 0.0)
        propagated = torch.where(low > 0, self.error / (low * math.log(2)), math.inf)
        value = self.value.log2()
        return self._libm(value, propagated, value.abs() + 2 * propagated)

    def atan2(self, x: Bounded) -> Bounded:
        """``atan2(self, x)``: the gradient has norm ``1/r``, so the change is ``<= (e_y + e_x) / r_min``
        (``r_min`` the smallest radius in the input box); undefined (inf) where the box contains 0."""
        value = torch.atan2(self.value, x.value)
        r_min = (self.lower().square() + x.lower().square()).sqrt()
        propagated = torch.where(r_min > 0, (self.error + x.error) / r_min, math.inf)
        exact_inputs = self._is_exact() & x._is_exact()
        # the branch cut: y may change sign while x < 0 (a jump of 2π), no bound there
        cut = (self.lower() == 0) & ~exact_inputs & (x.value - 2 * x.error < 0)
        propagated = torch.where(exact_inputs, 0.0, torch.where(cut, math.inf, propagated))
        return self._libm(value, propagated, value.abs() + 2 * propagated)

    def atan(self) -> Bounded:
        """``atan`` is 1-Lipschitz."""
        value = self.value.atan()
        return self._libm(value, self.error, value.abs() + 2 * self.error)

    def square(self) -> Bounded:
        """``x*x`` (torch's ``pow(x, 2)`` and ``square`` compute it so)."""
        return self * self

    # ------------------------------------------------------------------------------------------ branches
    def certain_sign(self) -> torch.Tensor:
        """Where the sign of ``x`` and ``x̂`` agree with the sign of ``value`` (0 only when exact)."""
        return torch.where(self.value == 0, self._is_exact(), self.value.abs() > 2 * self.error)


def where(condition: torch.Tensor, first: Bounded, second: Bounded) -> Bounded:
    """A branch decided identically by every evaluation (the caller asserts that, e.g. with
    :meth:`Bounded.certain_sign`)."""
    return Bounded(
        torch.where(condition, first.value, second.value),
        torch.where(condition, first.error, second.error),
        first.dtype,
    )


def stack(parts, dim: int) -> Bounded:
    """``torch.stack`` of several :class:`Bounded` of one dtype."""
    return Bounded(
        torch.stack([p.value for p in parts], dim), torch.stack([p.error for p in parts], dim), parts[0].dtype
    )


def concatenate(parts) -> Bounded:
    """``torch.cat`` of several :class:`Bounded` of one dtype along dimension 0."""
    return Bounded(torch.cat([p.value for p in parts]), torch.cat([p.error for p in parts]), parts[0].dtype)


def safe_divide(numerator: Bounded, denominator: Bounded) -> Bounded:
    """``numerator / denominator`` where the denominator is positive, else exactly 0 (the library's
    ``_safe_divide``); unbounded where the sign of the denominator is not certain."""
    positive = denominator.value > 0
    one = Bounded(torch.ones_like(denominator.value), torch.zeros_like(denominator.error), denominator.dtype)
    quotient = numerator / where(positive, denominator, one)
    zero = Bounded(torch.zeros_like(quotient.value), torch.zeros_like(quotient.error), quotient.dtype)
    result = where(positive, quotient, zero)
    result.error = torch.where(denominator.certain_sign(), result.error, math.inf)
    return result


def _sum_is_exact(a: torch.Tensor, b: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """Knuth's TwoSum: the rounding error of the float64 sum ``total = a + b`` exactly; zero means the sum
    is exact."""
    b_part = total - a
    a_part = total - b_part
    return ((a - a_part) + (b - b_part)) == 0


def _assert_finite(bound: torch.Tensor, what: str) -> None:
    """A bound of inf would let anything pass: the analysis must bound every element."""
    if not torch.isfinite(bound).all():
        index = int((~torch.isfinite(bound)).flatten().nonzero()[0])
        raise AssertionError(f"{what}: no finite error bound at element {index} (an uncertain branch?)")


def assert_bounded(
    actual: torch.Tensor, expected: torch.Tensor, bound: torch.Tensor | float, what: str = ""
) -> None:
    """:func:`tolerances.assert_within` with a derived bound that must be finite everywhere."""
    bound = torch.as_tensor(bound, dtype=torch.float64) * (1 + BOUND_SLACK)
    _assert_finite(bound, what)
    assert_within(actual, expected, bound, what)


def assert_evaluations_agree(
    actual: torch.Tensor,
    formula: Callable[[torch.dtype], Bounded],
    actual_dtype: torch.dtype,
    reference: torch.Tensor | None = None,
    reference_dtype: torch.dtype = torch.float64,
    what: str = "",
) -> torch.Tensor:
    """``actual`` (the formula evaluated in ``actual_dtype``) against ``reference`` (the same formula in
    ``reference_dtype``; by default ``formula``'s own float64 value): ``|actual − reference| <=
    error(actual_dtype) + error(reference_dtype)`` element-wise. Returns the bound used."""
    side_a, side_b = formula(actual_dtype), formula(reference_dtype)
    bound = (side_a.error + side_b.error) * (1 + BOUND_SLACK)
    expected = side_b.value if reference is None else reference
    _assert_finite(bound, what)
    assert_within(actual, expected, bound, what)
    return bound


def assert_formulas_agree(
    actual: torch.Tensor,
    actual_formula: Callable[[torch.dtype], Bounded],
    expected: torch.Tensor,
    expected_formula: Callable[[torch.dtype], Bounded],
    dtypes: tuple[torch.dtype, torch.dtype] = (torch.float64, torch.float64),
    what: str = "",
) -> torch.Tensor:
    """Two *different* formulas (e.g. ours and torchvision's with its ``eps`` in a denominator), each
    evaluated by an implementation in its dtype: ``|actual − expected| <= |Xa − Xe| + err_a + err_e`` with
    ``Xa, Xe`` the exact values; ``|Xa − Xe| <= |va − ve| + err64_a + err64_e`` from the float64 values.
    The formula difference is thus computed from the data, not guessed. Returns the bound used."""
    side_a, side_e = actual_formula(dtypes[0]), expected_formula(dtypes[1])
    float64_a, float64_e = actual_formula(torch.float64), expected_formula(torch.float64)
    gap = (float64_a.value - float64_e.value).abs()
    bound = (gap + side_a.error + side_e.error + float64_a.error + float64_e.error) * (1 + BOUND_SLACK)
    _assert_finite(bound, what)
    assert_within(actual, expected, bound, what)
    return bound
