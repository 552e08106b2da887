"""Derivatives in running-error arithmetic: a bound on the rounding error of a computed gradient.

A gradient is the sum over the paths of the computation graph of the products of the local partial
derivatives along each path (the chain rule). Autograd (reverse mode) and forward mode compute the same
path products, grouped differently. :class:`Dual` carries, next to a :class:`running_error.Bounded`
value, forward-mode data per input direction (a trailing dimension ``m``):

* ``t``: the derivative, evaluated in float64 (for magnitudes and for the gap between two formulas);
* ``A = Σ_paths Π|c_e|``, the absolute path sum (independent of grouping);
* ``B``, a bound on ``Σ_paths |Π ĉ_e − Π c_e|``: each computed partial ``ĉ_e`` is within relative ``ρ_e`` of
  the exact one — from the forward values it is computed from (their running error bounds) and the
  roundings of torch's backward formula for that operation (``tools/autograd/derivatives.yaml``) — and
  multiplying it into the incoming gradient rounds once more; ``B_v = Σ |c|·((1 + ρ)·B_u + ρ·A_u)`` is
  exact algebra for products, so ``B`` holds for any order of the multiplications;
* ``edges``, the number of edges of the graph (an upper bound: shared parts are counted again).

The additions that merge paths are grouped differently by the two modes, but each path product passes
through at most ``edges`` of them, so :meth:`Dual.gradient_error` ``= B + γ(edges)·(A + B)`` bounds the
error of either mode. Branches (``min``, ``max``, ``where``) must be decided identically (asserted by the
underlying :class:`Bounded`); a detached quantity (``torch.no_grad``) has no tangent.
"""

from __future__ import annotations

import math

import torch

from running_error import Bounded, assert_bounded, exact, where
from tolerances import gamma


def relative(quantity: Bounded) -> torch.Tensor:
    """``|x̂ − x| / |x|`` bound (0 for exact values, inf where the interval contains 0)."""
    low = quantity.lower()
    rel = torch.where(low > 0, quantity.error / low.clamp(min=1e-300), math.inf)
    return torch.where(quantity.error == 0, 0.0, rel)


class Dual:
    """A :class:`Bounded` value with forward-mode derivative data (see the module docstring)."""

    def __init__(
        self, bounded: Bounded, t: torch.Tensor, absolute: torch.Tensor, excess: torch.Tensor, edges: int
    ) -> None:
        self.b, self.t, self.A, self.B, self.edges = bounded, t, absolute, excess, edges

    @staticmethod
    def variable(tensor: torch.Tensor, dtype: torch.dtype, directions: int = 1) -> Dual:
        """Exact inputs; with ``directions = k`` the last dimension (of size k) holds the k directions
        (a row of 4 box coordinates), with 1 every element is its own direction."""
        bounded = exact(tensor, dtype)
        if directions == 1:
            t = torch.ones(*tensor.shape, 1, dtype=torch.float64)
        else:
            t = torch.eye(directions, dtype=torch.float64).expand(*tensor.shape, directions).clone()
        return Dual(bounded, t, t.abs(), torch.zeros_like(t), 0)

    @staticmethod
    def constant(bounded: Bounded, like: Dual) -> Dual:
        zero = torch.zeros(*bounded.value.shape, like.t.shape[-1], dtype=torch.float64)
        return Dual(bounded, zero, zero, zero, 0)

    def detach(self) -> Dual:
        return Dual.constant(self.b, self)

    @property
    def u(self) -> float:
        return self.b.u

    def gradient_error(self) -> torch.Tensor:
        """Bound on ``|ĝ − g|`` for a gradient computed by either mode in the dtype of the analysis."""
        return self.B + gamma(max(self.edges, 1), self.b.dtype) * (self.A + self.B)

    # ------------------------------------------------------------------------------------------ plumbing
    def _lift(self, other) -> Dual:
        if isinstance(other, Dual):
            return other
        if isinstance(other, Bounded):
            return Dual.constant(other, self)
        return Dual.constant(self.b._lift(other), self)

    def _combine(self, result: Bounded, parts: list[tuple[Dual, torch.Tensor, torch.Tensor]]) -> Dual:
        """``parts``: (operand, partial value, relative error of the computed partial)."""
        shape = (*result.value.shape, self.t.shape[-1])
        t, A, B = (torch.zeros(shape, dtype=torch.float64) for _ in range(3))
        edges = 0
        for operand, partial, rho in parts:
            c = partial.unsqueeze(-1)
            rho = ((1 + rho) * (1 + self.u) - 1).unsqueeze(-1)  # and the product with the incoming gradient
            t = t + c * operand.t
            A = A + c.abs() * operand.A
            contribution = c.abs() * ((1 + rho) * operand.B + rho * operand.A)
            B = B + torch.where(c == 0, 0.0, contribution)  # a zero partial contributes nothing
            edges += operand.edges + 1
        return Dual(result, t, A, B, edges)

    def _rounded(self, rho: torch.Tensor, roundings: int) -> torch.Tensor:
        """A partial with relative error ``rho`` computed with ``roundings`` more correctly rounded ops."""
        return (1 + rho) * (1 + self.u) ** roundings - 1

    # ------------------------------------------------------------------------------------------ + − × /
    def __add__(self, other) -> Dual:
        other = self._lift(other)
        zero = torch.zeros_like(self.b.value)
        return self._combine(
            self.b + other.b, [(self, torch.ones_like(zero), zero), (other, torch.ones_like(zero), zero)]
        )

    __radd__ = __add__

    def __neg__(self) -> Dual:
        return Dual(-self.b, -self.t, self.A, self.B, self.edges)

    def __sub__(self, other) -> Dual:
        return self + (-self._lift(other))

    def __rsub__(self, other) -> Dual:
        return self._lift(other) + (-self)

    def __mul__(self, other) -> Dual:
        other = self._lift(other)
        return self._combine(
            self.b * other.b,
            [(self, other.b.value, relative(other.b)), (other, self.b.value, relative(self.b))],
        )

    __rmul__ = __mul__

    def __truediv__(self, other) -> Dual:
        """torch: ``grad / y`` and ``−grad·x / (y·y)`` (two roundings more)."""
        other = self._lift(other)
        q = self.b / other.b
        ry, rx = relative(other.b), relative(self.b)
        inverse = ry / (1 - ry).clamp(min=1e-300)
        rho_y = self._rounded((1 + rx) * (1 + inverse) ** 2 - 1, 2)
        return self._combine(
            q, [(self, 1 / other.b.value, inverse), (other, -self.b.value / other.b.value**2, rho_y)]
        )

    def __rtruediv__(self, other) -> Dual:
        return self._lift(other) / self

    def __getitem__(self, index) -> Dual:
        if not isinstance(index, tuple):
            index = (index,)
        return Dual(
            self.b[index],
            self.t[(*index, slice(None))],
            self.A[(*index, slice(None))],
            self.B[(*index, slice(None))],
            self.edges,
        )

    # ------------------------------------------------------------------------------------------ functions
    def _unary(self, result: Bounded, partial: torch.Tensor, rho: torch.Tensor) -> Dual:
        return self._combine(result, [(self, partial, rho)])

    def exp(self) -> Dual:
        z = self.b.exp()
        return self._unary(z, z.value, relative(z))  # torch: grad · result

    def log(self) -> Dual:
        rx = relative(self.b)
        return self._unary(self.b.log(), 1 / self.b.value, rx / (1 - rx).clamp(min=1e-300))  # grad / x

    def sqrt(self) -> Dual:
        z = self.b.sqrt()
        rz = relative(z)
        return self._unary(z, 0.5 / z.value, rz / (1 - rz).clamp(min=1e-300))  # grad / (2·result)

    def atan(self) -> Dual:
        """torch: ``grad / (x·x + 1)``."""
        rx = relative(self.b)
        denominator = self.b.value**2 + 1
        rho = self._rounded((1 + rx) ** 2 - 1, 2)
        return self._unary(self.b.atan(), 1 / denominator, rho / (1 - rho).clamp(min=1e-300))

    def atan2(self, x: Dual) -> Dual:
        """``atan2(self, x)``; torch: ``r = 1/(y·y + x·x)``, ``grad·x·r``, ``grad·(−y)·r``."""
        y = self
        ry, rx = relative(y.b), relative(x.b)
        radius = y.b.value**2 + x.b.value**2
        r_radius = (1 + torch.maximum(ry, rx)) ** 2 - 1
        r_inverse = self._rounded(r_radius / (1 - r_radius).clamp(min=1e-300), 4)
        return self._combine(
            y.b.atan2(x.b),
            [
                (y, x.b.value / radius, (1 + rx) * (1 + r_inverse) - 1),
                (x, -y.b.value / radius, (1 + ry) * (1 + r_inverse) - 1),
            ],
        )

    def square(self) -> Dual:
        """torch's ``x ** 2``: value ``x·x``, derivative ``grad·2·x``."""
        return self._unary(self.b * self.b, 2 * self.b.value, relative(self.b))

    def pow(self, exponent: float) -> Dual:
        if exponent == 2:
            return self.square()
        if exponent == 0:  # torch's pow backward returns zeros for the exponent 0
            return Dual.constant(self.b.pow(0), self)
        if exponent == 1:
            return self
        # torch: grad · γ · x^(γ − 1) (a libm pow and two products)
        rx = relative(self.b)
        rho = self._rounded((1 + rx) ** abs(exponent - 1) * (1 + self.b.libm) - 1, 1)
        return self._unary(self.b.pow(exponent), exponent * self.b.value ** (exponent - 1), rho)

    def sigmoid(self) -> Dual:
        """Value ``1/(1 + exp(−x))``; torch's backward ``grad·(1 − y)·y``."""
        y = 1 / (1 + (-self.b).exp())
        rho = self._rounded((1 + relative(1 - y)) * (1 + relative(y)) - 1, 2)
        return self._unary(y, y.value * (1 - y.value), rho)

    def bce_with_logits(self, target: Bounded) -> Dual:
        """torch's fused loss ``(1 − t)·x − log_sigmoid(x)``; its backward ``(sigmoid(x) − t)·grad``."""
        x = self.b
        value = (1 - target) * x - (x.minimum(0.0) - (-x.abs()).exp().log1p())
        p = 1 / (1 + (-x).exp())
        partial = p - target
        return self._unary(value, partial.value, relative(partial))

    # ------------------------------------------------------------------------------------------ branches
    def _pick(self, other: Dual, mask: torch.Tensor, decided: torch.Tensor, half: torch.Tensor) -> Dual:
        """Derivative data of the chosen operand (``mask``), or the average on ``half`` (torch's
        ``maximum``/``minimum`` split the gradient of a tie evenly); no finite bound where undecided."""

        def choose(a, b):
            picked = torch.where(mask.unsqueeze(-1), a, b)
            return torch.where(half.unsqueeze(-1), (a + b) / 2, picked)

        B = torch.where((decided | half).unsqueeze(-1), choose(self.B, other.B), math.inf)
        return Dual(
            self.b.maximum(other.b),
            choose(self.t, other.t),
            choose(self.A, other.A),
            B,
            self.edges + other.edges + 1,
        )

    def maximum(self, other) -> Dual:
        """torch.maximum: the larger operand passes its derivative; a tie of two exact equal numbers
        splits it; overlapping intervals (an undecided comparison) have no finite bound."""
        other = self._lift(other)
        decided = (self.b.value - other.b.value).abs() > 2 * (self.b.error + other.b.error)
        tie = (self.b.value == other.b.value) & (self.b.error == 0) & (other.b.error == 0)
        return self._pick(other, self.b.value > other.b.value, decided, tie)

    def minimum(self, other) -> Dual:
        return -((-self).maximum(-self._lift(other)))

    def clamp(self, min: float | None = None, max: float | None = None) -> Dual:
        """torch.clamp: the derivative passes where ``min <= x <= max`` (at equality too)."""
        result = self
        for bound, inside in ((min, lambda v, c: v >= c), (max, lambda v, c: v <= c)):
            if bound is None:
                continue
            other = result._lift(bound)
            decided = (result.b.value - other.b.value).abs() > 2 * (result.b.error + other.b.error)
            decided = decided | (
                (result.b.value == other.b.value) & (result.b.error == 0) & (other.b.error == 0)
            )
            keep = inside(result.b.value, other.b.value)
            values = result.b.maximum(other.b) if bound is min else result.b.minimum(other.b)
            picked = result._pick(other, keep, decided, torch.zeros_like(keep))
            result = Dual(values, picked.t, picked.A, picked.B, picked.edges)
        return result


def dual_where(condition: torch.Tensor, first: Dual, second: Dual) -> Dual:
    """A branch decided identically by every evaluation (as :func:`running_error.where`)."""
    mask = condition.unsqueeze(-1)
    return Dual(
        where(condition, first.b, second.b),
        torch.where(mask, first.t, second.t),
        torch.where(mask, first.A, second.A),
        torch.where(mask, first.B, second.B),
        first.edges + second.edges,
    )


def dual_safe_divide(numerator: Dual, denominator: Dual) -> Dual:
    """The library's ``_safe_divide`` (``numerator / denominator`` where positive, else exactly 0)."""
    positive = denominator.b.value > 0
    one = Dual.constant(exact(torch.ones_like(denominator.b.value), denominator.b.dtype), denominator)
    quotient = numerator / dual_where(positive, denominator, one)
    zero = Dual.constant(exact(torch.zeros_like(quotient.b.value), quotient.b.dtype), quotient)
    result = dual_where(positive, quotient, zero)
    certain = denominator.b.certain_sign().unsqueeze(-1)
    result.B = torch.where(certain, result.B, math.inf)
    result.b.error = torch.where(denominator.b.certain_sign(), result.b.error, math.inf)
    return result


def assert_gradients_agree(
    actual: torch.Tensor, ours: Dual, expected: torch.Tensor, theirs: Dual, what: str = ""
):
    """Two computed gradients of two formulas (analysed in float64): the gap of the formulas' exact
    derivatives, bounded from their float64 forward-mode values ``t`` (each within its own
    :meth:`Dual.gradient_error`), plus the error bound of each computed gradient."""
    gap = (ours.t - theirs.t).abs()
    bound = gap + 2 * (ours.gradient_error() + theirs.gradient_error())
    assert_bounded(actual, expected, bound.reshape(actual.shape), what)
