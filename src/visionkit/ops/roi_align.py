"""RoI Align (He et al., "Mask R-CNN", ICCV 2017; handbook §24): no quantization, bilinear samples.

A RoI ``(x1, y1, x2, y2)`` is mapped to the feature map by ``spatial_scale`` and kept in floating point
(the handbook's 665 px proposal at stride 32 stays 20.78 cells, its 7×7 bins 2.97 cells). Each bin holds
a regular ``grid_h × grid_w`` lattice of sampling points at the centres of equal sub-cells
(``sampling_ratio`` per side, or ``ceil(roi_size / output_size)`` per RoI when ``sampling_ratio <= 0``),
each point is read by bilinear interpolation, and the bin is their mean (``mode="avg"``, Mask R-CNN and
torchvision) or their maximum (``mode="max"``, the variant the handbook describes; mmcv's
``pool_mode="max"``; ties go to the first point in row-major order).

Boundary rules (torchvision's, matched exactly): a point with ``y < -1`` or ``y > H`` (or ``x`` outside
``[-1, W]``) reads 0 but still counts in the mean; a point in ``[-1, 0]`` reads the first row/column; a
point beyond ``H - 1`` reads the last. ``aligned=False`` (Mask R-CNN) widens RoIs narrower than one cell
to one cell; ``aligned=True`` (Detectron2, ONNX ``half_pixel``) shifts the RoI by −0.5 so that pixel
centres line up, and keeps any size.

Implementation: each output bin is a weighted sum of ``4 · grid_h · grid_w`` feature rows (channel
vectors) of a channels-last copy of the input, computed with ``embedding_bag``. The backward is the
transposed gather — the same weighted sums with the roles of bins and pixels exchanged (taps sorted by
target pixel) — so no ``index_add_`` over millions of rows is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

from visionkit.ops.roi import RoIs, channels_last_rows, check_features, compute_dtype, convert_rois, pair_size

__all__ = ["RoIAlign", "roi_align"]


def _axis_taps(
    start: Tensor, size: Tensor, grid: Tensor, bins: int, grid_max: int, limit: int
) -> tuple[Tensor, Tensor]:
    """Sampling along one axis for ``K`` RoIs: ``[K, bins, grid_max, 2]`` cell indices and weights.

    ``grid`` holds each RoI's number of points per bin; points beyond it (padding up to ``grid_max``) and
    points outside ``[-1, limit]`` get weight 0. The weights of the two neighbouring cells are the linear
    interpolation weights; the 2-D weight of a point is the product of its two axes' weights.
    """
    bin_size = size / bins
    bin_index = torch.arange(bins, device=start.device, dtype=start.dtype)
    point_index = torch.arange(grid_max, device=start.device, dtype=start.dtype)
    step = bin_size / grid.clamp(min=1).to(start.dtype)
    position = (
        start[:, None, None]
        + bin_index[None, :, None] * bin_size[:, None, None]
        + (point_index[None, None, :] + 0.5) * step[:, None, None]
    )
    valid = (point_index[None, None, :] < grid[:, None, None]) & (position >= -1.0) & (position <= limit)
    position = position.clamp(min=0)
    low = position.floor().long()
    at_end = low >= limit - 1
    low = torch.where(at_end, torch.full_like(low, limit - 1), low)
    position = torch.where(at_end, low.to(position.dtype), position)
    high = torch.where(at_end, low, low + 1)
    fraction = position - low.to(position.dtype)
    indices = torch.stack((low, high), dim=-1)
    weights = torch.stack((1 - fraction, fraction), dim=-1) * valid[..., None]
    return indices, weights


def _roi_geometry(
    rois: Tensor, spatial_scale: float, output_size: tuple[int, int], sampling_ratio: int, aligned: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per-RoI start, size and points per bin along y and x (torchvision's arithmetic, in ``rois.dtype``)."""
    offset = 0.5 if aligned else 0.0
    boxes = rois[:, 1:] * spatial_scale - offset
    start_x, start_y = boxes[:, 0], boxes[:, 1]
    width, height = boxes[:, 2] - start_x, boxes[:, 3] - start_y
    if not aligned:  # Mask R-CNN: force malformed or tiny RoIs to be at least one cell
        width, height = width.clamp(min=1.0), height.clamp(min=1.0)
    if sampling_ratio > 0:
        grid_y = torch.full_like(start_y, sampling_ratio, dtype=torch.long)
        grid_x = grid_y
    else:
        grid_y = torch.ceil(height / output_size[0]).long().clamp(min=0)
        grid_x = torch.ceil(width / output_size[1]).long().clamp(min=0)
    return start_y, height, grid_y, start_x, width, grid_x


def _bin_taps(
    rois: Tensor,
    height: int,
    width: int,
    spatial_scale: float,
    output_size: tuple[int, int],
    sampling_ratio: int,
    aligned: bool,
    per_point: bool,
) -> list[tuple[Tensor | slice, Tensor, Tensor, int]]:
    """Row indices and weights of every tap, grouped by points-per-bin so no group is padded.

    Returns ``(roi_ids, indices, weights, points)`` per group (``roi_ids`` is ``slice(None)`` when one
    grid serves all RoIs): ``indices``/``weights`` are
    ``[K_g * PH * PW, 4 * points]`` (avg: one bag per bin, weights already divided by the point count)
    or ``[K_g * PH * PW * points, 4]`` (``per_point``: one bag per sampling point).
    """
    start_y, size_y, grid_y, start_x, size_x, grid_x = _roi_geometry(
        rois, spatial_scale, output_size, sampling_ratio, aligned
    )
    bins = output_size[0] * output_size[1]
    if sampling_ratio > 0 or len(rois) == 0:  # one grid for all RoIs: no grouping, no index copies
        selections: list[Tensor | slice] = [slice(None)]
    else:
        key = grid_y * (int(grid_x.max()) + 1) + grid_x
        selections = [(key == value).nonzero().flatten() for value in torch.unique(key).tolist()]
    groups = []
    for ids in selections:
        gy, gx = (int(grid_y[ids][0]), int(grid_x[ids][0])) if len(rois) else (0, 0)
        rows_y, weight_y = _axis_taps(start_y[ids], size_y[ids], grid_y[ids], output_size[0], gy, height)
        cols_x, weight_x = _axis_taps(start_x[ids], size_x[ids], grid_x[ids], output_size[1], gx, width)
        base = rois[ids, 0].long() * (height * width)
        count = len(base)
        # [K, PH, gy, 2] x [K, PW, gx, 2] -> [K, PH, PW, gy, gx, 2, 2]
        index = (
            base[:, None, None, None, None, None, None]
            + rows_y[:, :, None, :, None, :, None] * width
            + cols_x[:, None, :, None, :, None, :]
        )
        weight = weight_y[:, :, None, :, None, :, None] * weight_x[:, None, :, None, :, None, :]
        points = gy * gx
        bags, taps = (count * bins * points, 4) if per_point else (count * bins, 4 * points)
        if not per_point:
            weight = weight / max(points, 1)
        groups.append((ids, index.reshape(bags, taps), weight.reshape(bags, taps), points))
    return groups


def _transposed_gather(
    index: Tensor, weight: Tensor, bag_of_tap: Tensor | int, grad_bags: Tensor, rows: int
) -> Tensor:
    """``grad_rows[r] = Σ_{taps t with index r} weight[t] · grad_bags[bag(t)]`` as ``[rows, C]``.

    The adjoint of ``embedding_bag``: sort the taps by target row, then one weighted bag per row.
    ``bag_of_tap`` is the bag of every tap, or (an int) the number of taps per bag when all bags have it.
    """
    index, order = torch.sort(index, stable=True)  # the stable sort of int64 keys is a radix sort
    counts = torch.bincount(index, minlength=rows)
    offsets = counts.cumsum(0) - counts
    bags = order // bag_of_tap if isinstance(bag_of_tap, int) else bag_of_tap[order]
    return F.embedding_bag(
        bags, grad_bags, offsets, mode="sum", per_sample_weights=weight[order].to(grad_bags.dtype)
    )


def _bag_of_tap(runs: list[tuple[int, int, int]], device: torch.device) -> Tensor:
    """Bag id of every tap for runs ``(first bag, bags, taps per bag)`` laid end to end."""
    return torch.cat(
        [
            torch.arange(first, first + count, device=device).repeat_interleave(taps)
            for first, count, taps in runs
        ]
    )


class _RoIAlignFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        features: Tensor,
        rois: Tensor,
        spatial_scale: float,
        output_size: tuple[int, int],
        sampling_ratio: int,
        aligned: bool,
        mode: str,
    ) -> Tensor:
        _, channels, height, width = features.shape
        bins = output_size[0] * output_size[1]
        rows = channels_last_rows(features)
        output = rows.new_zeros(rois.shape[0], bins, channels)
        groups = _bin_taps(
            rois, height, width, spatial_scale, output_size, sampling_ratio, aligned, mode == "max"
        )
        saved = []
        for ids, index, weight, points in groups:
            if points == 0:  # RoIs with an empty sampling grid (aligned, inverted) pool to 0
                continue
            values = F.embedding_bag(index, rows, mode="sum", per_sample_weights=weight.to(rows.dtype))
            winner = None
            if mode == "max":
                values, winner = values.view(-1, bins, points, channels).max(dim=2)
            if isinstance(ids, slice):
                output = values.view(rois.shape[0], bins, channels)
            else:
                output[ids] = values.view(len(ids), bins, channels)
            saved.append((ids, index, weight, points, winner))
        ctx.saved = saved  # type: ignore[attr-defined]
        ctx.shape, ctx.mode = features.shape, mode  # type: ignore[attr-defined]
        return output.view(rois.shape[0], *output_size, channels).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def backward(ctx: FunctionCtx, grad_output: Tensor):  # type: ignore[override]
        batch, channels, height, width = ctx.shape  # type: ignore[attr-defined]
        bins = grad_output.shape[2] * grad_output.shape[3]
        grad_bins = grad_output.permute(0, 2, 3, 1).reshape(grad_output.shape[0], bins, channels)
        indices, weights, bag_ids, sources, offset = [], [], [], [], 0
        for ids, index, weight, points, winner in ctx.saved:  # type: ignore[attr-defined]
            grad = grad_bins if isinstance(ids, slice) else grad_bins[ids]  # [K_g, bins, C]
            if ctx.mode == "max":  # type: ignore[attr-defined]
                # Only the winning point of each (bin, channel) receives the bin's gradient.
                spread = grad.new_zeros(*grad.shape[:2], points, channels)
                spread.scatter_(2, winner.unsqueeze(2), grad.unsqueeze(2))
                grad = spread
            grad = grad.reshape(-1, channels)
            taps = index.shape[1]
            bag_ids.append((offset, grad.shape[0], taps))
            indices.append(index.reshape(-1))
            weights.append(weight.reshape(-1))
            sources.append(grad)
            offset += grad.shape[0]
        num_rows = batch * height * width
        if not sources:
            return grad_output.new_zeros(ctx.shape), None, None, None, None, None, None  # type: ignore[attr-defined]
        if len(sources) == 1:  # every bag has the same number of taps: bag = tap position // taps
            grad_rows = _transposed_gather(indices[0], weights[0], taps, sources[0], num_rows)
        else:
            grad_rows = _transposed_gather(
                torch.cat(indices),
                torch.cat(weights),
                _bag_of_tap(bag_ids, grad_output.device),
                torch.cat(sources),
                num_rows,
            )
        grad_features = grad_rows.view(batch, height, width, channels).permute(0, 3, 1, 2)
        return grad_features, None, None, None, None, None, None


def roi_align(
    input: Tensor,
    rois: RoIs,
    output_size: int | Sequence[int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    mode: str = "avg",
) -> Tensor:
    """Pool each RoI to a fixed ``output_size`` by bilinear sampling (see the module docstring).

    Args:
        input: ``Tensor[N, C, H, W]`` features (half/bfloat16 are computed in float32).
        rois: ``Tensor[K, 5]`` ``(batch_index, x1, y1, x2, y2)`` or a list of per-image ``Tensor[K_i, 4]``,
            xyxy in input-image pixels.
        output_size: ``(PH, PW)`` or one int.
        spatial_scale: feature cells per input pixel, e.g. 1/16 for stride 16.
        sampling_ratio: points per bin side; ``<= 0`` means ``ceil(roi_size / output_size)`` per RoI.
        aligned: shift by −0.5 cell (pixel-centre alignment) and allow RoIs smaller than one cell.
        mode: ``"avg"`` (mean of the points) or ``"max"`` (largest point).

    Returns:
        ``Tensor[K, C, PH, PW]`` in ``input.dtype``; differentiable with respect to ``input``.

    Example:
        >>> features = torch.arange(16.0).view(1, 1, 4, 4)
        >>> roi_align(features, torch.tensor([[0.0, 0.0, 0.0, 2.0, 2.0]]), 1, sampling_ratio=2)
        tensor([[[[5.]]]])
    """
    check_features(input)
    size = pair_size(output_size)
    if mode not in ("avg", "max"):
        raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
    if not (isinstance(spatial_scale, (int, float)) and spatial_scale > 0 and math.isfinite(spatial_scale)):
        raise ValueError(f"spatial_scale must be a positive finite number, got {spatial_scale!r}")
    dtype = compute_dtype(input)
    boxes = convert_rois(rois, input, dtype)
    output = _RoIAlignFunction.apply(
        input.to(dtype), boxes, float(spatial_scale), size, int(sampling_ratio), bool(aligned), mode
    )
    return output.to(input.dtype)


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align` (stores the settings; has no parameters)."""

    def __init__(
        self,
        output_size: int | Sequence[int],
        spatial_scale: float = 1.0,
        sampling_ratio: int = -1,
        aligned: bool = False,
        mode: str = "avg",
    ) -> None:
        super().__init__()
        self.output_size, self.spatial_scale, self.sampling_ratio = (
            pair_size(output_size),
            spatial_scale,
            sampling_ratio,
        )
        self.aligned, self.mode = aligned, mode

    def forward(self, input: Tensor, rois: RoIs) -> Tensor:
        return roi_align(
            input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned, self.mode
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, mode={self.mode!r}"
        )
