"""RoI Pooling (Girshick, "Fast R-CNN", ICCV 2015; handbook §24) with Caffe's two quantizations.

1. The RoI is mapped to the feature map and its corners are rounded to whole cells
   (``round(x1 · spatial_scale)``, halves away from zero as C's ``round``); its size is
   ``max(x2' − x1' + 1, 1)`` cells (corners inclusive).
2. Bin ``p`` of ``P`` spans cells ``[floor(p · size / P), ceil((p + 1) · size / P))`` from the RoI start,
   clipped to the map, so neighbouring bins may share a row or column; a bin left empty by clipping
   outputs 0.

Each bin outputs the maximum of its cells, and the backward routes the gradient to that arg-max cell
(the first one in row-major order on ties, as torchvision). This equals ``torchvision.ops.roi_pool``
exactly, except that NaN features are read as −inf (torchvision skips them too; a bin of only NaN gives
−inf here and −3.4e38 there).

Implementation: a bin is a rectangle of cells, and the maximum over a rectangle is answered by a
*sparse table* (range-maximum query): tables of maxima over ``2^jy × 2^jx`` blocks (with the arg-max
cell, ties to the lower flat index) are built once per call, and every bin is covered by a few possibly
overlapping blocks (2 × 2 for bins up to 15 cells a side), so the cost per bin does not grow with its
area and no Python loop runs over RoIs or bins. Bins are sorted by how many blocks (rows × columns)
cover them and gathered one such group at a time, so a bin whose sides are powers of two reads one block.
Which block sizes get a table is chosen per call (:func:`_choose_levels`): the fewest table cells plus
lookups, so few or small RoIs build few tables. With a gradient the tables hold packed int64 keys (value,
then first cell) and the results go back to bin order before unpacking, so the targets come out in the
order torchvision accumulates them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

from visionkit.ops.roi import RoIs, channels_last_rows, check_features, compute_dtype, convert_rois, pair_size

__all__ = ["RoIPool", "roi_pool"]

_MAX_LEVEL = 3  # blocks up to 8 cells a side; longer bins use more (overlapping) blocks
_TABLE_COST = 3  # building one table costs about this many block lookups per map cell (measured)
_OP_COST = 1000  # and one more gather (a tensor op) about this many lookups
_CHUNK_ELEMENTS = 1 << 24  # bound the gathered [lookups, C] working set


def round_half_away(values: Tensor) -> Tensor:
    """Round to the nearest integer with halves away from zero (C ``round``), as int64."""
    truncated = values.trunc()
    is_half = (values - truncated).abs() == 0.5
    return torch.where(is_half, truncated + values.sign(), values.round()).long()


def _combine(first: tuple[Tensor, ...], second: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Maximum of two candidates, ``(key,)`` or ``(value, flat index)``; ties keep the lower index."""
    if len(first) == 1:  # packed keys: value order in the high bits, reversed index in the low bits
        return (torch.maximum(first[0], second[0]),)
    (value1, index1), (value2, index2) = first, second
    take_second = (value2 > value1) | ((value2 == value1) & (index2 < index1))
    return torch.where(take_second, value2, value1), torch.where(take_second, index2, index1)


_INDEX_MASK = (1 << 32) - 1
_INDEX_TOP = (1 << 31) - 1
_PACK_LIMIT = _INDEX_TOP  # element indices up to this fit a packed key; larger maps use an index table


def _pack(value: Tensor, cell: Tensor, out: Tensor) -> Tensor:
    """float32 value and element index → int64 key whose order is (value, then lower index first).

    The float's bits are made order-preserving as int32 (negative floats flip their 31 low bits);
    −0 is read as +0 so that it ties with 0 as in a float comparison.
    """
    bits = (value + 0.0).view(torch.int32)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    out.copy_(ordered).bitwise_left_shift_(32)
    return out.bitwise_or_(_INDEX_TOP - cell)


def _unpack_(key: Tensor) -> tuple[Tensor, Tensor]:
    """Packed keys → float32 values and int64 element indices; the indices reuse the keys' storage."""
    high = key.view(torch.int32)[..., 1::2] if sys.byteorder == "little" else (key >> 32).int()
    value = torch.where(high < 0, high ^ 0x7FFFFFFF, high).view(torch.float32)
    return value, key.bitwise_and_(_INDEX_MASK).neg_().add_(_INDEX_TOP)


def _sparse_tables(
    rows: Tensor, shape: tuple[int, int, int, int], levels: tuple[int, int], with_index: bool
) -> tuple[Tensor, ...]:
    """Block maxima of every level pair stacked as rows ``[Ly * Lx * N * H * W, C]``.

    Without ``with_index`` (inference) one value table; with it, float32 features give one table of packed
    int64 keys (:func:`_pack`) and float64 features (or maps too large to pack) a value table and an
    index table. Indices are element indices (:func:`_pack`).
    """
    batch, channels, height, width = shape
    value = rows.view(batch, height, width, channels)
    value = torch.where(value.isnan(), torch.full_like(value, -math.inf), value)
    # Element (n, y, x, c) has index ((n * H + y) * W + x) * C + c: within a channel, the row-major order.
    element = torch.arange(batch * height * width * channels, device=rows.device).view(value.shape)
    count_y, count_x = levels[0] + 1, levels[1] + 1
    # Table (jy, jx) is entry jy * Lx + jx, so row ((jy * Lx + jx) * N + n) * H * W + y * W + x is the
    # 2^jy x 2^jx block at (n, y, x).
    shape5 = (count_y * count_x, batch, height, width, channels)
    if not with_index:
        tables: tuple[Tensor, ...] = (value.new_empty(shape5),)
        tables[0][0].copy_(value)
    elif value.dtype == torch.float32 and element.numel() + channels <= _PACK_LIMIT:
        tables = (torch.empty(shape5, dtype=torch.long, device=value.device),)
        _pack(value, element, out=tables[0][0])
    else:
        tables = (value.new_empty(shape5), element.new_empty(shape5))
        tables[0][0].copy_(value)
        tables[1][0].copy_(element)
    for jy in range(count_y):
        for jx in range(count_x):
            if jy == 0 and jx == 0:
                continue
            source, dim, half = (
                ((jy, jx - 1), 2, 1 << (jx - 1)) if jy == 0 else ((jy - 1, jx), 1, 1 << (jy - 1))
            )
            _double(
                tuple(t[source[0] * count_x + source[1]] for t in tables),
                tuple(t[jy * count_x + jx] for t in tables),
                dim,
                half,
            )
    return tuple(table.view(-1, channels) for table in tables)


def _double(source: tuple[Tensor, ...], target: tuple[Tensor, ...], dim: int, half: int) -> None:
    """Blocks of ``2·half`` cells along ``dim`` from blocks of ``half``; the unqueried tail is copied."""
    length = source[0].shape[dim]
    if half >= length:
        for out, part in zip(target, source, strict=True):
            out.copy_(part)
        return
    head = tuple(part.narrow(dim, 0, length - half) for part in source)
    tail = tuple(part.narrow(dim, half, length - half) for part in source)
    if len(source) == 1:  # one table (values or packed keys): write the maximum in place
        torch.maximum(head[0], tail[0], out=target[0].narrow(dim, 0, length - half))
    else:
        for out, merged in zip(target, _combine(head, tail), strict=True):
            out.narrow(dim, 0, length - half).copy_(merged)
    for out, part in zip(target, source, strict=True):
        out.narrow(dim, length - half, half).copy_(part.narrow(dim, length - half, half))


def _bins(rois: Tensor, spatial_scale: float, bins: int, axis: int, limit: int) -> tuple[Tensor, Tensor]:
    """Start and end cells ``[K, bins]`` of every bin along one axis (x: axis 0, y: axis 1), clipped."""
    start = round_half_away(rois[:, 1 + axis] * spatial_scale)
    end = round_half_away(rois[:, 3 + axis] * spatial_scale)
    size = (end - start + 1).clamp(min=1).to(rois.dtype)
    bin_size = size / bins
    position = torch.arange(bins, device=rois.device, dtype=rois.dtype)
    low = torch.floor(position[None, :] * bin_size[:, None]).long() + start[:, None]
    high = torch.ceil((position[None, :] + 1) * bin_size[:, None]).long() + start[:, None]
    return low.clamp(0, limit), high.clamp(0, limit)


def _cover(low: Tensor, high: Tensor, max_level: int, limit: int) -> tuple[Tensor, Tensor]:
    """Cover each window ``[low, high)`` by blocks of ``2^level`` cells: starts ``[K, P, n]`` and levels."""
    length = (high - low).clamp(min=1)
    level = torch.floor(torch.log2(length.double())).long().clamp(max=max_level)
    block = 1 << level
    count = int(((length + block - 1) // block).max()) if length.numel() else 1
    step = torch.arange(count, device=low.device)
    starts = torch.minimum(low[..., None] + step * block[..., None], (low + length - block)[..., None])
    return starts.clamp(0, max(limit - 1, 0)), level  # (empty bins are clamped into the map; masked later)


def _choose_levels(
    y_bins: tuple[Tensor, Tensor], x_bins: tuple[Tensor, Tensor], cells: int
) -> tuple[int, int]:
    """Largest block levels ``(ly, lx)`` to tabulate: the fewest table cells plus block lookups.

    Each extra table costs about ``_TABLE_COST`` lookups per map cell; each bin needs
    ``ceil(h / 2^ly) · ceil(w / 2^lx)`` lookups, summed over bins as (per-RoI row counts) · (column counts);
    each group of bins with the same block counts costs one gather op per block (``_OP_COST`` lookups).
    """
    per_axis, ops = [], []
    for low, high in (y_bins, x_bins):
        longest = max(int((high - low).max()) if low.numel() else 1, 1)
        top = min(longest.bit_length() - 1, _MAX_LEVEL)
        levels = torch.arange(top + 1, device=low.device)
        per_axis.append(_count(low[..., None], high[..., None], levels).sum(1).double())  # [K, levels]
        most = torch.tensor([-(-longest // (1 << level)) for level in range(top + 1)], dtype=torch.float64)
        ops.append(most * (most + 1) / 2)  # gathers if every block count up to the largest occurs
    lookups = per_axis[0].t().cpu() @ per_axis[1].cpu()  # [Ly, Lx]: total lookups with those top levels
    y_levels = torch.arange(lookups.shape[0], dtype=torch.float64)[:, None]
    x_levels = torch.arange(lookups.shape[1], dtype=torch.float64)[None, :]
    cost = lookups + ((y_levels + 1) * (x_levels + 1) - 1) * _TABLE_COST * cells
    cost += ops[0][:, None] * ops[1][None, :] * _OP_COST
    best = int(cost.argmin())
    return best // lookups.shape[1], best % lookups.shape[1]


def _count(low: Tensor, high: Tensor, level: Tensor) -> Tensor:
    """Blocks of ``2^level`` cells needed to cover each window ``[low, high)`` (0 for an empty one)."""
    return ((high - low).clamp(min=0) + (1 << level) - 1) >> level


class _RoIPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx, features: Tensor, rois: Tensor, spatial_scale: float, output_size: tuple[int, int]
    ) -> Tensor:
        batch, channels, height, width = features.shape
        y_low, y_high = _bins(rois, spatial_scale, output_size[0], 1, height)
        x_low, x_high = _bins(rois, spatial_scale, output_size[1], 0, width)
        levels = _choose_levels((y_low, y_high), (x_low, x_high), batch * height * width)
        with_index = ctx.needs_input_grad[0]  # type: ignore[attr-defined]
        tables = _sparse_tables(channels_last_rows(features), tuple(features.shape), levels, with_index)  # type: ignore[arg-type]
        y_start, y_level = _cover(y_low, y_high, levels[0], height)
        x_start, x_level = _cover(x_low, x_high, levels[1], width)
        # Lookup rows [K * PH * PW, ny * nx] into the stacked tables.
        level = (y_level[:, :, None] * (levels[1] + 1) + x_level[:, None, :])[..., None, None]
        cell = y_start[:, :, None, :, None] * width + x_start[:, None, :, None, :]
        image = rois[:, 0].long()[:, None, None, None, None]
        lookup = ((level * batch + image) * height * width + cell).flatten(3).flatten(0, 2)
        # Bins are grouped by how many blocks (ny, nx) cover them, so that none gathers more blocks than
        # it needs; kind 0 holds the empty bins.
        y_count, x_count = _count(y_low, y_high, y_level), _count(x_low, x_high, x_level)
        columns = x_start.shape[-1]
        kind = (y_count[:, :, None] * (columns + 1) + x_count[:, None, :]).flatten()
        kind = kind.masked_fill_(((y_count[:, :, None] == 0) | (x_count[:, None, :] == 0)).flatten(), 0)
        order = torch.argsort(kind, stable=True)
        spare = batch * height * width * channels
        # Results come in sorted order and go back to bin order; for the gradient that is the order of
        # torchvision's accumulation, so that cells shared by several bins sum their gradients alike.
        sorted_results = _gather_kinds(tables, lookup, kind, order, columns, spare)
        inverse = torch.empty_like(order).scatter_(0, order, torch.arange(len(order), device=order.device))
        output, *target = (part.index_select(0, inverse) for part in sorted_results)
        del sorted_results, tables  # (peak memory)
        if output.dtype == torch.long:  # packed keys
            output, *target = _unpack_(output)
        if with_index:
            # Flat channels-last targets (element indices); empty bins point into a spare row N * H * W.
            ctx.save_for_backward(target[0])
        ctx.shape = features.shape  # type: ignore[attr-defined]
        return output.view(rois.shape[0], *output_size, channels).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def backward(ctx: FunctionCtx, grad_output: Tensor):  # type: ignore[override]
        (target,) = ctx.saved_tensors  # type: ignore[attr-defined]
        batch, channels, height, width = ctx.shape  # type: ignore[attr-defined]
        grad = grad_output.permute(0, 2, 3, 1).reshape(-1)  # channels-last, like the saved targets
        grad_rows = grad.new_zeros((batch * height * width + 1) * channels)
        grad_rows.scatter_add_(0, target.view(-1), grad)
        grad_features = grad_rows[:-channels].view(batch, height, width, channels).permute(0, 3, 1, 2)
        return grad_features, None, None, None


def _gather_kinds(
    tables: tuple[Tensor, ...], lookup: Tensor, kind: Tensor, order: Tensor, columns: int, spare: int
) -> tuple[Tensor, ...]:
    """Per bin, in ``order``: max over its block lookups (ties → lowest index), as packed keys or as values
    (and indices); empty bins give 0 and index ``spare + c`` (a spare row)."""
    channels = tables[0].shape[1]
    counts = torch.bincount(kind, minlength=1).tolist()
    results = tuple(table.new_empty(len(order), channels) for table in tables)
    start = counts[0]
    for key, number in enumerate(counts[1:], start=1):
        if number == 0:
            continue
        rows, cols = divmod(key, columns + 1)
        slots = [row * columns + col for row in range(rows) for col in range(cols)]
        part = slice(start, start + number)
        _gather_max(tables, lookup[order[part]][:, slots], tuple(result[part] for result in results))
        start += number
    if counts[0]:
        index = torch.arange(spare, spare + channels, device=lookup.device)
        if tables[0].dtype == torch.long:  # packed key of (0.0, spare + c)
            results[0][: counts[0]] = _INDEX_TOP - index
        else:
            results[0][: counts[0]] = 0
        if len(results) == 2:
            results[1][: counts[0]] = index
    return results


def _gather_max(tables: tuple[Tensor, ...], lookup: Tensor, results: tuple[Tensor, ...]) -> None:
    """Into ``results`` ``[bins, C]``: max over each bin's block lookups ``[bins, L]``, ties to the lowest
    index, folding one lookup at a time."""
    slots = lookup.t()  # [lookups per bin, bins]
    for table, result in zip(tables, results, strict=True):
        torch.index_select(table, 0, slots[0], out=result)
    if len(tables) == 1:
        for rows in slots[1:]:
            torch.maximum(results[0], tables[0].index_select(0, rows), out=results[0])
        return
    for rows in slots[1:]:
        merged = _combine(results, tuple(table.index_select(0, rows) for table in tables))
        for result, part in zip(results, merged, strict=True):
            result.copy_(part)


def roi_pool(
    input: Tensor, rois: RoIs, output_size: int | Sequence[int], spatial_scale: float = 1.0
) -> Tensor:
    """Max-pool each RoI to ``output_size`` with Fast R-CNN's two quantizations (module docstring).

    Args:
        input: ``Tensor[N, C, H, W]`` features (half/bfloat16 are computed in float32).
        rois: ``Tensor[K, 5]`` ``(batch_index, x1, y1, x2, y2)`` or a list of per-image ``Tensor[K_i, 4]``,
            xyxy in input-image pixels.
        output_size: ``(PH, PW)`` or one int.
        spatial_scale: feature cells per input pixel, e.g. 1/32 for stride 32.

    Returns:
        ``Tensor[K, C, PH, PW]`` in ``input.dtype``; differentiable with respect to ``input``.

    Example:
        >>> features = torch.arange(16.0).view(1, 1, 4, 4)
        >>> roi_pool(features, torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]]), 2)
        tensor([[[[ 5.,  7.],
                  [13., 15.]]]])
    """
    check_features(input)
    size = pair_size(output_size)
    if not (isinstance(spatial_scale, (int, float)) and spatial_scale > 0 and math.isfinite(spatial_scale)):
        raise ValueError(f"spatial_scale must be a positive finite number, got {spatial_scale!r}")
    dtype = compute_dtype(input)
    boxes = convert_rois(rois, input, dtype)
    return _RoIPoolFunction.apply(input.to(dtype), boxes, float(spatial_scale), size).to(input.dtype)


class RoIPool(nn.Module):
    """Module form of :func:`roi_pool` (stores the settings; has no parameters)."""

    def __init__(self, output_size: int | Sequence[int], spatial_scale: float = 1.0) -> None:
        super().__init__()
        self.output_size, self.spatial_scale = pair_size(output_size), spatial_scale

    def forward(self, input: Tensor, rois: RoIs) -> Tensor:
        return roi_pool(input, rois, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
