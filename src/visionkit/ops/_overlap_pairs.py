"""Sparse enumeration of overlapping box pairs (IoU above a threshold) without an N×N matrix.

Used by soft-NMS, whose decays need every interacting pair with its IoU. A pair with ``IoU > t`` has
``|dcx| < (1 - t) * max(w)`` and ``|dcy| < (1 - t) * max(h)`` (IoU <= overlap width / larger width), so
its centres lie within the larger box's *reach*; and its sizes differ by less than a factor ``1 / t``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from visionkit.ops._nms_core import (
    _SLACK,
    CANDIDATE_CHUNK,
    EDGE_BUDGET,
    _candidate_geometry,
    _expand_ranges,
    _LevelIndex,
    block_iou,
    box_columns,
    gathered_iou,
    resolve_greedy,
)

__all__ = ["overlap_pairs"]

#: Size levels per factor of two above the median reach.
_LEVELS_PER_OCTAVE = 1


def overlap_pairs(
    boxes: Tensor, threshold: float, labels: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor] | None:
    """All pairs ``first < second`` with ``IoU > threshold`` (and equal labels), with their IoU.

    Returns ``(first, second, iou)`` as ``Tensor[E]`` each, or ``None`` when there are more than
    :data:`EDGE_BUDGET` such pairs or the coordinates are too spread for the float64 grid keys.
    Boxes are binned by size (the smaller half, then one level per octave); each level is sorted by
    (row, x-centre) and queried for its own boxes and the smaller boxes that can still reach the threshold.
    """
    centres, reach, positive = _candidate_geometry(boxes, threshold)
    empty = torch.zeros(0, dtype=torch.int64, device=boxes.device)
    if positive.numel() < 2:
        return empty, empty, boxes.new_zeros(0)
    reach_pos = reach.index_select(0, positive)
    # Level 0 holds the smaller half (cell = median reach); larger boxes get one level per octave.
    median = float(torch.kthvalue(reach_pos, (reach_pos.numel() + 1) // 2).values)
    base = max(median * (1 + _SLACK), float(reach_pos.amax()) / 2**20)
    level_pos = torch.ceil(torch.log2(reach_pos / base) * _LEVELS_PER_OCTAVE).clamp_(min=0).to(torch.int64)
    extent = centres.index_select(0, positive).amax(dim=0)
    if float(extent.amax()) / base > 2**40 or positive.numel() * (float(extent[0]) / base + 4) > 2**42:
        return None
    class_rank = None if labels is None else torch.unique(labels, return_inverse=True)[1]
    columns = box_columns(boxes)
    area_pos = columns[4].index_select(0, positive).to(torch.float64)
    found: list[tuple[Tensor, Tensor, Tensor]] = []
    num_edges = 0
    for lvl in torch.unique(level_pos).tolist():
        cell = base * 2.0 ** (lvl / _LEVELS_PER_OCTAVE)
        rows = torch.floor(centres[:, 1] / cell).to(torch.int64)
        if class_rank is not None:  # the coordinate-offset trick, on exact integer grid rows
            rows += class_rank * (int(extent[1] / cell) + 3)
        x_cells, row_span = centres[:, 0] / cell, float(extent[0]) / cell + 4
        at_level = level_pos == lvl
        # IoU > t needs max(w, h) and area ratios > t (IoU <= smaller / larger), which bounds the smaller
        # partners of this level's boxes; their reach is below the query's, so the query's reach bounds
        # the centre distance.
        bound = threshold * (1 - _SLACK)
        smallest, smallest_area = float(reach_pos[at_level].amin()), float(area_pos[at_level].amin())
        lower = (level_pos < lvl) & (reach_pos > bound * smallest) & (area_pos > bound * smallest_area)
        same = _LevelIndex(positive[at_level], rows, x_cells, row_span, columns)
        searches: list[tuple[_LevelIndex, int, bool, Tensor | float]] = [
            (same, 0, True, 1.0),
            (same, 1, False, 1.0),
        ]
        if bool(lower.any()):
            low = _LevelIndex(positive[lower], rows, x_cells, row_span, columns)
            own_reach = reach.index_select(0, same.ids) / cell
            searches += [(low, shift, False, own_reach) for shift in (-1, 0, 1)]
        for index, shift, forward_only, half_width in searches:
            start, end = index.window(same, shift, half_width)
            if forward_only:  # same row of the same level: each unordered pair once
                start = torch.maximum(start, torch.arange(1, start.numel() + 1, device=start.device))
            for edges in _edges_in_windows(same, index, start, end, threshold):
                found.append(edges)
                num_edges += edges[0].numel()
                if num_edges > EDGE_BUDGET:
                    return None
    if not found:
        return empty, empty, boxes.new_zeros(0)
    first, second, iou = (torch.cat(parts) for parts in zip(*found, strict=True))
    return first, second, iou


def _edges_in_windows(
    query: _LevelIndex, index: _LevelIndex, start: Tensor, end: Tensor, threshold: float
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Yield ``(first, second, iou)`` (first < second) with IoU > threshold, in memory-bounded chunks."""
    counts = (end - start).clamp_(min=0)
    totals = counts.cumsum(0)
    if counts.numel() == 0 or int(totals[-1]) == 0:
        return
    first = 0
    while first < counts.numel():
        done = int(totals[first - 1]) if first else 0
        last = max(int(torch.searchsorted(totals, done + CANDIDATE_CHUNK, right=True)), first + 1)
        segment, position = _expand_ranges(first, start[first:last], counts[first:last])
        a = [column.index_select(0, segment) for column in query.columns]
        b = [column.index_select(0, position) for column in index.columns]
        iou = gathered_iou(a, b)
        hit = (iou > threshold).nonzero().squeeze(1)
        query_rank = query.ids.index_select(0, segment.index_select(0, hit))
        entry_rank = index.ids.index_select(0, position.index_select(0, hit))
        yield torch.minimum(query_rank, entry_rank), torch.maximum(query_rank, entry_rank), iou[hit]
        first = last


def sparse_greedy(boxes: Tensor, threshold: float, labels: Tensor | None = None) -> Tensor | None:
    """Exact greedy NMS on ranked ``boxes`` from the overlap graph; ``None`` when :func:`overlap_pairs` is.

    Cheap when suppressing pairs are few relative to the kept boxes (e.g. class-aware NMS over many
    classes, where the kept-first engine would visit almost every box).
    """
    pairs = overlap_pairs(boxes, threshold, labels)
    if pairs is None:
        return None
    return resolve_greedy(boxes.shape[0], pairs[0], pairs[1])


def connected_components(num_nodes: int, first: Tensor, second: Tensor) -> Tensor:
    """Component of every node of the graph with edges ``first[e] — second[e]``: ``Tensor[num_nodes]``
    holding the smallest node id of the node's component.

    Hooking and pointer jumping (Shiloach–Vishkin style): every node points to a node of its component
    with a smaller or equal id (``label[v] <= v``); after full pointer jumping every label is a root.
    Each round hooks the larger root of every edge whose ends have different roots onto the smaller one
    (``scatter_reduce`` amin), jumps pointers to the roots again and forgets the edges inside one tree.
    Pointers only go down, so there are no cycles; when no edge joins two trees each tree is a whole
    component, and its root (the one node pointing to itself) is its smallest id.
    """
    label = torch.arange(num_nodes, device=first.device)
    while first.numel():
        first_root, second_root = label.index_select(0, first), label.index_select(0, second)
        joins = (first_root != second_root).nonzero().squeeze(1)
        if joins.numel() == 0:
            break
        first, second = first.index_select(0, joins), second.index_select(0, joins)
        first_root, second_root = first_root.index_select(0, joins), second_root.index_select(0, joins)
        label.scatter_reduce_(
            0, torch.maximum(first_root, second_root), torch.minimum(first_root, second_root), reduce="amin"
        )
        while True:
            jumped = label.index_select(0, label)
            if torch.equal(jumped, label):
                break
            label = jumped
    return label


#: Rows per tile of :func:`sweep_pairs` and most columns per tile (keeps temporaries ~2 MB, cache-sized).
SWEEP_ROWS, SWEEP_COLUMNS = 256, 1024
#: Above this many candidate pairs :func:`sweep_pairs` gives way to the grid of :func:`overlap_pairs`.
SWEEP_BUDGET = 1 << 23


def sweep_pairs(boxes: Tensor, threshold: float) -> tuple[Tensor, Tensor, Tensor] | None:
    """Same pairs as :func:`overlap_pairs` (``first < second``, ``IoU > threshold``, with IoU) by a sweep
    along x, for inputs whose boxes are narrow against the spread of their x positions.

    Boxes are sorted by ``x1``; a pair with ``IoU > t`` has its later box (in that order) starting before
    ``x2 - t * width`` of the earlier one, so every tile of :data:`SWEEP_ROWS` consecutive boxes only
    meets the boxes from its own start up to the first ``x1`` beyond that bound (the tile's maximum).
    Each tile × range is a dense broadcast IoU block (:func:`block_iou`, the arithmetic of every engine)
    in which only positions after the row's own count. ``None`` when the candidates exceed
    :data:`SWEEP_BUDGET` or the pairs exceed :data:`EDGE_BUDGET`.
    """
    num = boxes.shape[0]
    columns = box_columns(boxes)
    x1_sorted, order = torch.sort(columns[0], stable=True)
    ordered = [column.index_select(0, order) for column in columns]
    starts = torch.arange(0, num, SWEEP_ROWS, device=boxes.device)
    # IoU <= overlap width / own width, so IoU > t needs x1 of the partner < x2 - t * width (float64 and
    # a relative slack keep the bound above the rounded IoU's)
    x2, width = ordered[2].to(torch.float64), (ordered[2].to(torch.float64) - ordered[0]).clamp(min=0)
    reach_end = x2 - threshold * (1 - _SLACK) * width
    padded = torch.nn.functional.pad(reach_end, (0, (-num) % SWEEP_ROWS), value=-torch.inf)
    limit = padded.view(-1, SWEEP_ROWS).amax(dim=1)
    ends = torch.searchsorted(x1_sorted.to(torch.float64), limit)
    ends = torch.maximum(ends, (starts + SWEEP_ROWS).clamp(max=num))
    if int(((ends - starts) * SWEEP_ROWS).sum()) > SWEEP_BUDGET:
        return None
    found: list[tuple[Tensor, Tensor, Tensor]] = []
    num_edges = 0
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        rows = [column[start : start + SWEEP_ROWS] for column in ordered]
        row_position = torch.arange(start, start + rows[0].numel(), device=boxes.device)
        for first_column in range(start, end, SWEEP_COLUMNS):
            last_column = min(end, first_column + SWEEP_COLUMNS)
            iou = block_iou(rows, [column[first_column:last_column] for column in ordered])
            hit = iou > threshold
            if first_column < start + SWEEP_ROWS:  # the diagonal block: each unordered pair once
                column_position = torch.arange(first_column, last_column, device=boxes.device)
                hit &= column_position[None, :] > row_position[:, None]
            row, column = hit.nonzero().unbind(1)
            a = order.index_select(0, row + start)
            b = order.index_select(0, column + first_column)
            found.append((torch.minimum(a, b), torch.maximum(a, b), iou[row, column]))
            num_edges += row.numel()
            if num_edges > EDGE_BUDGET:
                return None
    if not found:
        empty = torch.zeros(0, dtype=torch.int64, device=boxes.device)
        return empty, empty, boxes.new_zeros(0)
    first, second, iou = (torch.cat(parts) for parts in zip(*found, strict=True))
    return first, second, iou
