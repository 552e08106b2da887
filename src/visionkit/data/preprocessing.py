"""Data preprocessing with fit/transform (handbook §7): statistics come from the training split only.

Every preprocessor learns its statistics in :meth:`fit` (call it on the training data), applies them in
:meth:`transform` (to any split) and refuses to transform before it was fitted. Inputs are ``(N, D)``
feature matrices (``(N, ...)`` is flattened) — or ``(N, C, H, W)`` images for the per-channel modes.
Statistics are computed in float64; outputs have the input's floating dtype.

* :class:`MeanSubtraction` — per feature, one global mean, or per channel.
* :class:`Standardize` — zero mean, unit variance per feature or per channel (population std, as
  scikit-learn's ``StandardScaler``; a constant feature is only centred).
* :class:`MinMaxScale` — to ``feature_range`` (default [-1, 1]), as ``MinMaxScaler``.
* :class:`PCA` — keep ``k`` components or enough for a variance fraction; ``whiten`` like scikit-learn.
* :class:`PCAWhitening`, :class:`ZCAWhitening` — whitening with a regularizer ``eps``.
* :func:`channel_mean_std` — per-channel mean/std over an image dataset, streamed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from visionkit.errors import NotFittedError

MEAN_MODES = ("feature", "global", "channel")


def _as_matrix(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, D...) with N >= 1, got {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1).double()


def _output_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.is_floating_point() else torch.float32


class Preprocessor:
    """Base class: ``fit`` on the training split, then ``transform`` any split."""

    fitted = False

    def fit(self, x: torch.Tensor) -> Preprocessor:
        """Learn the statistics from training data ``x``; returns ``self``."""
        self._fit(x)
        self.fitted = True
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the fitted statistics to ``x`` (any split)."""
        if not self.fitted:
            raise NotFittedError(
                f"{type(self).__name__}.transform called before fit: fit it on the training split"
            )
        return self._transform(x)

    def fit_transform(self, x: torch.Tensor) -> torch.Tensor:
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)

    def _fit(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_features(self, matrix: torch.Tensor, expected: int) -> None:
        if matrix.shape[1] != expected:
            raise ValueError(
                f"x has {matrix.shape[1]} features, {type(self).__name__} was fitted on {expected}"
            )


def _mean_var(values: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance along ``dim`` by the two-pass formula ``mean((x − mean)²)``.

    Two passes (not torch's Welford ``var``) because their rounding error has a plain bound, which the
    tests assert: the variance is within ``Δ² + γ(n + 3)·(σ² + Δ²)`` of the exact one, where ``Δ`` is
    the mean's error (at most ``γ(n)·mean|x|``).
    """
    mean = values.mean(dim, keepdim=True)
    centred = values - mean
    return mean.squeeze(dim), (centred * centred).mean(dim)


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.dim() != 4:
        raise ValueError(f"channel mode needs images (N, C, H, W), got shape {tuple(x.shape)}")
    return _mean_var(x.double().transpose(0, 1).reshape(x.shape[1], -1), 1)


class MeanSubtraction(Preprocessor):
    """Subtract the training mean: per feature, one global scalar, or per image channel.

    Example:
        >>> train = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
        >>> MeanSubtraction("feature").fit(train).transform(torch.tensor([[2.0, 4.0]]))
        tensor([[0., 0.]])
    """

    def __init__(self, mode: str = "feature") -> None:
        if mode not in MEAN_MODES:
            raise ValueError(f"mode must be one of {MEAN_MODES}, got {mode!r}")
        self.mode = mode
        self.mean: torch.Tensor | None = None

    def _fit(self, x: torch.Tensor) -> None:
        if self.mode == "channel":
            self.mean = _channel_stats(x)[0]
        elif self.mode == "global":
            self.mean = _as_matrix(x).mean()
        else:
            self.mean = _as_matrix(x).mean(0)

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        assert self.mean is not None
        if self.mode == "channel":
            if x.dim() != 4 or x.shape[1] != self.mean.numel():
                raise ValueError(f"x must be (N, {self.mean.numel()}, H, W), got {tuple(x.shape)}")
            return (x.double() - self.mean.view(1, -1, 1, 1)).to(_output_dtype(x))
        matrix = _as_matrix(x)
        if self.mode == "feature":
            self._check_features(matrix, self.mean.numel())
        return (matrix - self.mean).reshape(x.shape).to(_output_dtype(x))


class Standardize(Preprocessor):
    """``(x - mean) / std`` per feature (or per channel); equals ``sklearn.preprocessing.StandardScaler``.

    Example:
        >>> Standardize().fit_transform(torch.tensor([[0.0], [2.0]]))
        tensor([[-1.],
                [ 1.]])
    """

    def __init__(self, mode: str = "feature") -> None:
        if mode not in ("feature", "channel"):
            raise ValueError(f"mode must be 'feature' or 'channel', got {mode!r}")
        self.mode = mode
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def _fit(self, x: torch.Tensor) -> None:
        if self.mode == "channel":
            mean, variance = _channel_stats(x)
        else:
            mean, variance = _mean_var(_as_matrix(x), 0)
        std = variance.sqrt()
        self.mean, self.std = (
            mean,
            torch.where(std > 10 * torch.finfo(torch.float64).eps, std, torch.ones_like(std)),
        )

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        assert self.mean is not None and self.std is not None
        if self.mode == "channel":
            if x.dim() != 4 or x.shape[1] != self.mean.numel():
                raise ValueError(f"x must be (N, {self.mean.numel()}, H, W), got {tuple(x.shape)}")
            shape = (1, -1, 1, 1)
            return ((x.double() - self.mean.view(shape)) / self.std.view(shape)).to(_output_dtype(x))
        matrix = _as_matrix(x)
        self._check_features(matrix, self.mean.numel())
        return ((matrix - self.mean) / self.std).reshape(x.shape).to(_output_dtype(x))

    def inverse_transform(self, x: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`transform` (feature mode)."""
        if not self.fitted or self.mode != "feature":
            raise NotFittedError("inverse_transform needs a fitted feature-mode Standardize")
        assert self.mean is not None and self.std is not None
        return (_as_matrix(x) * self.std + self.mean).reshape(x.shape).to(_output_dtype(x))


class MinMaxScale(Preprocessor):
    """Scale each feature linearly so the training minimum/maximum map to ``feature_range``.

    Equals ``sklearn.preprocessing.MinMaxScaler(feature_range)``; a constant feature maps to the lower
    end. Values outside the training range are not clipped.

    Example:
        >>> MinMaxScale().fit_transform(torch.tensor([[0.0], [5.0], [10.0]])).flatten()
        tensor([-1.,  0.,  1.])
    """

    def __init__(self, feature_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        low, high = feature_range
        if not low < high:
            raise ValueError(f"feature_range must be (low, high) with low < high, got {feature_range}")
        self.feature_range = (float(low), float(high))
        self.scale: torch.Tensor | None = None
        self.offset: torch.Tensor | None = None

    def _fit(self, x: torch.Tensor) -> None:
        matrix = _as_matrix(x)
        data_min, data_max = matrix.min(0).values, matrix.max(0).values
        data_range = data_max - data_min
        data_range = torch.where(
            data_range > 10 * torch.finfo(torch.float64).eps, data_range, torch.ones_like(data_range)
        )
        low, high = self.feature_range
        # a tensor numerator: torch evaluates `float / tensor` as reciprocal(tensor) · float (two roundings),
        # while tensor / tensor is one correctly rounded division, as numpy's (sklearn's) is
        self.scale = torch.full_like(data_range, high - low) / data_range
        self.offset = low - data_min * self.scale

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        assert self.scale is not None and self.offset is not None
        matrix = _as_matrix(x)
        self._check_features(matrix, self.scale.numel())
        return (matrix * self.scale + self.offset).reshape(x.shape).to(_output_dtype(x))


def _eigen(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, component directions (rows, by decreasing variance, sign-fixed) and variances (ddof 1)."""
    if matrix.shape[0] < 2:
        raise ValueError(f"PCA needs at least 2 samples, got {matrix.shape[0]}")
    mean = matrix.mean(0)
    _, singular, vt = torch.linalg.svd(matrix - mean, full_matrices=False)
    # deterministic signs (as scikit-learn): the largest-magnitude entry of each component is positive
    pivot = vt.abs().argmax(1)
    signs = torch.sign(vt[torch.arange(vt.shape[0]), pivot])
    vt = vt * torch.where(signs == 0, torch.ones_like(signs), signs).unsqueeze(1)
    return mean, vt, singular**2 / (matrix.shape[0] - 1)


class PCA(Preprocessor):
    """Principal component analysis: project centred data on the top components.

    Args:
        n_components: ``int`` keeps that many; a ``float`` in (0, 1) keeps the fewest components whose
            explained-variance ratio sum is strictly above it (scikit-learn's rule); ``None`` keeps all.
        whiten: divide each projected component by its standard deviation (unit variance outputs).

    Attributes after fit: ``mean``, ``components`` ``(k, D)``, ``explained_variance`` ``(k,)``,
    ``explained_variance_ratio`` ``(k,)``.

    Example:
        >>> x = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
        >>> PCA(1).fit(x).explained_variance_ratio
        tensor([1.], dtype=torch.float64)
    """

    def __init__(self, n_components: int | float | None = None, whiten: bool = False) -> None:
        if isinstance(n_components, float) and not 0.0 < n_components < 1.0:
            raise ValueError(f"n_components as a variance fraction must be in (0, 1), got {n_components}")
        if isinstance(n_components, int) and n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        self.n_components, self.whiten = n_components, whiten

    def _fit(self, x: torch.Tensor) -> None:
        matrix = _as_matrix(x)
        mean, vt, variance = _eigen(matrix)
        ratio = variance / variance.sum()
        if self.n_components is None:
            k = vt.shape[0]
        elif isinstance(self.n_components, float):
            k = int((ratio.cumsum(0) <= self.n_components).sum()) + 1
        else:
            k = self.n_components
        if k > vt.shape[0]:
            raise ValueError(f"n_components={k} exceeds min(n_samples, n_features)={vt.shape[0]}")
        self.mean, self.components = mean, vt[:k]
        self.explained_variance, self.explained_variance_ratio = variance[:k], ratio[:k]

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        matrix = _as_matrix(x)
        self._check_features(matrix, self.mean.numel())
        projected = (matrix - self.mean) @ self.components.T
        if self.whiten:
            projected = projected / self.explained_variance.sqrt()
        return projected.to(_output_dtype(x))

    def inverse_transform(self, y: torch.Tensor) -> torch.Tensor:
        """Map projected data back to the input space (lossy when components were dropped)."""
        if not self.fitted:
            raise NotFittedError("PCA.inverse_transform called before fit")
        projected = y.double()
        if self.whiten:
            projected = projected * self.explained_variance.sqrt()
        return (projected @ self.components + self.mean).to(_output_dtype(y))


class PCAWhitening(Preprocessor):
    """PCA whitening: ``x_white = (x - mean) U / sqrt(lambda + eps)`` (rotated into the eigenbasis,
    each direction scaled to unit variance; ``eps`` keeps tiny eigenvalues from blowing up noise).

    Example:
        >>> generator = torch.Generator().manual_seed(0)
        >>> x = torch.randn(200, 3, generator=generator) * torch.tensor([1.0, 5.0, 0.1])
        >>> y = PCAWhitening(eps=0.0).fit_transform(x)
        >>> bool(torch.allclose(torch.cov(y.T), torch.eye(3), atol=1e-4))
        True
    """

    def __init__(self, eps: float = 1e-5, n_components: int | None = None) -> None:
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        self.eps, self.n_components = eps, n_components

    def _fit(self, x: torch.Tensor) -> None:
        mean, vt, variance = _eigen(_as_matrix(x))
        k = vt.shape[0] if self.n_components is None else self.n_components
        self.mean, self.components, self.variance = mean, vt[:k], variance[:k]

    def _matrix(self) -> torch.Tensor:
        return self.components.T / (self.variance + self.eps).sqrt()

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        matrix = _as_matrix(x)
        self._check_features(matrix, self.mean.numel())
        return ((matrix - self.mean) @ self._matrix()).to(_output_dtype(x))


class ZCAWhitening(PCAWhitening):
    """ZCA whitening: PCA whitening rotated back, ``W = U diag(1/sqrt(lambda + eps)) U^T`` (symmetric):
    of all whitening transforms it keeps the data closest to the original (images still look like
    images).

    Example:
        >>> generator = torch.Generator().manual_seed(0)
        >>> x = torch.randn(300, 4, generator=generator) @ torch.randn(4, 4, generator=generator)
        >>> zca = ZCAWhitening(eps=0.0).fit(x)
        >>> bool(torch.allclose(zca.whitening_matrix, zca.whitening_matrix.T, atol=1e-10))
        True
    """

    def _fit(self, x: torch.Tensor) -> None:
        self.n_components = None
        super()._fit(x)

    @property
    def whitening_matrix(self) -> torch.Tensor:
        """``W`` with ``x_white = (x - mean) @ W``, shape ``(D, D)``."""
        return self._matrix() @ self.components

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        matrix = _as_matrix(x)
        self._check_features(matrix, self.mean.numel())
        return ((matrix - self.mean) @ self.whitening_matrix).reshape(x.shape).to(_output_dtype(x))


def channel_mean_std(images: Iterable[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (population) std over an image dataset, streamed in float64.

    Args:
        images: an iterable of ``(C, H, W)`` tensors, of ``(image, target)`` pairs (a ``Dataset``), or of
            ``(N, C, H, W)`` batches.

    Returns:
        ``mean`` and ``std``, each ``(C,)`` float32.

    Example:
        >>> mean, std = channel_mean_std([torch.zeros(3, 2, 2), torch.ones(3, 2, 2)])
        >>> mean.tolist(), std.tolist()
        ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    """
    total = total_sq = None
    count = 0
    for item in images:
        image = item[0] if isinstance(item, tuple | list) else item
        if not isinstance(image, torch.Tensor) or image.dim() not in (3, 4):
            raise ValueError(
                f"expected (C, H, W) or (N, C, H, W) tensors, got {getattr(image, 'shape', type(image))}"
            )
        batch = image.unsqueeze(0) if image.dim() == 3 else image
        values = batch.double().transpose(0, 1).reshape(batch.shape[1], -1)
        if total is None or total_sq is None:
            total, total_sq = values.sum(1), (values * values).sum(1)
        else:
            total, total_sq = total + values.sum(1), total_sq + (values * values).sum(1)
        count += values.shape[1]
    if total is None:
        raise ValueError("channel_mean_std got no images")
    assert total_sq is not None
    mean = total / count
    variance = (total_sq / count - mean * mean).clamp_min(0)
    return mean.float(), variance.sqrt().float()


__all__ = [
    "PCA",
    "MeanSubtraction",
    "MinMaxScale",
    "NotFittedError",
    "PCAWhitening",
    "Preprocessor",
    "Standardize",
    "ZCAWhitening",
    "channel_mean_std",
]
