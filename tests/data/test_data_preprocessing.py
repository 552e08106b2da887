"""Preprocessing (§7) against scikit-learn (StandardScaler, MinMaxScaler, PCA incl. whiten) and against
exact references; fit on train only, transform before fit is an error.

Tolerances (tests/data/preprocessing_bounds.py, tests/tolerances.py): each side — ours in torch,
scikit-learn in numpy — is bounded against an exact rational reference by counting its roundings (means:
a sum in any order; variances: the two-pass formulas; PCA: LAPACK's backward-stable SVD with Weyl's and
Wedin's perturbation theorems and the data's singular-value gaps; whitening: the exact covariance of the
output), and two sides agree within the sum of their bounds. Where both run the same float64 operations
(MinMaxScaler's ``x·scale + min``) the comparison is exact.
"""

from __future__ import annotations

import numpy as np
import preprocessing_bounds as B
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import decomposition
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from tolerances import assert_numbers_within, gamma, unit_roundoff
from visionkit.data import preprocessing as P

F64 = torch.float64


def _data(n: int = 120, d: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return torch.randn(n, d, generator=generator, dtype=torch.float64) @ mixing * 3 + torch.arange(d) - 2


def _assert_standardize_equals_sklearn(train: torch.Tensor, test: torch.Tensor) -> None:
    """Ours (two-pass variance) and sklearn (corrected two-pass) each within its bound of the exact z."""
    stats = B.exact_stats(train)
    exact, ours_bound = B.standardize_bound(stats, test.numpy(), corrected=False)
    _, sklearn_bound = B.standardize_bound(stats, test.numpy(), corrected=True)
    ours = P.Standardize().fit(train).transform(test)
    reference = StandardScaler().fit(train.numpy()).transform(test.numpy())
    assert_numbers_within(ours, exact, ours_bound, "ours vs exact")
    assert_numbers_within(reference, exact, sklearn_bound, "sklearn vs exact")
    assert_numbers_within(ours, reference, ours_bound + sklearn_bound, "ours vs sklearn")


def test_standardize_equals_sklearn_and_is_fitted_on_train_only() -> None:
    train, test = _data(), _data(seed=1)
    _assert_standardize_equals_sklearn(train, test)
    ours = P.Standardize().fit(train)
    # test-split statistics never leak: fitted on the test split itself, its mean would be 0 up to the
    # rounding bound below (the per-element bounds plus γ(N·D) of the mean of |z|)
    stats = B.exact_stats(test)
    _, bound = B.standardize_bound(stats, test.numpy(), corrected=False)
    self_fit = P.Standardize().fit_transform(test)
    leak_level = float(bound.max()) + gamma(test.numel(), F64) * float(self_fit.abs().mean())
    assert abs(float(self_fit.mean())) <= leak_level
    assert abs(float(ours.transform(test).mean())) > leak_level
    # round trip: the same μ̂, σ̂ both ways; fl(fl(fl(x − μ̂)/σ̂)·σ̂) = (x − μ̂)(1 + θ₃), + μ̂ rounds once
    back = ours.inverse_transform(ours.transform(test))
    centred = (test - ours.mean).abs()
    assert_numbers_within(
        back,
        test,
        gamma(3, F64) * centred * (1 + unit_roundoff(F64))
        + unit_roundoff(F64) * (test.abs() + gamma(3, F64) * centred),
    )


def test_constant_feature_is_only_centred_like_sklearn() -> None:
    train = torch.cat([_data(30, 3), torch.full((30, 1), 7.0, dtype=torch.float64)], 1)
    _assert_standardize_equals_sklearn(train, train)
    assert bool((P.Standardize().fit_transform(train)[:, 3] == 0).all())  # 30 sevens: mean exactly 7
    # scale = (hi − lo)/range and x·scale + (lo − min·scale): the same float64 operations as sklearn
    np.testing.assert_array_equal(
        P.MinMaxScale().fit_transform(train).numpy(),
        MinMaxScaler(feature_range=(-1, 1)).fit_transform(train.numpy()),
    )


@pytest.mark.parametrize("feature_range", [(-1.0, 1.0), (0.0, 1.0), (-3.0, 0.5)])
def test_min_max_equals_sklearn(feature_range) -> None:
    train, test = _data(), _data(seed=2)
    ours = P.MinMaxScale(feature_range).fit(train)
    reference = MinMaxScaler(feature_range=feature_range).fit(train.numpy())
    np.testing.assert_array_equal(ours.transform(test).numpy(), reference.transform(test.numpy()))
    # the training minimum / maximum map to the range's ends up to the affine map's roundings
    low, high = train.min(0).values.numpy(), train.max(0).values.numpy()
    scaled = ours.transform(train).numpy()
    exact, bound = B.min_max_bound(low, high, feature_range, train.numpy())
    assert_numbers_within(scaled, exact, bound)
    assert bool((exact[train.argmin(0), range(6)] == feature_range[0]).all())
    assert bool((exact[train.argmax(0), range(6)] == feature_range[1]).all())


def test_mean_subtraction_modes() -> None:
    train = _data()
    # feature / global: x − x.mean(0) and x − x.mean() are the same torch operations on the same tensor
    assert torch.equal(P.MeanSubtraction("feature").fit_transform(train), train - train.mean(0))
    assert torch.equal(P.MeanSubtraction("global").fit_transform(train), train - train.mean())
    images = torch.rand(10, 3, 4, 5, dtype=torch.float64) + torch.tensor([0.0, 1.0, 5.0]).view(1, 3, 1, 1)
    per_channel = images.transpose(0, 1).reshape(3, -1).T  # (200, 3): the channel statistics' samples
    stats = B.exact_stats(per_channel)
    # fl(x − μ̂) against x − μ: |Δ| + u·|x − μ̂|
    centred = P.MeanSubtraction("channel").fit_transform(images).transpose(0, 1).reshape(3, -1).T
    exact = B.exact_centred(stats, per_channel.numpy())
    d_mu = stats.mean_bound
    assert_numbers_within(centred, exact, d_mu + unit_roundoff(F64) * (np.abs(exact) + 2 * d_mu))
    exact, bound = B.standardize_bound(stats, per_channel.numpy(), corrected=False)
    standardized = P.Standardize("channel").fit_transform(images).transpose(0, 1).reshape(3, -1).T
    assert_numbers_within(standardized, exact, bound)


def _align_signs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * np.sign((a * b).sum(0, keepdims=True))


@pytest.mark.parametrize("n_components", [2, 4, None, 0.9, 0.5])
@pytest.mark.parametrize("whiten", [False, True])
def test_pca_equals_sklearn(n_components, whiten: bool) -> None:
    train, test = _data(), _data(seed=3)
    ours = P.PCA(n_components, whiten=whiten).fit(train)
    reference = decomposition.PCA(n_components, whiten=whiten, svd_solver="full").fit(train.numpy())
    assert ours.components.shape[0] == reference.n_components_
    k = reference.n_components_
    # bounds need every eigenvalue: the full fits (the same SVD: the first k values are these exactly)
    ours_all, reference_all = P.PCA().fit(train), decomposition.PCA(svd_solver="full").fit(train.numpy())
    assert torch.equal(ours.explained_variance, ours_all.explained_variance[:k])
    stats = B.exact_stats(train)
    ours_b = B.svd_bounds(stats, ours_all.explained_variance.numpy())
    reference_b = B.svd_bounds(stats, reference_all.explained_variance_)
    assert_numbers_within(
        ours.explained_variance, reference.explained_variance_, (ours_b.variance + reference_b.variance)[:k]
    )
    ratio_bound = B.ratio_bound(ours_all.explained_variance.numpy(), ours_b) + B.ratio_bound(
        reference_all.explained_variance_, reference_b
    )
    assert_numbers_within(ours.explained_variance_ratio, reference.explained_variance_ratio_, ratio_bound[:k])
    if isinstance(n_components, float):  # the choice of k is not at a tie: every cumulative sum is clear
        cumulative = np.cumsum(reference_all.explained_variance_ratio_)
        assert bool((np.abs(cumulative - n_components) > np.cumsum(ratio_bound) + gamma(6, F64)).all())
    ours_test, reference_test = ours.transform(test).numpy(), reference.transform(test.numpy())
    bounds = []
    for mean, components, variances, b, is_sklearn in (
        (ours.mean.numpy(), ours.components.numpy(), ours.explained_variance.numpy(), ours_b, False),
        (reference.mean_, reference.components_, reference.explained_variance_, reference_b, True),
    ):
        projected = (test.numpy() - mean) @ components.T
        projection = B.projection_bound(test.numpy(), mean, components, b, sklearn=is_sklearn)
        reconstruction = B.reconstruction_bound(projected, projection, mean, components, b)
        if whiten:
            projection = B.whitened_bound(projected, projection, variances, b.variance[:k])
        bounds.append((projection, reconstruction))
    assert_numbers_within(
        _align_signs(ours_test, reference_test), reference_test, bounds[0][0] + bounds[1][0]
    )
    assert_numbers_within(
        ours.inverse_transform(ours.transform(test)),
        reference.inverse_transform(reference_test),
        bounds[0][1] + bounds[1][1],
    )


def test_pca_variance_fraction_rule() -> None:
    train = _data()
    cumulative = P.PCA().fit(train).explained_variance_ratio.cumsum(0)  # the rule's own cumulative sums
    for fraction in (0.3, 0.8, 0.99):
        k = P.PCA(fraction).fit(train).components.shape[0]
        assert float(cumulative[k - 1]) > fraction and (k == 1 or float(cumulative[k - 2]) <= fraction)


def _assert_whitens(whitening, train: torch.Tensor) -> None:
    """The exact covariance of our whitened output is I within the derived bound."""
    model = whitening(eps=0.0).fit(train)
    white = model.transform(train)
    zca = whitening is P.ZCAWhitening
    stats = B.exact_stats(train)
    variances, components = model.variance.numpy(), model.components.numpy()
    svd = B.svd_bounds(stats, variances)
    bounds = B.whitening_bounds(components, variances, svd, zca=zca)
    matrix = (model.whitening_matrix if zca else model._matrix()).numpy()
    whitened = B.identity_covariance_bound(bounds)
    centred = (train - model.mean).numpy()
    bound = whitened + B.output_covariance_bound(centred, matrix, whitened)
    assert B.frobenius_distance_to_identity(B.exact_covariance(white)) <= bound


@pytest.mark.parametrize("whitening", [P.PCAWhitening, P.ZCAWhitening])
def test_whitening_gives_identity_covariance(whitening) -> None:
    train = _data(500)
    _assert_whitens(whitening, train)
    regularized = whitening(eps=1.0).fit_transform(train)
    variances = torch.cov(regularized.T).diagonal()
    # eps shrinks the small directions below unit variance: exactly λ/(λ + 1) ≤ 1 − 1/(λ₁ + 1) ≈ 1 − 0.007,
    # far from 1 against rounding (‖·‖ bounds above ~1e-12)
    assert bool((variances < 1).all())


def test_zca_is_symmetric_and_closest_to_the_input() -> None:
    train = _data(400)
    zca = P.ZCAWhitening(eps=0.0).fit(train)
    matrix = zca.whitening_matrix
    # W = fl(fl(Vᵀ ⊘ s) @ V): Wᵢⱼ and Wⱼᵢ sum the same exact terms VₖᵢVₖⱼ/sₖ, each with θ(D + 1)
    components, scale = zca.components, zca.variance.sqrt()
    terms = (components.abs().T / scale) @ components.abs()
    assert_numbers_within(matrix, matrix.T, 2 * gamma(7, F64) * terms)
    # reference: W = C^(−1/2) of the exact covariance (mpmath, 50 digits), rounded to float64
    stats = B.exact_stats(train)
    reference = B.inverse_square_root(stats)
    variances = zca.variance.numpy()
    bounds = B.whitening_bounds(components.numpy(), variances, B.svd_bounds(stats, variances), zca=True)
    bound = B.inverse_square_root_bound(bounds) + unit_roundoff(F64) * float(np.linalg.norm(reference))
    assert float(np.linalg.norm(matrix.numpy() - reference)) <= bound
    # ZCA moves the data less than PCA whitening: compared exactly for our two computed matrices (the
    # transforms apply them within the bounds of test_whitening_gives_identity_covariance)
    pca = P.PCAWhitening(eps=0.0).fit(train)._matrix().numpy()
    assert B.squared_distance_moved(stats, matrix.numpy()) < B.squared_distance_moved(stats, pca)


def test_channel_mean_std_over_dataset_and_batches() -> None:
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 5, 4, generator=generator) * (c + 1) for c in range(7)]
    stacked = torch.stack(images).double()
    samples = stacked.transpose(0, 1).reshape(3, -1).T  # (140, 3)
    stats = B.exact_stats(samples)
    exact_mean, exact_std = stats.mean_float, np.sqrt(stats.variance)
    mean_bound, std_bound = _channel_mean_std_bound(samples, stats)
    for source in ([(image, 0) for image in images], [stacked[:3], stacked[3:]]):
        mean, std = P.channel_mean_std(source)
        assert_numbers_within(mean, exact_mean, mean_bound)
        assert_numbers_within(std, exact_std, std_bound)


def _channel_mean_std_bound(samples: torch.Tensor, stats: B.ExactStats) -> tuple[np.ndarray, np.ndarray]:
    """channel_mean_std: float64 sums of x and x² in any grouping, one-pass variance, float32 results.

    Mean: ``Dμ`` (a sum and a division), then the float32 rounding ``u₃₂·|μ̂|``. Variance
    ``fl(fl(Σ̂x²/n) − fl(μ̂²))``: ``Σ̂x²/n`` within ``γ(n + 1)·Σx²/n``, ``μ̂²`` within
    ``Dμ(2|μ| + Dμ) + u·μ̂²``, the subtraction ``u·|v̂|``; ``|√v̂ − σ| ≤ Bv/σ``, then ``√`` rounds once in
    float64 and once to float32.
    """
    n, u32 = stats.n, unit_roundoff(torch.float32)
    d_mu, mean = stats.mean_bound, np.abs(stats.mean_float)
    mean_hat = mean + d_mu
    squares = (samples**2).sum(0).numpy() * (1 + gamma(n, F64))
    variance = stats.variance
    b_v = (
        gamma(n + 1, F64) * squares / n
        + d_mu * (2 * mean + d_mu)
        + unit_roundoff(F64) * (mean_hat**2 + variance + squares / n)
    )
    sigma = np.sqrt(variance)
    std_hat = sigma + b_v / sigma
    return d_mu + u32 * mean_hat, b_v / sigma + unit_roundoff(F64) * std_hat + u32 * std_hat * (
        1 + unit_roundoff(F64)
    )


@pytest.mark.parametrize(
    "preprocessor",
    [P.MeanSubtraction(), P.Standardize(), P.MinMaxScale(), P.PCA(2), P.PCAWhitening(), P.ZCAWhitening()],
)
def test_transform_before_fit_is_an_error(preprocessor) -> None:
    with pytest.raises(P.NotFittedError, match="before fit"):
        preprocessor.transform(_data())


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="features"):
        P.Standardize().fit(_data(d=6)).transform(_data(d=5))
    with pytest.raises(ValueError, match="shape"):
        P.Standardize().fit(torch.zeros(5))
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        P.MinMaxScale().fit(np.zeros((3, 2)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="channel"):
        P.MeanSubtraction("channel").fit(_data())
    with pytest.raises(ValueError, match="feature_range"):
        P.MinMaxScale((1.0, 1.0))
    with pytest.raises(ValueError, match="n_components"):
        P.PCA(1.5)
    with pytest.raises(ValueError, match="n_components"):
        P.PCA(10).fit(_data(d=6))
    with pytest.raises(ValueError, match="mode"):
        P.MeanSubtraction("pixel")


def test_float32_input_keeps_dtype() -> None:
    train = _data().float()
    assert P.Standardize().fit_transform(train).dtype == torch.float32
    assert P.PCA(2).fit_transform(train).dtype == torch.float32


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 40), st.integers(1, 5), st.integers(0, 10_000))
def test_standardize_fuzz_against_sklearn(n: int, d: int, seed: int) -> None:
    data = _data(n, d, seed)
    _assert_standardize_equals_sklearn(data, data)
