"""Preprocessing (§7) against scikit-learn (StandardScaler, MinMaxScaler, PCA incl. whiten) and against
direct float64 formulas; fit on train only, transform before fit is an error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import decomposition
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from visionkit.data import preprocessing as P


def _data(n: int = 120, d: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=generator, dtype=torch.float64)
    return torch.randn(n, d, generator=generator, dtype=torch.float64) @ mixing * 3 + torch.arange(d) - 2


def test_standardize_equals_sklearn_and_is_fitted_on_train_only() -> None:
    train, test = _data(), _data(seed=1)
    ours = P.Standardize().fit(train)
    reference = StandardScaler().fit(train.numpy())
    np.testing.assert_allclose(
        ours.transform(test).numpy(), reference.transform(test.numpy()), rtol=1e-12, atol=1e-12
    )
    # test-split statistics never leak: the transformed test split is not exactly standardized
    assert abs(float(ours.transform(test).mean())) > 1e-3
    np.testing.assert_allclose(ours.inverse_transform(ours.transform(test)).numpy(), test.numpy(), atol=1e-12)


def test_constant_feature_is_only_centred_like_sklearn() -> None:
    train = torch.cat([_data(30, 3), torch.full((30, 1), 7.0, dtype=torch.float64)], 1)
    np.testing.assert_allclose(
        P.Standardize().fit_transform(train).numpy(),
        StandardScaler().fit_transform(train.numpy()),
        atol=1e-12,
    )
    np.testing.assert_allclose(
        P.MinMaxScale().fit_transform(train).numpy(),
        MinMaxScaler(feature_range=(-1, 1)).fit_transform(train.numpy()),
        atol=1e-12,
    )


@pytest.mark.parametrize("feature_range", [(-1.0, 1.0), (0.0, 1.0), (-3.0, 0.5)])
def test_min_max_equals_sklearn(feature_range) -> None:
    train, test = _data(), _data(seed=2)
    ours = P.MinMaxScale(feature_range).fit(train)
    reference = MinMaxScaler(feature_range=feature_range).fit(train.numpy())
    np.testing.assert_allclose(ours.transform(test).numpy(), reference.transform(test.numpy()), atol=1e-12)
    scaled = ours.transform(train)
    assert float(scaled.min()) == pytest.approx(feature_range[0]) and float(scaled.max()) == pytest.approx(
        feature_range[1]
    )


def test_mean_subtraction_modes() -> None:
    train = _data()
    np.testing.assert_allclose(
        P.MeanSubtraction("feature").fit_transform(train).numpy(), (train - train.mean(0)).numpy(), atol=1e-12
    )
    np.testing.assert_allclose(
        P.MeanSubtraction("global").fit_transform(train).numpy(), (train - train.mean()).numpy()
    )
    images = torch.rand(10, 3, 4, 5, dtype=torch.float64) + torch.tensor([0.0, 1.0, 5.0]).view(1, 3, 1, 1)
    centred = P.MeanSubtraction("channel").fit_transform(images)
    reference = images - images.mean(dim=(0, 2, 3), keepdim=True)
    np.testing.assert_allclose(centred.numpy(), reference.numpy(), atol=1e-12)
    standardized = P.Standardize("channel").fit_transform(images)
    reference = reference / images.std(dim=(0, 2, 3), unbiased=False, keepdim=True)
    np.testing.assert_allclose(standardized.numpy(), reference.numpy(), atol=1e-12)


def _align_signs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * np.sign((a * b).sum(0, keepdims=True))


@pytest.mark.parametrize("n_components", [2, 4, None, 0.9, 0.5])
@pytest.mark.parametrize("whiten", [False, True])
def test_pca_equals_sklearn(n_components, whiten: bool) -> None:
    train, test = _data(), _data(seed=3)
    ours = P.PCA(n_components, whiten=whiten).fit(train)
    reference = decomposition.PCA(n_components, whiten=whiten, svd_solver="full").fit(train.numpy())
    assert ours.components.shape[0] == reference.n_components_
    np.testing.assert_allclose(ours.explained_variance.numpy(), reference.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(
        ours.explained_variance_ratio.numpy(), reference.explained_variance_ratio_, rtol=1e-10
    )
    ours_test, reference_test = ours.transform(test).numpy(), reference.transform(test.numpy())
    np.testing.assert_allclose(_align_signs(ours_test, reference_test), reference_test, atol=1e-9)
    np.testing.assert_allclose(ours.inverse_transform(ours.transform(test)).numpy(),
                               reference.inverse_transform(reference_test), atol=1e-9)  # fmt: skip


def test_pca_variance_fraction_rule() -> None:
    train = _data()
    ratio = P.PCA().fit(train).explained_variance_ratio
    for fraction in (0.3, 0.8, 0.99):
        k = P.PCA(fraction).fit(train).components.shape[0]
        assert float(ratio[:k].sum()) > fraction and (k == 1 or float(ratio[: k - 1].sum()) <= fraction)


@pytest.mark.parametrize("whitening", [P.PCAWhitening, P.ZCAWhitening])
def test_whitening_gives_identity_covariance(whitening) -> None:
    train = _data(500)
    white = whitening(eps=0.0).fit_transform(train)
    np.testing.assert_allclose(torch.cov(white.T).numpy(), np.eye(6), atol=1e-9)
    regularized = whitening(eps=1.0).fit_transform(train)
    variances = torch.cov(regularized.T).diagonal()
    assert bool((variances < 1).all())  # eps shrinks the small directions below unit variance


def test_zca_is_symmetric_and_closest_to_the_input() -> None:
    train = _data(400)
    zca = P.ZCAWhitening(eps=0.0).fit(train)
    matrix = zca.whitening_matrix
    np.testing.assert_allclose(matrix.numpy(), matrix.T.numpy(), atol=1e-10)
    # reference: W = C^{-1/2} from the covariance eigendecomposition
    eigenvalues, vectors = torch.linalg.eigh(torch.cov(train.T))
    reference = vectors @ torch.diag(eigenvalues.rsqrt()) @ vectors.T
    np.testing.assert_allclose(matrix.numpy(), reference.numpy(), atol=1e-9)
    centred = train - train.mean(0)
    pca_white = P.PCAWhitening(eps=0.0).fit_transform(train)
    assert float((zca.transform(train) - centred).norm()) < float((pca_white - centred).norm())


def test_channel_mean_std_over_dataset_and_batches() -> None:
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 5, 4, generator=generator) * (c + 1) for c in range(7)]
    stacked = torch.stack(images).double()
    mean, std = P.channel_mean_std([(image, 0) for image in images])
    np.testing.assert_allclose(mean.numpy(), stacked.mean(dim=(0, 2, 3)).numpy(), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), stacked.std(dim=(0, 2, 3), unbiased=False).numpy(), rtol=1e-5)
    batch_mean, batch_std = P.channel_mean_std([stacked[:3], stacked[3:]])
    assert torch.allclose(batch_mean, mean) and torch.allclose(batch_std, std)


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
    np.testing.assert_allclose(
        P.Standardize().fit_transform(data).numpy(), StandardScaler().fit_transform(data.numpy()), atol=1e-9
    )
