"""Input conversion for the metrics: tensors, arrays or lists in, numpy out; errors name the argument."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["to_numpy"]


def to_numpy(
    value: Any, name: str, *, ndim: tuple[int, ...] | None = None, finite: bool = False
) -> np.ndarray:
    """Return ``value`` (``torch.Tensor``, ``np.ndarray`` or nested list) as a numpy array.

    Args:
        value: the input.
        name: argument name used in error messages.
        ndim: allowed numbers of dimensions (``None`` = any).
        finite: reject NaN or infinite entries.

    Raises:
        TypeError: for inputs that are not array-like.
        ValueError: for a wrong number of dimensions or non-finite values.
    """
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor, without importing torch here
        value = value.detach().cpu().numpy()
    elif not isinstance(value, np.ndarray):
        if not isinstance(value, (list, tuple, int, float, np.number)):
            raise TypeError(f"{name} must be a torch.Tensor, numpy array or list, got {type(value).__name__}")
        value = np.asarray(value)
    if value.dtype == object:
        raise TypeError(f"{name} must be numeric, got an array of Python objects")
    if ndim is not None and value.ndim not in ndim:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, ndim))} dimension(s), got shape {value.shape}"
        )
    if finite and value.dtype.kind == "f" and not np.isfinite(value).all():
        bad = np.flatnonzero(~np.isfinite(value.reshape(-1)))[:10].tolist()
        raise ValueError(f"{name} must be finite, got NaN/Inf at flat index {bad}")
    return value
