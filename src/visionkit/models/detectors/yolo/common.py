"""What YOLOv2 and YOLOv3 share: the prediction layout, the grid priors, decoding, the one-anchor target
assignment and the ignore rule (Redmon & Farhadi, 2017 §2 "Direct location prediction"; 2018 §2.1).

Layout. A detection level of stride ``s`` and ``H × W`` cells with ``A`` anchors outputs
``Tensor[B, A·(5+K), H, W]``: per anchor ``(t_x, t_y, t_w, t_h, t_o, class scores…)``. It is flattened to
``Tensor[B, H·W·A, 5+K]`` row-major over cells, then anchor (prediction ``(y·W + x)·A + a``), and the levels
are concatenated in the order given (finest first for YOLOv3).

Boxes. ``b_x = (σ(t_x) + c_x)·s``, ``b_y = (σ(t_y) + c_y)·s``, ``b_w = p_w·e^{t_w}``, ``b_h = p_h·e^{t_h}``
with the cell ``(c_x, c_y)`` and the anchor ``(p_w, p_h)`` in pixels; boxes are ``xyxy`` pixels.

Assignment. Each ground truth goes to exactly one prediction: the anchor of best shape IoU (boxes
centred together, :func:`~visionkit.ops.anchors.wh_iou`) over *all* anchors of all levels (ties: the
lower anchor index), on that anchor's level, at the cell holding the box centre. When two ground truths
land on the same prediction the later one (in target order) wins, as darknet's loop overwrites.
Optionally (``iou_threshold`` < 1, darknet's later ``iou_thresh``) also every other anchor whose shape IoU
exceeds the threshold, at the same centre on its own level: several positives per object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from visionkit.errors import ConfigError
from visionkit.ops.anchors import wh_iou
from visionkit.ops.boxes import box_iou

__all__ = [
    "Assignment",
    "GridPriors",
    "assign_targets",
    "check_anchors",
    "decode_predictions",
    "flatten_levels",
    "grid_priors",
    "ignore_mask",
]


def check_anchors(anchors: Sequence[Sequence[float]], expected: int, name: str = "anchors") -> Tensor:
    """``anchors`` as ``Tensor[expected, 2]`` float64 (width, height) after checking them.

    Raises:
        ConfigError: not ``expected`` positive finite ``(width, height)`` pairs (the message says which).

    Example:
        >>> check_anchors([(10, 13), (16, 30)], 2).shape
        torch.Size([2, 2])
    """
    try:
        table = torch.tensor(
            [[float(v) for v in pair] for pair in anchors], dtype=torch.float64, device="cpu"
        )
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={anchors!r}: expected (width, height) pairs of numbers") from None
    if table.dim() != 2 or table.shape[1] != 2 or table.shape[0] != expected:
        raise ConfigError(
            f"{name}={tuple(map(tuple, anchors))!r}: expected {expected} (width, height) pairs "
            f"(one per anchor of every detection level), got {table.shape[0] if table.dim() else 0}"
        )
    if not bool((torch.isfinite(table) & (table > 0)).all()):
        raise ConfigError(f"{name}={table.tolist()!r}: expected positive finite widths and heights")
    return table


def flatten_levels(outputs: Sequence[Tensor], num_anchors: Sequence[int]) -> Tensor:
    """``[B, A·V, H, W]`` per level → ``Tensor[B, Σ H·W·A, V]`` in the module's prediction order."""
    flat = []
    for output, anchors in zip(outputs, num_anchors, strict=True):
        batch, channels, height, width = output.shape
        values = channels // anchors
        flat.append(output.view(batch, anchors, values, height, width).permute(0, 3, 4, 1, 2))
        flat[-1] = flat[-1].reshape(batch, height * width * anchors, values)
    return torch.cat(flat, dim=1)


@dataclass(frozen=True)
class GridPriors:
    """Per prediction: its cell ``(c_x, c_y)`` ``[N, 2]``, stride ``[N]``, anchor ``(p_w, p_h)`` ``[N, 2]``
    pixels and level ``[N]``; plus each level's ``(H, W)``, stride and first prediction index."""

    cells: Tensor
    strides: Tensor
    anchors: Tensor
    levels: Tensor
    sizes: tuple[tuple[int, int], ...]
    level_strides: tuple[int, ...]
    offsets: tuple[int, ...]


def grid_priors(
    sizes: Sequence[tuple[int, int]],
    strides: Sequence[int],
    anchors: Tensor,
    anchor_levels: Sequence[int],
    device: torch.device | None = None,
) -> GridPriors:
    """The priors of every prediction of levels of ``sizes`` ``(H, W)`` and ``strides``.

    Args:
        anchors: ``Tensor[T, 2]`` anchor ``(width, height)`` in pixels, all levels.
        anchor_levels: ``T`` level indices (anchors of one level in increasing index order).

    Example:
        >>> priors = grid_priors([(2, 3)], [32], torch.tensor([[10.0, 20.0]]), [0])
        >>> priors.cells.tolist()[:4], priors.offsets
        ([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0]], (0,))
    """
    cells, level_strides, wh, levels, offsets, start = [], [], [], [], [], 0
    for level, ((height, width), stride) in enumerate(zip(sizes, strides, strict=True)):
        mine = anchors[[i for i, lv in enumerate(anchor_levels) if lv == level]].to(device)
        count = mine.shape[0]
        ys, xs = torch.meshgrid(
            torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
        )
        grid = torch.stack([xs, ys], dim=-1).reshape(-1, 1, 2).expand(-1, count, 2).reshape(-1, 2)
        cells.append(grid.to(anchors.dtype))
        wh.append(mine.repeat(height * width, 1))
        level_strides.append(torch.full((grid.shape[0],), float(stride), dtype=anchors.dtype, device=device))
        levels.append(torch.full((grid.shape[0],), level, dtype=torch.int64, device=device))
        offsets.append(start)
        start += grid.shape[0]
    return GridPriors(
        torch.cat(cells),
        torch.cat(level_strides),
        torch.cat(wh),
        torch.cat(levels),
        tuple((int(h), int(w)) for h, w in sizes),
        tuple(int(s) for s in strides),
        tuple(offsets),
    )


def decode_predictions(raw: Tensor, priors: GridPriors) -> Tensor:
    """Boxes ``xyxy`` pixels from ``raw`` ``[..., N, ≥4]`` ``(t_x, t_y, t_w, t_h, …)`` (module docstring).

    Example:
        >>> priors = grid_priors([(1, 1)], [32], torch.tensor([[10.0, 20.0]]), [0])
        >>> decode_predictions(torch.zeros(1, 4), priors).tolist()
        [[11.0, 6.0, 21.0, 26.0]]
    """
    centres = (torch.sigmoid(raw[..., :2]) + priors.cells) * priors.strides[:, None]
    sizes = priors.anchors * torch.exp(raw[..., 2:4])
    return torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1)


@dataclass(frozen=True)
class Assignment:
    """Ground truths matched to predictions: ``index`` ``[P]`` prediction rows (unique), ``gt`` ``[P]``
    ground-truth rows, ``offsets`` ``[P, 4]`` targets ``(σ(t_x)*, σ(t_y)*, t_w*, t_h*)``."""

    index: Tensor
    gt: Tensor
    offsets: Tensor


def assign_targets(
    boxes: Tensor,
    priors: GridPriors,
    anchors: Tensor,
    anchor_levels: Sequence[int],
    iou_threshold: float = 1.0,
) -> Assignment:
    """The assignment of ``boxes`` ``Tensor[M, 4]`` xyxy pixels (module docstring).

    ``σ(t_x)* = x/s − c_x`` (the centre's offset in its cell), ``t_w* = log(w / p_w)``. With
    ``iou_threshold < 1`` every *other* anchor whose shape IoU with the box exceeds it is assigned too, at
    the box centre's cell of its own level (darknet's later ``[yolo] iou_thresh``, e.g. 0.213 in
    ``yolov4.cfg``; 1.0, the default, is the papers' one anchor per ground truth). Pairs are written in
    (ground truth, anchor) order, so on a shared prediction the later ground truth wins.

    Example:
        >>> anchors = torch.tensor([[8.0, 8.0], [32.0, 32.0]])
        >>> priors = grid_priors([(4, 4), (2, 2)], [16, 32], anchors, [0, 1])
        >>> a = assign_targets(torch.tensor([[0.0, 0.0, 30.0, 34.0]]), priors, anchors, [0, 1])
        >>> a.index.tolist(), a.offsets[0, :2].tolist()
        ([16], [0.46875, 0.53125])
        >>> box = torch.tensor([[0.0, 0.0, 16.0, 16.0]])  # shape IoU 0.25 with both anchors
        >>> assign_targets(box, priors, anchors, [0, 1], iou_threshold=0.2).index.tolist()
        [0, 16]
    """
    device = priors.cells.device
    empty = torch.zeros(0, dtype=torch.int64, device=device)
    if boxes.shape[0] == 0:
        return Assignment(empty, empty, torch.zeros(0, 4, dtype=priors.cells.dtype, device=device))
    boxes = boxes.to(priors.cells.dtype)
    anchors = anchors.to(device=device, dtype=boxes.dtype)
    shape_iou = wh_iou(boxes[:, 2:] - boxes[:, :2], anchors)
    chosen = shape_iou > iou_threshold
    # the best anchor always (first maximum: the lower anchor index on ties)
    chosen[torch.arange(boxes.shape[0], device=device), shape_iou.argmax(dim=1)] = True
    gt, best = torch.nonzero(chosen, as_tuple=True)  # row-major: (ground truth, anchor) order
    boxes = boxes[gt]
    centres, wh = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    anchor_levels = list(anchor_levels)
    levels = torch.as_tensor(anchor_levels, device=device)[best]
    # each anchor's position among its level's anchors (they are listed in increasing index order)
    positions = [anchor_levels[:i].count(level) for i, level in enumerate(anchor_levels)]
    local = torch.as_tensor(positions, device=device)[best]
    counts = [anchor_levels.count(level) for level in range(len(priors.sizes))]
    stride = torch.as_tensor(priors.level_strides, dtype=boxes.dtype, device=device)[levels]
    heights = torch.as_tensor([h for h, _ in priors.sizes], device=device)[levels]
    widths = torch.as_tensor([w for _, w in priors.sizes], device=device)[levels]
    scaled = centres / stride[:, None]
    cx = scaled[:, 0].floor().long().clamp(min=0).minimum(widths - 1)
    cy = scaled[:, 1].floor().long().clamp(min=0).minimum(heights - 1)
    per_level = torch.as_tensor(counts, device=device)[levels]
    offset = torch.as_tensor(priors.offsets, device=device)[levels]
    index = offset + (cy * widths + cx) * per_level + local
    targets = torch.stack(
        [
            scaled[:, 0] - cx,
            scaled[:, 1] - cy,
            torch.log(wh[:, 0] / anchors[best, 0]),
            torch.log(wh[:, 1] / anchors[best, 1]),
        ],
        dim=1,
    )
    # later pairs win a shared prediction: keep the last occurrence of each index
    order = torch.arange(index.numel(), device=device)
    last = torch.full((int(priors.cells.shape[0]),), -1, dtype=torch.int64, device=device)
    last.scatter_reduce_(0, index, order, reduce="amax")
    keep = last[index] == order
    return Assignment(index[keep], gt[keep], targets[keep])


def ignore_mask(predicted: Tensor, boxes: Tensor, threshold: float) -> Tensor:
    """``Tensor[N]`` bool: predictions whose best IoU with any of ``boxes`` exceeds ``threshold``
    (the predictions that are not objectness negatives); all ``False`` without boxes.

    Example:
        >>> ignore_mask(torch.tensor([[0.0, 0, 10, 10], [0, 0, 4, 4]]), torch.tensor([[0.0, 0, 10, 9]]), 0.5)
        tensor([ True, False])
    """
    if boxes.shape[0] == 0:
        return torch.zeros(predicted.shape[0], dtype=torch.bool, device=predicted.device)
    return box_iou(predicted, boxes.to(predicted.dtype)).max(dim=1).values > threshold
