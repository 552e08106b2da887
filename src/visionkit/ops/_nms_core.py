"""Exact greedy NMS engines on score-ranked boxes, shared by :mod:`visionkit.ops.nms`.

The engines take boxes already sorted by decreasing score (row ``r`` is the box of rank ``r``) in the
working dtype (float32 or float64) and return a boolean keep mask over ranks. Box ``i`` suppresses a
later box ``j`` iff ``IoU > iou_threshold`` with the IoU computed by :func:`gathered_iou` (or its
broadcast twin :func:`block_iou`), so every engine sees bit-identical IoU values and gives identical
results.

* :func:`spatial_greedy` (kept-first): alive boxes are taken in rank order a block at a time; the block
  is resolved densely and its kept boxes suppress later boxes found through a static spatial hash
  (one grid, boxes sorted by (row, x-centre), queried with :func:`torch.searchsorted`). Suppressed boxes
  never query, so the work is about kept boxes × their neighbours. No N×N matrix.
* :func:`dense_greedy`: block-sequential greedy with bounded memory and no index, for small inputs and
  coordinates too spread for the float64 grid keys.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Largest number of candidate pairs evaluated at once (bounds temporary memory to ~0.5 GB).
CANDIDATE_CHUNK = 1 << 22
#: Above this many overlapping pairs an edge list is abandoned (soft-NMS then runs step by step).
EDGE_BUDGET = 1 << 24
#: Block size of the block-sequential engine.
DENSE_BLOCK = 256
#: Block size of the kept-first spatial engine.
SPATIAL_BLOCK = 256
#: Parallel rounds of :func:`resolve_greedy` before it finishes with a sequential sweep.
_MAX_ROUNDS = 16
#: Relative slack on the geometric candidate bounds (covers rounding of the IoU in float32).
_SLACK = 1e-2


def box_columns(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Contiguous ``x1, y1, x2, y2, area`` columns (gathers and arithmetic are fastest on 1-D tensors)."""
    x1, y1, x2, y2 = (boxes[:, k].contiguous() for k in range(4))
    return x1, y1, x2, y2, (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)


def gathered_iou(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """IoU of matching rows given gathered ``x1, y1, x2, y2, area`` columns (consumes their buffers).

    The one IoU formula of every NMS engine: ``inter / (area_a + area_b - inter)``; a zero union gives
    NaN, and ``NaN > t`` is False, so zero-area boxes never suppress nor get suppressed.
    """
    width = torch.minimum(a[2], b[2]).sub_(torch.maximum(a[0], b[0])).clamp_(min=0)
    height = torch.minimum(a[3], b[3]).sub_(torch.maximum(a[1], b[1])).clamp_(min=0)
    inter = width.mul_(height)
    union = (a[4] + b[4]).sub_(inter)
    return inter.div_(union)


def block_iou(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """Broadcast twin of :func:`gathered_iou`: columns of P and Q boxes → ``Tensor[P, Q]``."""
    return gathered_iou([column[:, None] for column in a], [column[None, :] for column in b])


def _resolve_block(suppress: Tensor) -> Tensor:
    """Exact greedy keep mask for one block given ``suppress[i, j]`` (only ``i < j`` set)."""
    first, second = suppress.nonzero().unbind(1)
    return resolve_greedy(suppress.shape[0], first, second)


def resolve_greedy(num_boxes: int, source: Tensor, target: Tensor) -> Tensor:
    """Exact greedy keep mask over ranks from edges ``source < target`` ("source suppresses target if kept").

    Each round keeps every undecided box that has no undecided suppressor left, suppresses the targets of
    kept boxes and drops edges that can no longer matter. The lowest undecided rank is decided in every
    round, so this ends; after a few rounds (long dependency chains) a plain sweep finishes what is left.
    """
    undecided, kept, suppressed = 0, 1, 2
    state = torch.zeros(num_boxes, dtype=torch.int8, device=source.device)
    for _ in range(_MAX_ROUNDS):
        if source.numel() == 0:
            break
        has_live_parent = torch.zeros(num_boxes, dtype=torch.bool, device=source.device)
        has_live_parent.index_fill_(0, target, True)
        state.masked_fill_((state == undecided) & ~has_live_parent, kept)
        from_kept = (state.index_select(0, source) == kept).nonzero().squeeze(1)
        state.index_fill_(0, target.index_select(0, from_kept), suppressed)
        live = (state.index_select(0, source) == undecided) & (state.index_select(0, target) == undecided)
        live = live.nonzero().squeeze(1)
        source, target = source.index_select(0, live), target.index_select(0, live)
    if source.numel():
        _sequential_sweep(state, source, target)
    state.masked_fill_(state == undecided, kept)
    return state == kept


def _sequential_sweep(state: Tensor, source: Tensor, target: Tensor) -> None:
    """Plain greedy over the remaining undecided subgraph (every remaining edge joins two undecided boxes)."""
    children: dict[int, list[int]] = {}
    for first, second in zip(source.tolist(), target.tolist(), strict=True):
        children.setdefault(first, []).append(second)
    status: dict[int, int] = {}
    for node in sorted(set(children) | set(target.tolist())):
        if node not in status:
            status[node] = 1
            for child in children.get(node, ()):
                status[child] = 2
    nodes = torch.tensor(list(status), dtype=torch.int64, device=state.device)
    values = torch.tensor(list(status.values()), dtype=torch.int8, device=state.device)
    state.index_copy_(0, nodes, values)


def _same_label(labels: Tensor | None, first: Tensor, second: Tensor) -> Tensor | bool:
    if labels is None:
        return True
    return labels.index_select(0, first)[:, None] == labels.index_select(0, second)[None, :]


def dense_greedy(boxes: Tensor, threshold: float, labels: Tensor | None = None) -> Tensor:
    """Block-sequential exact greedy NMS on ranked ``boxes``; memory O(block × N), no spatial index."""
    columns = box_columns(boxes)
    keep = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    alive = torch.arange(boxes.shape[0], device=boxes.device)
    while alive.numel():
        block, rest = alive[:DENSE_BLOCK], alive[DENSE_BLOCK:]
        block_columns = [column.index_select(0, block) for column in columns]
        suppress = (block_iou(block_columns, block_columns) > threshold) & _same_label(labels, block, block)
        kept = block[_resolve_block(suppress.triu_(diagonal=1))]
        keep[kept] = True
        if rest.numel() == 0:
            break
        kept_columns = [column.index_select(0, kept) for column in columns]
        step = max(1, CANDIDATE_CHUNK // max(1, kept.numel()))
        removed = []
        for start in range(0, rest.numel(), step):
            part = rest[start : start + step]
            part_columns = [column.index_select(0, part) for column in columns]
            hit = (block_iou(kept_columns, part_columns) > threshold) & _same_label(labels, kept, part)
            removed.append(hit.any(dim=0))
        alive = rest[~torch.cat(removed)]
    return keep


# ------------------------------------------------------------------------------------------------ sparse
def _expand_ranges(first: int, start: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
    """All ``(segment, position)`` with ``start[s] <= position < start[s] + counts[s]`` (segments numbered
    from ``first``), as two ``Tensor[sum(counts)]``."""
    segments = torch.arange(first, first + counts.numel(), device=counts.device)
    segment = torch.repeat_interleave(segments, counts)
    position = torch.repeat_interleave(start - (counts.cumsum(0) - counts), counts)
    position += torch.arange(position.numel(), device=position.device)
    return segment, position


class _LevelIndex:
    """Boxes sorted by (grid row, x-centre) on a grid whose cells are one level's cell size.

    Rows are exact integers (the class offset of batched NMS is added to them), replaced by their dense
    rank so the float64 sort key ``dense_row * row_span + x / cell`` stays far from float64 rounding.
    The box columns are stored in that sorted order.
    """

    def __init__(
        self, ids: Tensor, rows: Tensor, x_cells: Tensor, row_span: float, columns: tuple[Tensor, ...]
    ) -> None:
        self.row_span = row_span
        self.unique_rows, dense = torch.unique(rows.index_select(0, ids), return_inverse=True)
        keys = dense.to(torch.float64) * row_span + x_cells.index_select(0, ids)
        self.keys, order = torch.sort(keys)
        self.ids = ids.index_select(0, order)
        self.rows = rows.index_select(0, self.ids)
        self.x_cells = x_cells.index_select(0, self.ids)
        self.columns = [column.index_select(0, self.ids) for column in columns]

    def window(
        self, query: _LevelIndex | _Query, row_shift: int, half_width: Tensor | float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Per query: index range of entries in row ``row(q) + row_shift`` with ``|x - x_q| <= half_width``
        (in cells; one cell unless a per-query bound is given)."""
        wanted = query.rows + row_shift
        dense = torch.searchsorted(self.unique_rows, wanted).clamp_(max=self.unique_rows.numel() - 1)
        base = dense.to(torch.float64) * self.row_span + query.x_cells
        start = torch.searchsorted(self.keys, base - half_width)
        end = torch.searchsorted(self.keys, base + half_width, right=True)
        end = torch.where(self.unique_rows.index_select(0, dense) == wanted, end, start)  # row is empty
        return start, end


def _candidate_geometry(boxes: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """float64 centres relative to the lowest centre, reach per box, and the ids of positive-area boxes."""
    geometry = boxes.to(torch.float64)
    sizes = (geometry[:, 2:] - geometry[:, :2]).clamp(min=0)
    positive = ((sizes[:, 0] > 0) & (sizes[:, 1] > 0)).nonzero().flatten()
    centres = (geometry[:, :2] + geometry[:, 2:]) / 2
    if positive.numel():
        centres -= centres.index_select(0, positive).amin(dim=0)
    # A pair with IoU > t has |dcx| < (1 - t) * max(w) and |dcy| < (1 - t) * max(h) (IoU <= overlap
    # width / larger width), so its centres are within the larger of the two reaches (plus slack).
    reach = (1 - threshold + _SLACK) * sizes.amax(dim=1) * (1 + _SLACK)
    return centres, reach, positive


# ------------------------------------------------------------------------------------------ kept-first
class _Grid:
    """Static spatial hash of the positive-area boxes for :func:`spatial_greedy`.

    One grid with cell = the 95th percentile reach: "small" boxes (reach <= cell) are indexed by
    (row, x-centre); "big" boxes are few and compared densely.
    """

    def __init__(self, boxes: Tensor, threshold: float, labels: Tensor | None) -> None:
        centres, reach, positive = _candidate_geometry(boxes, threshold)
        self.positive = positive
        self.columns = box_columns(boxes)
        self.labels = labels
        self.valid = positive.numel() > 0
        if not self.valid:
            return
        reach_pos = reach.index_select(0, positive)
        rank_95 = max(1, math.ceil(0.95 * reach_pos.numel()))
        cell = float(torch.kthvalue(reach_pos, rank_95).values) * (1 + _SLACK)
        cell = max(cell, float(reach_pos.amax()) / 2**20)
        extent = centres.index_select(0, positive).amax(dim=0)
        if float(extent.amax()) / cell > 2**40 or positive.numel() * (float(extent[0]) / cell + 4) > 2**42:
            self.valid = False  # float64 grid keys would lose precision: use the dense engine
            return
        self.rows = torch.floor(centres[:, 1] / cell).to(torch.int64)
        if labels is not None:  # the coordinate-offset trick, on exact integer grid rows
            self.rows += torch.unique(labels, return_inverse=True)[1] * (int(extent[1] / cell) + 3)
        self.x_cells = centres[:, 0] / cell
        self.is_big = reach > cell
        small = positive[~self.is_big.index_select(0, positive)]
        self.big = positive[self.is_big.index_select(0, positive)]
        self.index = _LevelIndex(small, self.rows, self.x_cells, float(extent[0]) / cell + 4, self.columns)

    def gather(self, ids: Tensor) -> list[Tensor]:
        return [column.index_select(0, ids) for column in self.columns]

    def dense_hits(self, sources: Tensor, targets: Tensor, threshold: float) -> Tensor:
        """Targets (``Tensor[T]`` ids) with IoU > threshold against any of ``sources``, same label."""
        if sources.numel() == 0 or targets.numel() == 0:
            return targets[:0]
        hits = []
        step = max(1, CANDIDATE_CHUNK // sources.numel())
        a = self.gather(sources)
        for first in range(0, targets.numel(), step):
            part = targets[first : first + step]
            b = self.gather(part)
            hit = (block_iou(a, b) > threshold) & _same_label(self.labels, sources, part)
            hits.append(part[hit.any(dim=0)])
        return torch.cat(hits)

    def window_hits(self, sources: Tensor, after: int, suppressed: Tensor, threshold: float) -> Tensor:
        """Not-yet-suppressed small boxes of rank > ``after`` with IoU > threshold against ``sources``."""
        query = _Query(self, sources)
        starts, ends = zip(*(self.index.window(query, shift) for shift in (-1, 0, 1)), strict=True)
        start, end = torch.cat(starts), torch.cat(ends)
        counts = (end - start).clamp_(min=0)
        segment, position = _expand_ranges(0, start, counts)
        candidate = self.index.ids.index_select(0, position)
        useful = ((candidate > after) & ~suppressed.index_select(0, candidate)).nonzero().squeeze(1)
        source = sources.repeat(3).index_select(0, segment.index_select(0, useful))
        candidate = candidate.index_select(0, useful)
        hit = gathered_iou(self.gather(source), self.gather(candidate)) > threshold
        return candidate[hit]


class _Query:
    """Row and x-cell of some boxes, in the shape :meth:`_LevelIndex.window` expects."""

    def __init__(self, grid: _Grid, ids: Tensor) -> None:
        self.rows = grid.rows.index_select(0, ids)
        self.x_cells = grid.x_cells.index_select(0, ids)


def spatial_greedy(boxes: Tensor, threshold: float, labels: Tensor | None = None) -> Tensor | None:
    """Exact greedy NMS on ranked ``boxes``, kept-first: ``None`` if the grid cannot hold the coordinates.

    Alive boxes are taken in rank order, a block at a time. Inside a block the greedy order is resolved
    densely; the block's kept boxes then suppress later boxes found through the grid (or densely, for the
    few big boxes). Suppressed boxes never become queries, so the work is about (kept boxes) × (boxes
    near each), not all overlapping pairs.
    """
    grid = _Grid(boxes, threshold, labels)
    num_boxes = boxes.shape[0]
    keep = torch.ones(num_boxes, dtype=torch.bool, device=boxes.device)
    if not grid.valid:
        return None if grid.positive.numel() else keep
    keep[grid.positive] = False
    suppressed = torch.zeros(num_boxes, dtype=torch.bool, device=boxes.device)
    alive = grid.positive
    while alive.numel():
        block, rest = alive[:SPATIAL_BLOCK], alive[SPATIAL_BLOCK:]
        columns = grid.gather(block)
        suppress = (block_iou(columns, columns) > threshold) & _same_label(labels, block, block)
        kept = block[_resolve_block(suppress.triu_(diagonal=1))]
        keep.index_fill_(0, kept, True)
        if rest.numel() == 0:
            break
        after = int(block[-1])
        big = grid.is_big.index_select(0, kept)
        kept_small, kept_big = kept[~big], kept[big]
        if kept_small.numel():
            suppressed.index_fill_(0, grid.window_hits(kept_small, after, suppressed, threshold), True)
            later_big = grid.big[(grid.big > after) & ~suppressed.index_select(0, grid.big)]
            suppressed.index_fill_(0, grid.dense_hits(kept_small, later_big, threshold), True)
        if kept_big.numel():
            later = rest[~suppressed.index_select(0, rest)]
            suppressed.index_fill_(0, grid.dense_hits(kept_big, later, threshold), True)
        alive = rest[~suppressed.index_select(0, rest)]
    return keep
