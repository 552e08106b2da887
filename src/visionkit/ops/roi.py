"""What the RoI ops share: the RoI formats, their validation, and the channels-last feature layout.

RoIs come either as ``Tensor[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` or as a list with one
``Tensor[K_i, 4]`` of xyxy boxes per image (row ``i`` of the list is image ``i``). Coordinates are in
input-image pixels; ``spatial_scale`` (e.g. 1/16) maps them onto the feature map.

Unlike torchvision, a batch index outside ``[0, N)`` (or not an integer) is an error, not a silent row of
zeros, and non-finite coordinates are an error naming the row.

The ops themselves live in :mod:`visionkit.ops.roi_align`, :mod:`visionkit.ops.roi_pool` and
:mod:`visionkit.ops.multiscale_roi_align`; they gather whole channel vectors from a channels-last copy
of the features (one contiguous row of ``C`` values per pixel), so the work per sampled point is a
vectorized row operation and no Python loop runs over RoIs or bins.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from visionkit.ops._validate import check_boxes

__all__ = ["RoIs", "check_features", "convert_rois", "pair_size"]

RoIs = Tensor | Sequence[Tensor]


def pair_size(output_size: int | Sequence[int], name: str = "output_size") -> tuple[int, int]:
    """``7`` or ``(7, 7)`` → ``(7, 7)``; anything else (or a size < 1) is a ``ValueError`` naming ``name``."""
    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
        raise ValueError(f"{name} must be an int or a pair of ints >= 1, got {output_size!r}")
    return size  # type: ignore[return-value]


def check_features(features: Tensor, name: str = "input") -> None:
    """``features`` must be a floating ``Tensor[N, C, H, W]``."""
    if not isinstance(features, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [N, C, H, W], got {type(features).__name__}")
    if features.dim() != 4 or not features.is_floating_point():
        raise ValueError(
            f"{name} must be a floating Tensor[N, C, H, W], "
            f"got {features.dtype} of shape {list(features.shape)}"
        )


def convert_rois(rois: RoIs, features: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """Validate ``rois`` against ``features`` and return them as ``Tensor[K, 5]`` of ``dtype``.

    Args:
        rois: ``Tensor[K, 5]`` ``(batch_index, x1, y1, x2, y2)`` or a list of per-image ``Tensor[K_i, 4]``.
        features: the ``Tensor[N, C, H, W]`` the RoIs index into (for ``N`` and the device).
        dtype: the result's dtype (default: ``features.dtype``).

    Raises:
        ValueError: naming ``rois`` (or ``rois[i]``) for a wrong shape, a non-finite coordinate, a
            batch index that is not an integer in ``[0, N)``, or a device other than the features'.

    Example:
        >>> per_image = [torch.tensor([[0.0, 0, 4, 4]]), torch.tensor([[1.0, 1, 2, 2]])]
        >>> convert_rois(per_image, torch.zeros(2, 1, 8, 8))
        tensor([[0., 0., 0., 4., 4.],
                [1., 1., 1., 2., 2.]])
    """
    dtype = dtype or features.dtype
    batch_size = features.shape[0]
    if isinstance(rois, Tensor):
        if rois.dim() != 2 or rois.shape[1] != 5:
            raise ValueError(
                "rois must be a Tensor[K, 5] of (batch_index, x1, y1, x2, y2) rows or a list of per-image "
                f"Tensor[K_i, 4], got a tensor of shape {list(rois.shape)}"
            )
        if rois.is_complex() or rois.dtype == torch.bool:
            raise ValueError(f"rois must be a real tensor, got {rois.dtype}")
        converted = rois.to(dtype)
    elif isinstance(rois, (list, tuple)):
        if len(rois) > batch_size:
            raise ValueError(
                f"rois has {len(rois)} per-image entries but the features hold {batch_size} images"
            )
        for index, boxes in enumerate(rois):
            check_boxes(boxes, f"rois[{index}]")
        parts = [
            torch.cat((torch.full_like(boxes[:, :1], index, dtype=dtype), boxes.to(dtype)), dim=1)
            for index, boxes in enumerate(rois)
        ]
        converted = torch.cat(parts) if parts else features.new_zeros(0, 5, dtype=dtype)
    else:
        raise TypeError(f"rois must be a Tensor[K, 5] or a list of Tensor[K_i, 4], got {type(rois).__name__}")
    if converted.device != features.device:
        raise ValueError(
            f"input is on {features.device} but rois is on {converted.device}; move both to one device"
        )
    _check_roi_values(converted, batch_size)
    return converted


def _check_roi_values(rois: Tensor, batch_size: int) -> None:
    finite = torch.isfinite(rois).all(dim=1)
    if not bool(finite.all()):
        rows = (~finite).nonzero().flatten()[:5].tolist()
        raise ValueError(f"rois has non-finite values in rows {rows}")
    batch_index = rois[:, 0]
    bad = (batch_index < 0) | (batch_index >= batch_size) | (batch_index != batch_index.round())
    if bool(bad.any()):
        rows = bad.nonzero().flatten()[:5].tolist()
        values = batch_index[bad][:5].tolist()
        raise ValueError(
            f"rois has batch indices outside [0, {batch_size}) or not integers: rows {rows}, values {values}"
        )


def channels_last_rows(features: Tensor) -> Tensor:
    """``Tensor[N, C, H, W]`` → ``[N * H * W, C]``; row ``(n * H + y) * W + x`` is pixel ``(n, y, x)``."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def compute_dtype(features: Tensor) -> torch.dtype:
    """Half and bfloat16 features are computed in float32; float32/float64 as they are."""
    return features.dtype if features.dtype in (torch.float32, torch.float64) else torch.float32
