"""Exact references and derived error bounds for the preprocessing tests (test_data_preprocessing.py).

The references are exact: rational arithmetic (``fractions.Fraction``) on the float64 data, or mpmath at
50 digits for ``C^(−1/2)``. Each implementation ("side": ours in torch, scikit-learn in numpy / LAPACK) is
bounded against them by counting its roundings with the model of tests/tolerances.py, so two sides agree
within the sum of their bounds on any CPU, kernel or LAPACK build. Notation: data ``X`` (n×D), exact mean
``μ``, exact centred data ``A = X − 1μᵀ``, ``Sⱼ = Σᵢ Aᵢⱼ²``, population variance ``σⱼ² = Sⱼ/n``, covariance
``C = AᵀA/(n − 1)`` with eigenvalues ``λᵢ = σᵢ(A)²/(n − 1)`` and eigenvectors ``vᵢ``.

Mean (every side: a sum in any order, one division): ``|μ̂ⱼ − μⱼ| ≤ Dμⱼ = γ(n)·Σᵢ|Xᵢⱼ|/n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import mpmath
import numpy as np
import torch

from tolerances import gamma, lapack_backward_error, mean_error_bound, unit_roundoff

F64 = torch.float64
U = unit_roundoff(F64)


def _g(n: int) -> float:
    return gamma(n, F64)


def fractions(x: torch.Tensor | np.ndarray) -> list[list[Fraction]]:
    """Columns of a float64 matrix ``(n, D)`` as exact fractions."""
    array = np.asarray(x.detach().double().numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    return [[Fraction(v) for v in column] for column in array.T.tolist()]


@dataclass(frozen=True)
class ExactStats:
    """Exact column statistics of a matrix and the mean's rounding bound ``Dμ``."""

    n: int
    columns: list[list[Fraction]]
    mean: list[Fraction]
    sum_squares: list[Fraction]  # Sⱼ = Σ (x − μ)²
    mean_bound: np.ndarray  # Dμⱼ

    @property
    def variance(self) -> np.ndarray:
        """Population variances σⱼ² (float64 of the exact values)."""
        return np.array([float(s / self.n) for s in self.sum_squares])

    @property
    def mean_float(self) -> np.ndarray:
        return np.array([float(m) for m in self.mean])


def exact_stats(x: torch.Tensor) -> ExactStats:
    """Exact per-column mean and ``Σ(x − μ)²`` of ``x (n, D)``, and ``Dμ`` for any float64 evaluation."""
    columns = fractions(x)
    n = len(columns[0])
    means = [sum(c) / n for c in columns]
    squares = [sum((v - m) ** 2 for v in c) for c, m in zip(columns, means, strict=True)]
    bound = np.array([mean_error_bound(float(sum(abs(v) for v in c)), n, F64) for c in columns])
    return ExactStats(n, columns, means, squares, bound)


def variance_bound(stats: ExactStats, corrected: bool) -> np.ndarray:
    """Bound on ``|v̂ⱼ − σⱼ²|`` of a two-pass population variance (per column).

    Two-pass (ours): ``Σ fl(fl(x − μ̂)²)/n``; with ``Δ = μ̂ − μ``, ``Σ(x − μ̂)² = S + nΔ²`` exactly, and each
    term carries 3 roundings, the sum ``n − 1`` more and the division one: ``v̂ = (S + nΔ²)(1 + θ)/n``,
    ``|θ| ≤ γ(n + 3)`` (all terms positive), so ``|v̂ − σ²| ≤ Δ² + γ(n + 3)·(σ² + Δ²)``.

    Corrected two-pass (scikit-learn's ``_incremental_mean_and_var``): ``Ŝc = fl(Ŝ − fl(fl(c²)/n))`` with
    ``Ŝ = (S + nΔ²)(1 + θ_(n+2))`` and ``c = Σ fl(x − μ̂) = −nΔ + ξ``, ``|ξ| ≤ γ(n)·Σ|x − μ̂|``, then
    ``v̂ = fl(Ŝc/n)``: ``|Ŝc − S| ≤ nΔ² + γ(n+2)(S + nΔ²) + (1 + γ₂)c̄²/n + u(Ŝ + t)``, ``c̄ = n|Δ| + |ξ|``
    (the correction's cancellation against ``nΔ²`` is not used), and ``|v̂ − σ²| ≤ (|Ŝc − S| + u·|Ŝc|)/n``.
    """
    n, s, d = stats.n, np.array([float(v) for v in stats.sum_squares]), stats.mean_bound
    if not corrected:
        return d**2 + _g(n + 3) * (s / n + d**2)
    abs_dev = np.array(
        [float(sum(abs(v - m) for v in c)) for c, m in zip(stats.columns, stats.mean, strict=True)]
    )
    s_hat = (s + n * d**2) * (1 + _g(n + 2))
    c_bar = n * d + _g(n) * (abs_dev + n * d)
    t = (1 + _g(2)) * c_bar**2 / n
    error = n * d**2 + _g(n + 2) * (s + n * d**2) + t + U * (s_hat + t)
    return (error + U * (s + error)) / n


def exact_centred(stats: ExactStats, x: np.ndarray) -> np.ndarray:
    """``x − μ`` (rows ``x (N, D)``) computed exactly, rounded to float64."""
    return np.array(
        [[float(Fraction(v) - m) for v, m in zip(row, stats.mean, strict=True)] for row in x.tolist()]
    )


def standardize_bound(stats: ExactStats, x: np.ndarray, corrected: bool) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``z = (x − μ)/σ`` of rows ``x (N, D)`` and the bound of ``fl(fl(x − μ̂)/σ̂)`` against it.

    ``σ̂ = fl(√v̂)``: ``|σ̂ − σ| ≤ Dσ = Bv/σ + u·(σ + Bv/σ)`` (``Bv`` from :func:`variance_bound`). Then
    ``(x − μ̂)/σ̂ − z = (z·(σ − σ̂) − Δ)/σ̂`` and the subtraction and division round once each:
    ``|ẑ − z| ≤ (|z|·Dσ + Dμ + γ₂·(|x − μ| + Dμ))/(σ − Dσ)``. A constant column (``σ = 0``) is divided by
    1 on every side: ``|ẑ − 0| ≤ Dμ + u·(|x − μ| + Dμ)``.
    """
    variance, d_mu = stats.variance, stats.mean_bound
    sigma = np.sqrt(variance)
    b_v = variance_bound(stats, corrected)
    constant = variance == 0
    safe = np.where(constant, 1.0, sigma)
    d_sigma = b_v / safe + U * (safe + b_v / safe)
    assert bool((d_sigma[~constant] < sigma[~constant]).all()), "σ too small for a bound"
    centred = exact_centred(stats, x)
    z = np.where(constant, 0.0, centred / safe)
    bound = (np.abs(z) * d_sigma + d_mu + _g(2) * (np.abs(centred) + d_mu)) / (safe - d_sigma)
    flat = d_mu + U * (np.abs(centred) + d_mu)
    return z, np.where(constant, flat, bound)


def min_max_bound(
    data_min: np.ndarray, data_max: np.ndarray, feature_range: tuple[float, float], x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``lo + (x − m)(hi − lo)/(M − m)`` of rows ``x`` and the bound of ``fl(fl(x·ŝ) + ô)``.

    ``ŝ = fl(fl(hi − lo)/fl(M − m))`` is within ``γ₃`` (relative) of the exact scale ``s``;
    ``ô = fl(lo − fl(m·ŝ))``. With ŝ, the affine map is ``lo + (x − m)·ŝ`` exactly, so
    ``|r̂ − f(x)| ≤ |x − m|·γ₃·s + u·(|x·ŝ| + |m·ŝ| + (1 + u)|lo − m·ŝ|) + u·|r̂|``.
    """
    low, high = feature_range
    scale = (high - low) / (data_max - data_min)
    exact = np.array(
        [
            [
                float(Fraction(low) + (Fraction(v) - Fraction(m)) * (Fraction(high) - Fraction(low))
                      / (Fraction(mx) - Fraction(m)))
                for v, m, mx in zip(row, data_min.tolist(), data_max.tolist(), strict=True)
            ]
            for row in x.tolist()
        ]
    )  # fmt: skip
    s_hat = scale * (1 + _g(3))
    offset = np.abs(low) + np.abs(data_min) * s_hat
    bound = (
        np.abs(x - data_min) * _g(3) * scale
        + U * (np.abs(x) * s_hat + np.abs(data_min) * s_hat + (1 + U) * offset)
        + U * (np.abs(exact) + np.abs(x - data_min) * s_hat * _g(3) + U * offset)
    )
    return exact, bound


# --- PCA and whitening (LAPACK SVD) --------------------------------------------------------------------


@dataclass(frozen=True)
class SvdBounds:
    """What the backward-stable SVD of one side's centred data gives (module docstring notation).

    ``Â = fl(X − μ̂) = A − 1Δᵀ + F`` (``|Fᵢⱼ| ≤ u|Âᵢⱼ|``), and LAPACK returns the exact singular values of
    ``Â + E`` (``‖E‖₂ ≤ pε‖Â‖₂``, :func:`tolerances.lapack_backward_error`) and vectors within ``pε`` of
    the exact ones. So ``σ̂ᵢ`` are the singular values of ``A + P``, ``P = −1Δᵀ + F + E``, with
    ``‖P‖_F ≤ d = √n‖Dμ‖₂ + u‖Â‖_F + √D·pε‖Â‖_F``; Weyl: ``|σ̂ᵢ − σᵢ| ≤ d``;
    ``λ̂ᵢ = fl(fl(σ̂ᵢ²)/(n − 1))``: ``|λ̂ᵢ − λᵢ| ≤ (d(2σ̂ᵢ + d) + γ₂σ̂ᵢ²)/(n − 1)``. Wedin's theorem for one
    singular triplet (Stewart & Sun, *Matrix Perturbation Theory*, Thm V.4.4) with residuals ``‖Pṽ‖``,
    ``‖Pᵀũ‖ ≤ d``: ``sin θᵢ ≤ √2·d/δᵢ``, ``δᵢ = min(minⱼ≠ᵢ|σ̂ᵢ − σ̂ⱼ|, σ̂ᵢ) − d``; sign-aligned
    ``‖ṽ − v‖ ≤ √2 sin θ`` (θ ≤ π/2), so ``‖v̂ᵢ − vᵢ‖ ≤ pε + 2d/δᵢ``.
    """

    n: int
    d: float
    pe: float
    sigma: np.ndarray  # σ̂ (upper bounds, from the side's λ̂)
    variance: np.ndarray  # Bλ
    vector: np.ndarray  # ‖v̂ᵢ − vᵢ‖
    mean: np.ndarray  # Dμ
    norm_a: float  # ≥ ‖A‖_F


def svd_bounds(stats: ExactStats, variances: np.ndarray) -> SvdBounds:
    """Bounds for one side from the exact statistics and that side's eigenvalues ``λ̂`` (all D of them)."""
    n, dims = stats.n, len(stats.mean)
    norm_a = math.sqrt(float(sum(stats.sum_squares)))
    root_n_dmu = math.sqrt(n) * float(np.linalg.norm(stats.mean_bound))
    norm_a_hat = (norm_a + root_n_dmu) / (1 - U)
    pe = lapack_backward_error(n, dims, F64)
    d = root_n_dmu + U * norm_a_hat + math.sqrt(dims) * pe * norm_a_hat
    # σ̂ from λ̂ = σ̂²(1 + θ₂)/(n − 1): an upper bound, and the slack for the gaps
    sigma = np.sqrt(variances * (n - 1) / (1 - _g(2)))
    slack = _g(2) * sigma
    b_var = (d * (2 * sigma + d) + _g(2) * sigma**2) / (n - 1)
    gaps = np.array(
        [min([abs(sigma[i] - sigma[j]) - slack[i] - slack[j] for j in range(dims) if j != i]
             + [sigma[i] - slack[i]]) for i in range(dims)]
    )  # fmt: skip
    delta = gaps - d
    assert bool((delta > 0).all()), f"singular value gaps {gaps} too small for Wedin's bound (d = {d:.2e})"
    return SvdBounds(n, d, pe, sigma, b_var, pe + 2 * d / delta, stats.mean_bound, norm_a)


def ratio_bound(variances: np.ndarray, bounds: SvdBounds) -> np.ndarray:
    """Bound of ``r̂ᵢ = fl(λ̂ᵢ/fl(Σλ̂))`` against ``λᵢ/tr C``: ``T̂ = fl(Σλ̂)`` is within
    ``BT = ΣBλ + γ(D − 1)Σλ̂`` of ``tr C = Σλ``, and ``|λ̂/T̂ − λ/T| ≤ (Bλᵢ + rᵢ·BT)/T̂ ≤ (Bλᵢ + BT)/T̂``,
    plus the division's ``u·r̂``."""
    total = float(variances.sum())
    b_total = float(bounds.variance.sum()) + _g(len(variances) - 1) * total
    low_total = total / (1 + _g(len(variances))) - b_total
    return (bounds.variance + b_total) / low_total + U * variances / low_total


def projection_bound(
    x: np.ndarray, mean_hat: np.ndarray, components: np.ndarray, bounds: SvdBounds, sklearn: bool
) -> np.ndarray:
    """Bound ``(N, k)`` of the side's projection ``ŷ = (x − μ̂)·v̂ᵢ`` against ``y = (x − μ)·vᵢ``.

    ``(x − μ̂)·v̂ − y = (x − μ)·(v̂ − v) − Δ·v̂``: ``‖x − μ‖‖v̂ᵢ − vᵢ‖ + ‖Dμ‖‖v̂ᵢ‖`` with
    ``‖x − μ‖ ≤ ‖x − μ̂‖ + ‖Dμ‖``; rounding: ours ``fl((x − μ̂) @ v̂)`` ``γ(D + 1)·Σⱼ|xⱼ − μ̂ⱼ||v̂ᵢⱼ|``,
    scikit-learn ``x @ v̂ − μ̂ @ v̂`` ``γ(D + 1)·Σⱼ(|xⱼ| + |μ̂ⱼ|)|v̂ᵢⱼ|``.
    """
    dims = x.shape[1]
    centred = x - mean_hat
    norm_dmu = float(np.linalg.norm(bounds.mean))
    distance = np.linalg.norm(centred, axis=1, keepdims=True) * (1 + _g(dims + 1)) + norm_dmu
    vector_norm = np.linalg.norm(components, axis=1) * (1 + _g(dims))
    rounding_terms = (np.abs(x) + np.abs(mean_hat)) if sklearn else np.abs(centred)
    rounding = _g(dims + 1) * (rounding_terms @ np.abs(components).T)
    return distance * bounds.vector[: len(components)] + norm_dmu * vector_norm + rounding


def whitened_bound(projected: np.ndarray, projection: np.ndarray, variances: np.ndarray, b_var: np.ndarray):
    """Bound of ``fl(ŷ/fl(√λ̂))`` against ``y/√λ``: ``|ŷ − y|/√λ̂ + |y|·|1/√λ̂ − 1/√λ|`` plus 2 roundings,
    ``|1/√λ̂ − 1/√λ| ≤ Bλ/(√λ_lo·√λ̂·(√λ_lo + √λ̂))``, ``λ_lo = λ̂ − Bλ``, ``|y| ≤ |ŷ| + By``."""
    low = variances - b_var
    assert bool((low > 0).all())
    inverse_error = b_var / (np.sqrt(low) * np.sqrt(variances) * (np.sqrt(low) + np.sqrt(variances)))
    value = (np.abs(projected) + projection) / np.sqrt(low)
    return projection / np.sqrt(low) + (np.abs(projected) + projection) * inverse_error + _g(2) * value


def reconstruction_bound(
    projected: np.ndarray,
    projection: np.ndarray,
    mean_hat: np.ndarray,
    components: np.ndarray,
    bounds: SvdBounds,
) -> np.ndarray:
    """Bound ``(N, D)`` of the side's ``Σᵢ ŷᵢv̂ᵢ + μ̂`` (inverse transform of its own projection; with
    whitening the ``λ̂`` cancel up to 2 roundings) against ``Σᵢ yᵢvᵢ + μ``:
    ``Σᵢ(|ŷᵢ − yᵢ||v̂ᵢⱼ| + |yᵢ|·‖v̂ᵢ − vᵢ‖) + Dμⱼ`` plus ``γ(k + 4)·(Σᵢ|ŷᵢ||v̂ᵢⱼ| + |μ̂ⱼ|)``."""
    k = len(components)
    magnitude = np.abs(projected) + projection  # ≥ |y|
    return (
        projection @ np.abs(components)
        + (magnitude @ bounds.vector[:k])[:, None]
        + bounds.mean
        + _g(k + 4) * (np.abs(projected) @ np.abs(components) + np.abs(mean_hat))
    )


# --- whitening -------------------------------------------------------------------------------------------


def exact_covariance(y: torch.Tensor) -> list[list[Fraction]]:
    """The exact sample covariance ``(n − 1)⁻¹ Σ (y − ȳ)(y − ȳ)ᵀ`` of the rows of ``y (n, D)`` (float64
    values scaled to integers by one power of two, so the sums are integer arithmetic)."""
    ratios = [v.as_integer_ratio() for v in y.detach().double().reshape(-1).tolist()]
    scale = max(d for _, d in ratios)
    flat = [num * (scale // den) for num, den in ratios]
    n, dims = y.shape
    columns = [flat[j::dims] for j in range(dims)]
    sums = [sum(c) for c in columns]
    return [
        [
            (
                Fraction(sum(a * b for a, b in zip(columns[i], columns[j], strict=True)))
                - Fraction(sums[i] * sums[j], n)
            )
            / ((n - 1) * scale * scale)
            for j in range(dims)
        ]
        for i in range(dims)
    ]


def frobenius_distance_to_identity(matrix: list[list[Fraction]]) -> float:
    """``‖M − I‖_F`` of an exact matrix, rounded up."""
    square = sum((v - (i == j)) ** 2 for i, row in enumerate(matrix) for j, v in enumerate(row))
    return math.nextafter(math.sqrt(float(square)), math.inf) * (1 + 2 * U)


@dataclass(frozen=True)
class WhiteningBounds:
    """``‖Ŵ − W'‖_F ≤ omega`` where ``W'`` whitens ``Ĉ = (Â + E)ᵀ(Â + E)/(n − 1)`` exactly, and
    ``‖Ĉ − C‖_F ≤ delta_c``; ``lambda_min`` ≤ the smallest and ``lambda_max`` ≥ the largest eigenvalue of
    ``Ĉ``."""

    omega: float
    delta_c: float
    lambda_min: float
    lambda_max: float


def whitening_bounds(
    components: np.ndarray, variances: np.ndarray, bounds: SvdBounds, zca: bool
) -> WhiteningBounds:
    """Bounds for ours: PCA whitening ``Ŵ = fl(V̂ᵀ ⊘ fl(√λ̂))`` (column i: ``v̂ᵢ/s̃ᵢ``), ZCA ``fl(Ŵ_pca @ V̂)``.

    ``W'_pca = ṼΛ̃^(−1/2)`` (``Ṽ`` exact right singular vectors of ``Â + E``, ``Λ̃ = σ̂²/(n − 1)``);
    ``s̃ᵢ = fl(√λ̂ᵢ)`` is within ``γ₂`` (relative) of ``√λ̃ᵢ``, so column ``i`` of ``Ŵ − W'`` is at most
    ``(pε + γ₂(1 + pε)/(1 − γ₂) + u(1 + pε))/s̃ᵢ``. ZCA: ``W'_zca = W'_pca·Ṽᵀ``; the product rounds by
    ``γ_D·|Ŵ_pca||V̂|`` and ``‖Ŵ_pca V̂ − W'_pca Ṽᵀ‖_F ≤ ‖Ŵ_pca − W'_pca‖_F(1 + pε) + ‖W'_pca‖₂·√D·pε``.
    ``‖Ĉ − C‖_F ≤ (2‖A‖₂‖P‖_F + ‖P‖_F²)/(n − 1)`` (``P`` of :class:`SvdBounds`).
    """
    pe, dims = bounds.pe, components.shape[1]
    s_tilde = np.sqrt(variances)
    column = (pe + _g(2) * (1 + pe) / (1 - _g(2)) + U * (1 + pe)) / (s_tilde * (1 - U))
    omega = float(np.sqrt((column**2).sum()))
    lambda_min = float(variances.min()) / (1 + _g(2))
    if zca:
        pca = components.T / s_tilde
        rounding = _g(dims) * float(np.linalg.norm(np.abs(pca) @ np.abs(components)))
        omega = rounding + omega * (1 + pe) + math.sqrt(dims) * pe / math.sqrt(lambda_min)
    norm_a = bounds.norm_a
    delta_c = (2 * norm_a * bounds.d + bounds.d**2) / (bounds.n - 1)
    lambda_max = float(variances.max()) / (1 - _g(2))
    return WhiteningBounds(omega, delta_c, lambda_min, lambda_max)


def identity_covariance_bound(bounds: WhiteningBounds) -> float:
    """``‖ŴᵀCŴ − I‖_F``: ``W'ᵀĈW' = I`` exactly, so ``‖W'ᵀCW' − I‖_F ≤ ‖Ĉ − C‖_F/λ̃_min``; and
    ``‖ŴᵀCŴ − W'ᵀCW'‖_F ≤ 2‖C^(1/2)W'‖₂‖C^(1/2)‖₂ω + ‖C‖₂ω²``, ``‖C^(1/2)W'‖₂² ≤ 1 + ‖Ĉ − C‖/λ̃_min``."""
    g = bounds.delta_c / bounds.lambda_min
    c_norm = bounds.lambda_max + bounds.delta_c  # ‖C‖₂ ≤ ‖Ĉ‖₂ + ‖Ĉ − C‖
    return g + 2 * math.sqrt(1 + g) * math.sqrt(c_norm) * bounds.omega + c_norm * bounds.omega**2


def output_covariance_bound(centred: np.ndarray, matrix: np.ndarray, whitened: float) -> float:
    """``‖cov(Y) − ŴᵀCŴ‖_F`` for the computed ``Y = fl(fl(X − μ̂)Ŵ)`` (``centred`` = ``fl(X − μ̂)``):
    ``Y = AŴ − 1ΔᵀŴ + Z`` with ``|Z| ≤ γ(D + 1)|Â||Ŵ|`` (the subtraction and the product); a covariance
    ignores the constant row ``ΔᵀŴ`` and centring does not increase norms, so the change is at most
    ``(2‖AŴ‖₂‖Z‖_F + ‖Z‖_F²)/(n − 1)``, ``‖AŴ‖₂² = (n − 1)‖ŴᵀCŴ‖₂ ≤ (n − 1)(1 + whitened)``."""
    n, dims = centred.shape[0], matrix.shape[0]
    z = _g(dims + 1) * float(np.linalg.norm(np.abs(centred) @ np.abs(matrix)))
    aw = math.sqrt((n - 1) * (1 + whitened))
    return (2 * aw * z + z**2) / (n - 1)


def inverse_square_root(stats: ExactStats) -> np.ndarray:
    """``C^(−1/2)`` of the exact covariance, by mpmath's symmetric eigensolver at 50 digits (its error,
    ~10⁻⁴⁵, is far below the half ulp of the float64 result, which the caller adds to its bound)."""
    n, dims = stats.n, len(stats.columns)
    centred = [[v - m for v in c] for c, m in zip(stats.columns, stats.mean, strict=True)]
    with mpmath.workdps(50):
        cov = mpmath.matrix(dims, dims)
        for i in range(dims):
            for j in range(dims):
                exact = sum(a * b for a, b in zip(centred[i], centred[j], strict=True)) / (n - 1)
                cov[i, j] = mpmath.mpf(exact.numerator) / exact.denominator
        values, vectors = mpmath.eigsy(cov)
        root = vectors * mpmath.diag([1 / mpmath.sqrt(v) for v in values]) * vectors.T
        return np.array([[float(root[i, j]) for j in range(dims)] for i in range(dims)])


def inverse_square_root_bound(bounds: WhiteningBounds) -> float:
    """``‖Ŵ_zca − C^(−1/2)‖_F ≤ ω + ‖Ĉ^(−1/2) − C^(−1/2)‖_F``. For ``A ≥ a``, ``B ≥ b > 0``,
    ``X = A^(1/2) − B^(1/2)`` solves ``A^(1/2)X + XB^(1/2) = A − B``, so ``‖X‖_F ≤ ‖A − B‖_F/(√a + √b)``
    (entrywise in the eigenbases), and ``A^(−1/2) − B^(−1/2) = A^(−1/2)(B^(1/2) − A^(1/2))B^(−1/2)``; here
    ``a = λ̃_min`` (of ``Ĉ``) and ``b = a − ‖Ĉ − C‖`` (Weyl)."""
    a = bounds.lambda_min
    b = a - bounds.delta_c
    assert b > 0
    return bounds.omega + bounds.delta_c / (math.sqrt(a) + math.sqrt(b)) / math.sqrt(a * b)


def squared_distance_moved(stats: ExactStats, matrix: np.ndarray) -> Fraction:
    """``‖AW − A‖_F²`` computed exactly for a float64 ``W (D, D)``: how far the transform moves the data."""
    centred = [[v - m for v in c] for c, m in zip(stats.columns, stats.mean, strict=True)]
    w = [[Fraction(v) for v in row] for row in matrix.tolist()]
    dims = len(centred)
    total = Fraction(0)
    for r in range(stats.n):
        row = [centred[k][r] for k in range(dims)]
        for j in range(dims):
            total += (sum(row[k] * w[k][j] for k in range(dims)) - row[j]) ** 2
    return total
