"""Soft-NMS (Bodla et al., "Soft-NMS — Improving Object Detection With One Line of Code", ICCV 2017;
handbook §8): instead of deleting the boxes that overlap a selected box, lower their scores.

With ``M`` the box just selected and ``b`` a remaining box of score ``s``:

* linear:   ``s ← s · (1 − IoU(M, b))`` if ``IoU(M, b) > iou_threshold``, else unchanged;
* gaussian: ``s ← s · exp(−IoU(M, b)² / sigma)`` for every remaining box.

The paper and the handbook write the linear condition as ``IoU ≥ N_t``; visionkit uses ``IoU > N_t`` —
the comparison of the authors' reference code (``if ov > Nt``) and of every other NMS variant here, so
a pair exactly at the threshold behaves the same in hard and soft NMS. A box whose score is below
``score_threshold`` (initially or after a decay) is discarded; boxes are kept while ``score >=
score_threshold``. Ties in score select the lower index first. The decayed scores are returned
detached (no autograd through post-processing). NaN/Inf handling as in
:mod:`visionkit.ops.nms`.

Algorithm. On CPU the loop itself runs in C (:mod:`visionkit.ops._native_nms`): a tournament tree gives the
best alive box, and a spatial index (width octave, label, x1) the alive boxes that interact with it.
Otherwise (other devices, or no C kernels) the PyTorch engine runs exactly the sequential loop, vectorised:
the interaction graph (pairs with IoU > N_t for
linear, IoU > 0 for gaussian) is enumerated without an N×N matrix (an x-sorted tile sweep, or the size-
levelled grid of :mod:`visionkit.ops._overlap_pairs` when the sweep would meet too many candidates) and
split into connected components, which never decay each other. Lone boxes are selected at their score;
small components run the loop itself all at once on a padded ``[components, size]`` layout with dense
per-component decay matrices (one selection per component per step, the loop's arithmetic in the loop's
order); the few big components run the same loop with decays through adjacency lists (memory O(pairs)),
one selection per step over all of them together (they interact with nothing else).
Selected scores never increase along the loop and equal scores go to the lower index first, so sorting
the selections by (score desc, index asc) gives the loop's order (negative scores, which a decay raises,
and overlap graphs over budget run the plain loop instead). The alternative "rounds" engine for big
components (``BIG_COMPONENTS``) selects every remaining box that beats all boxes it interacts with at
once; its decays from several boxes multiply in a different order than in the loop, which can change a
score in its last bit (far below the 1e-6 the tests allow).
"""

from __future__ import annotations

import itertools
from typing import Literal

import torch
from torch import Tensor, nn

from visionkit.ops import _native_nms
from visionkit.ops._nms_core import _expand_ranges, block_iou, box_columns
from visionkit.ops._overlap_pairs import connected_components, overlap_pairs, sweep_pairs
from visionkit.ops._validate import check_real_number
from visionkit.ops.nms import check_nms_inputs, finite_indices, working_boxes

__all__ = ["SoftNMS", "batched_soft_nms", "soft_nms"]

Method = Literal["linear", "gaussian"]


def _check_soft_settings(method: str, sigma: float, score_threshold: float) -> tuple[float, float]:
    if method not in ("linear", "gaussian"):
        raise ValueError(f"method must be 'linear' or 'gaussian', got {method!r}")
    sigma = check_real_number(sigma, "sigma")
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    return sigma, check_real_number(score_threshold, "score_threshold")


def _decay(iou: Tensor, method: str, sigma: float) -> Tensor:
    """Multiplicative score decay for interacting pairs (linear pairs already have IoU > N_t)."""
    if method == "linear":
        return 1 - iou
    return torch.exp(-(iou * iou) / sigma)


def _adjacency(num: int, first: Tensor, second: Tensor, factor: Tensor) -> tuple[Tensor, ...]:
    """Both directions of every edge, grouped by source: ``(offsets, counts, neighbour, factor)``."""
    source, neighbour = torch.cat((first, second)), torch.cat((second, first))
    order = torch.argsort(source, stable=True)
    counts = torch.bincount(source, minlength=num)
    return counts.cumsum(0) - counts, counts, neighbour[order], torch.cat((factor, factor))[order]


def _rounds(scores: Tensor, first: Tensor, second: Tensor, factor: Tensor, score_threshold: float):
    """Vectorised soft-NMS on an interaction graph (``first < second``); returns selected ids and scores.

    Removed boxes get key −inf so their edges never block anyone (the blocking edge list is compacted
    every other round); decays reach only the neighbours of the selected boxes, via adjacency lists.
    """
    offsets, counts, neighbours, factors = _adjacency(scores.numel(), first, second, factor)
    alive = scores >= score_threshold
    keys = torch.where(alive, scores, -torch.inf)
    chosen, chosen_scores = [first[:0]], [scores[:0]]
    rounds = 0
    while bool(alive.any()):
        # first < second, so on equal scores `first` wins: the lower index is selected first
        first_wins = keys.index_select(0, first) >= keys.index_select(0, second)
        beaten = torch.zeros_like(alive).index_fill_(0, torch.where(first_wins, second, first), True)
        selected = alive & ~beaten
        picked = selected.nonzero().squeeze(1)
        chosen.append(picked)
        chosen_scores.append(scores.index_select(0, picked))
        _, position = _expand_ranges(0, offsets.index_select(0, picked), counts.index_select(0, picked))
        target = neighbours.index_select(0, position)
        scores.scatter_reduce_(0, target, factors.index_select(0, position), reduce="prod")
        alive &= ~selected & (scores >= score_threshold)
        keys = torch.where(alive, scores, -torch.inf)
        rounds += 1
        if rounds % 2 == 0:
            live = (alive.index_select(0, first) & alive.index_select(0, second)).nonzero().squeeze(1)
            first, second = first.index_select(0, live), second.index_select(0, live)
    return torch.cat(chosen), torch.cat(chosen_scores)


#: Engine of the components too big for the packed loop: "scalar" (:func:`_scalar_loop`, fastest on CPU),
#: "loop" (:func:`_sparse_loop`, vectorised across components) or "rounds" (:func:`_rounds`).
BIG_COMPONENTS = "scalar"
#: Components of at most this many boxes run the packed loop; larger ones the big-component engine.
PACK_MAX_SIZE = 512
#: Largest packed decay matrix ``[components, size, size]`` (elements; 16 MiB in float64).
PACK_BUDGET = 1 << 21


def _pack_limit(sizes: Tensor) -> int:
    """Largest component size ``s`` such that every component of size <= ``s`` fits the packed loop:
    ``s <= PACK_MAX_SIZE`` and ``count(size <= s) * s * s <= PACK_BUDGET``."""
    ordered = torch.sort(sizes).values
    cost = torch.arange(1, ordered.numel() + 1, device=sizes.device) * ordered * ordered
    fits = int(((cost <= PACK_BUDGET) & (ordered <= PACK_MAX_SIZE)).sum())  # a prefix: cost is monotone
    if fits == 0:
        return 1
    if fits < ordered.numel() and int(ordered[fits]) == int(ordered[fits - 1]):
        return int(ordered[fits - 1]) - 1  # a tie straddles the budget: leave that size out
    return int(ordered[fits - 1])


def _by_components(scores: Tensor, first: Tensor, second: Tensor, factor: Tensor, score_threshold: float):
    """Soft-NMS split into the connected components of the interaction graph (``first < second``).

    Boxes of different components never decay each other (in the loop their factor is exactly 1), so the
    loop's selections inside one component do not depend on the others, and the global loop interleaves
    the components' selection sequences. Each sequence has non-increasing scores (scores only decrease)
    and, on equal scores, increasing indices (a lower-index box with that score would have been picked
    first). The global loop always takes the highest current score, lowest index on ties, so its order is
    the merge of these sequences by (score desc, index asc): the final sort of :func:`_soft_nms`.
    Lone boxes are selected at their own score; small components run :func:`_packed_loop` all at once;
    components too big for its memory bound run :func:`_rounds` on their edges.
    """
    num = scores.numel()
    component = connected_components(num, first, second)
    sizes = torch.bincount(component, minlength=num)
    node_size = sizes.index_select(0, component)
    limit = _pack_limit(sizes[sizes > 1])
    lone = (node_size == 1).nonzero().squeeze(1)
    chosen, chosen_scores = [lone], [scores.index_select(0, lone)]
    packed = ((node_size > 1) & (node_size <= limit)).nonzero().squeeze(1)
    if packed.numel():
        ids, values = _packed_loop(scores, component, packed, (first, second, factor), score_threshold)
        chosen.append(ids)
        chosen_scores.append(values)
    big = (node_size > limit).nonzero().squeeze(1)
    if big.numel() and BIG_COMPONENTS == "scalar":
        ids, values = _scalar_loop(scores, big, (first, second, factor), score_threshold)
        chosen.append(ids)
        chosen_scores.append(values)
    elif big.numel() and BIG_COMPONENTS == "loop":
        ids, values = _sparse_loop(scores, component, big, (first, second, factor), score_threshold)
        chosen.append(ids)
        chosen_scores.append(values)
    elif big.numel():
        local = torch.full((num,), -1, dtype=torch.int64, device=scores.device)
        local[big] = torch.arange(big.numel(), device=scores.device)  # increasing: keeps first < second
        edges = (node_size.index_select(0, first) > limit).nonzero().squeeze(1)
        ids, values = _rounds(
            scores.index_select(0, big),
            local.index_select(0, first.index_select(0, edges)),
            local.index_select(0, second.index_select(0, edges)),
            factor.index_select(0, edges),
            score_threshold,
        )
        chosen.append(big.index_select(0, ids))
        chosen_scores.append(values)
    return torch.cat(chosen), torch.cat(chosen_scores)


def _layout(scores: Tensor, component: Tensor, nodes: Tensor, score_threshold: float):
    """Padded ``[C, S]`` layout of the components of ``nodes``, boxes by increasing index in each row:
    scores (-inf where removed or padding), ids, and each node's row and slot (row -1: not laid out)."""
    device, num = scores.device, scores.numel()
    nodes = nodes.index_select(0, torch.argsort(component.index_select(0, nodes), stable=True))
    _, counts = torch.unique_consecutive(component.index_select(0, nodes), return_counts=True)
    num_rows, width = counts.numel(), int(counts.max())
    row = torch.repeat_interleave(torch.arange(num_rows, device=device), counts)
    slot = torch.arange(nodes.numel(), device=device) - torch.repeat_interleave(
        counts.cumsum(0) - counts, counts
    )
    row_of = torch.full((num,), -1, dtype=torch.int64, device=device).index_copy_(0, nodes, row)
    slot_of = torch.zeros(num, dtype=torch.int64, device=device).index_copy_(0, nodes, slot)
    values = scores.new_full((num_rows, width), -torch.inf).index_put_(
        (row, slot), scores.index_select(0, nodes)
    )
    ids = torch.zeros(num_rows, width, dtype=torch.int64, device=device).index_put_((row, slot), nodes)
    alive = torch.zeros(num_rows, width, dtype=torch.bool, device=device).index_put_(
        (row, slot), scores.index_select(0, nodes) >= score_threshold
    )
    # Removed boxes (selected, padding, under the threshold) hold -inf: the threshold is finite, and a
    # decayed -inf (a factor of 0 gives NaN) is reset by the `>= score_threshold` test.
    values.masked_fill_(~alive, -torch.inf)
    return values, ids, row_of, slot_of


def _pack(scores: Tensor, component: Tensor, nodes: Tensor, edges: tuple, score_threshold: float):
    """Layout of :func:`_packed_loop`: :func:`_layout` plus decay factors ``[C, S, S]`` (1 where boxes do
    not interact)."""
    first, second, factor = edges
    values, ids, row_of, slot_of = _layout(scores, component, nodes, score_threshold)
    num_rows, width = values.shape
    inside = (row_of.index_select(0, first) >= 0).nonzero().squeeze(1)
    edge_row = row_of.index_select(0, first.index_select(0, inside))
    a = slot_of.index_select(0, first.index_select(0, inside))
    b = slot_of.index_select(0, second.index_select(0, inside))
    decay = scores.new_ones(num_rows, width, width)
    decay.index_put_((edge_row, a, b), factor.index_select(0, inside))
    decay.index_put_((edge_row, b, a), factor.index_select(0, inside))
    return values, ids, decay


def _packed_loop(scores: Tensor, component: Tensor, nodes: Tensor, edges: tuple, score_threshold: float):
    """The sequential loop run for many components at once on a padded ``[C, S]`` layout.

    Row ``c`` holds one component's boxes by increasing index (so ``max`` picks the lowest index on ties,
    like the loop); ``decay[c, i, j]`` is the factor box ``i`` applies to box ``j`` (1 for non-interacting
    pairs, the diagonal and padding). Each step selects the best alive box of every component, multiplies
    its decay row into the component's scores and drops boxes under the threshold: the loop's arithmetic
    in the loop's order. Finished components are dropped from the layout every few steps.
    """
    values, ids, decay = _pack(scores, component, nodes, edges, score_threshold)
    device = scores.device
    chosen, chosen_scores, found = [], [], []
    layout_rows = torch.arange(values.shape[0], device=device)  # rows of `decay` still in the layout
    for step in itertools.count():
        best_score, best = values.max(dim=1)  # the first maximum: the lowest index on ties
        active = best_score > -torch.inf
        if step % 8 == 0:  # drop finished components from the layout
            rows = active.nonzero().squeeze(1)
            if rows.numel() == 0:
                break
            if rows.numel() < active.numel():
                values, ids, best_score, best, active, layout_rows = (
                    tensor.index_select(0, rows)
                    for tensor in (values, ids, best_score, best, active, layout_rows)
                )
        best = best.unsqueeze(1)
        chosen.append(ids.gather(1, best).squeeze(1))
        chosen_scores.append(best_score)
        found.append(active)
        values.scatter_(1, best, -torch.inf)
        values.mul_(
            decay.view(-1, values.shape[1]).index_select(0, layout_rows * values.shape[1] + best.squeeze(1))
        )
        values.masked_fill_(~(values >= score_threshold), -torch.inf)
    found_mask = torch.cat(found)
    return torch.cat(chosen)[found_mask], torch.cat(chosen_scores)[found_mask]


def _sparse_loop(scores: Tensor, component: Tensor, nodes: Tensor, edges: tuple, score_threshold: float):
    """The sequential loop for a few big components at once, decays through adjacency lists.

    Like :func:`_packed_loop` (one selection per component per step, the lowest index on ties), but the
    selected box's decays reach only its interacting neighbours, found in adjacency lists, so memory stays
    O(edges). A target gets at most one factor per step (one selection per component): the loop's
    arithmetic in the loop's order.
    """
    first, second, factor = edges
    values, ids, row_of, slot_of = _layout(scores, component, nodes, score_threshold)
    width = values.shape[1]
    inside = (row_of.index_select(0, first) >= 0).nonzero().squeeze(1)
    offsets, counts, neighbour, neighbour_factor = _adjacency(
        scores.numel(), *(tensor.index_select(0, inside) for tensor in (first, second, factor))
    )
    target = row_of.index_select(0, neighbour) * width + slot_of.index_select(0, neighbour)
    flat, row_start = values.view(-1), torch.arange(values.shape[0], device=scores.device) * width
    chosen, chosen_scores, found = [], [], []
    for step in itertools.count():
        best_score, best = values.max(dim=1)  # the first maximum: the lowest index on ties
        active = best_score > -torch.inf
        if step % 8 == 0 and not bool(active.any()):
            break
        node = ids.gather(1, best.unsqueeze(1)).squeeze(1)
        chosen.append(node)
        chosen_scores.append(best_score)
        found.append(active)
        flat.index_fill_(0, row_start + best, -torch.inf)
        _, position = _expand_ranges(0, offsets.index_select(0, node), counts.index_select(0, node) * active)
        hit = target.index_select(0, position)
        flat.index_copy_(0, hit, flat.index_select(0, hit) * neighbour_factor.index_select(0, position))
        values.masked_fill_(~(values >= score_threshold), -torch.inf)
    found_mask = torch.cat(found)
    return torch.cat(chosen)[found_mask], torch.cat(chosen_scores)[found_mask]


def _scalar_loop(scores: Tensor, nodes: Tensor, edges: tuple, score_threshold: float):
    """The sequential loop itself on the boxes ``nodes`` (whole components), steered by Python ints.

    Boxes by increasing index (``argmax`` takes the first maximum: the lowest index on ties); the selected
    box decays its neighbours through an adjacency-list slice (few, tiny ops a step; memory O(pairs)).
    These boxes interact with no other box, so this is the global loop restricted to them.
    """
    first, second, factor = edges
    local = torch.full((scores.numel(),), -1, dtype=torch.int64, device=scores.device)
    local[nodes] = torch.arange(nodes.numel(), device=scores.device)  # increasing in the node id
    inside = (local.index_select(0, first) >= 0).nonzero().squeeze(1)
    offsets, counts, neighbour, neighbour_factor = _adjacency(
        nodes.numel(),
        local.index_select(0, first.index_select(0, inside)),
        local.index_select(0, second.index_select(0, inside)),
        factor.index_select(0, inside),
    )
    values = scores.index_select(0, nodes)
    values.masked_fill_(~(values >= score_threshold), -torch.inf)
    starts, ends = offsets.tolist(), (offsets + counts).tolist()
    chosen, chosen_scores = [], []
    while True:
        best = int(values.argmax())
        best_score = values[best].item()
        if best_score == -torch.inf:
            break
        chosen.append(best)
        chosen_scores.append(best_score)
        values[best] = -torch.inf
        targets = neighbour[starts[best] : ends[best]]
        decayed = values.index_select(0, targets).mul_(neighbour_factor[starts[best] : ends[best]])
        values.index_copy_(0, targets, decayed.masked_fill_(~(decayed >= score_threshold), -torch.inf))
    ids = torch.tensor(chosen, dtype=torch.int64, device=scores.device)
    return nodes.index_select(0, ids), torch.tensor(chosen_scores, dtype=scores.dtype, device=scores.device)


def _sequential(
    boxes: Tensor, scores: Tensor, labels: Tensor | None, settings: tuple
) -> tuple[Tensor, Tensor]:
    """The loop itself, one selection per step (memory O(N)); used when the overlap graph is too large."""
    method, sigma, iou_threshold, score_threshold = settings
    columns = box_columns(boxes)
    alive = scores >= score_threshold
    chosen, chosen_scores = [], []
    while bool(alive.any()):
        best = int(torch.where(alive, scores, -torch.inf).argmax())  # first maximum: lowest index on ties
        chosen.append(best)
        chosen_scores.append(scores[best].clone())
        alive[best] = False
        iou = block_iou([c[best : best + 1] for c in columns], list(columns))[0].nan_to_num_(0.0)
        interacting = alive & ((iou > iou_threshold) if method == "linear" else (iou > 0))
        if labels is not None:
            interacting &= labels == labels[best]
        scores = torch.where(interacting, scores * _decay(iou, method, sigma), scores)
        alive &= ~(scores < score_threshold)
    ids = torch.tensor(chosen, dtype=torch.int64, device=boxes.device)
    return ids, torch.stack(chosen_scores) if chosen_scores else scores[:0]


@torch.no_grad()  # a post-processing step: the decayed scores are returned detached
def _soft_nms(boxes: Tensor, scores: Tensor, labels: Tensor | None, settings: tuple) -> tuple[Tensor, Tensor]:
    method, sigma, iou_threshold, score_threshold = settings
    boxes = working_boxes(boxes)
    if scores.dtype in (torch.float16, torch.bfloat16):
        scores = scores.float()
    if scores.dtype == boxes.dtype and _native_nms.usable(boxes, scores):
        gaussian = method == "gaussian"
        return _native_nms.soft_nms_loop(
            boxes, scores, labels, gaussian, sigma, iou_threshold, score_threshold
        )
    candidates = (scores >= score_threshold).nonzero().squeeze(1)
    boxes, scores = boxes[candidates], scores[candidates]
    labels = None if labels is None else labels[candidates]
    interaction = iou_threshold if method == "linear" else 0.0
    # A decay raises a negative score (selections stop being monotone) and a too large overlap graph
    # does not fit memory: the plain loop, whose selections are already in the loop's order.
    pairs = None
    if not bool((scores < 0).any()):
        pairs = sweep_pairs(boxes, interaction) if labels is None else None  # None: too many candidates
        if pairs is None:
            pairs = overlap_pairs(boxes, interaction, labels)
    if pairs is None:
        chosen, chosen_scores = _sequential(boxes, scores, labels, settings)
        return candidates[chosen], chosen_scores
    first, second, iou = pairs
    factor = _decay(iou, method, sigma).to(scores.dtype)
    chosen, chosen_scores = _by_components(scores, first, second, factor, score_threshold)
    by_index = torch.argsort(chosen)
    chosen, chosen_scores = chosen[by_index], chosen_scores[by_index]
    order = torch.sort(chosen_scores, descending=True, stable=True)[1]
    return candidates[chosen[order]], chosen_scores[order]


def soft_nms(
    boxes: Tensor,
    scores: Tensor,
    method: Method = "linear",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
    *,
    strict: bool = False,
) -> tuple[Tensor, Tensor]:
    """Soft-NMS with linear or gaussian score decay (Bodla et al. 2017; handbook §8).

    Args:
        boxes: ``Tensor[N, 4]`` xyxy boxes.
        scores: ``Tensor[N]`` scores, same dtype as floating ``boxes``.
        method: ``"linear"`` (decay by ``1 − IoU`` when ``IoU > iou_threshold``) or ``"gaussian"`` (decay by
            ``exp(−IoU²/sigma)`` always).
        sigma: gaussian width (> 0); unused by ``"linear"``.
        iou_threshold: ``N_t`` of the linear method, in ``[0, 1]``.
        score_threshold: boxes whose (decayed) score falls below it are discarded.
        strict: raise on NaN/Inf instead of dropping those boxes with a warning.

    Returns:
        ``(keep, decayed_scores)``: ``Tensor[K]`` int64 indices in selection order and ``Tensor[K]`` their
        scores at selection (float32 for half-precision scores, else the scores' dtype).

    Example:
        >>> boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 8], [20, 20, 30, 30]])
        >>> keep, decayed = soft_nms(boxes, torch.tensor([0.9, 0.8, 0.7]))
        >>> keep, decayed
        (tensor([0, 2, 1]), tensor([0.9000, 0.7000, 0.1600]))
    """
    return _entry(boxes, scores, None, method, sigma, iou_threshold, score_threshold, strict, "soft_nms")


def batched_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    method: Method = "linear",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
    *,
    strict: bool = False,
) -> tuple[Tensor, Tensor]:
    """Class-aware :func:`soft_nms`: only boxes with equal ``labels`` (``Tensor[N]`` int) decay each other.

    Equals running :func:`soft_nms` per class and merging by (score desc, index asc).

    Example:
        >>> boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 8]])
        >>> batched_soft_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]))
        (tensor([0, 1]), tensor([0.9000, 0.8000]))
    """
    return _entry(
        boxes, scores, labels, method, sigma, iou_threshold, score_threshold, strict, "batched_soft_nms"
    )


def _entry(boxes, scores, labels, method, sigma, iou_threshold, score_threshold, strict, caller):
    threshold = check_nms_inputs(boxes, scores, iou_threshold, labels)
    sigma, score_threshold = _check_soft_settings(method, sigma, score_threshold)
    settings = (method, sigma, threshold, score_threshold)
    subset = finite_indices(boxes, scores, strict, caller)
    if subset is not None:
        keep, decayed = _soft_nms(
            boxes[subset], scores[subset], None if labels is None else labels[subset], settings
        )
        return subset[keep], decayed
    return _soft_nms(boxes, scores, labels, settings)


class SoftNMS(nn.Module):
    """Module holding soft-NMS settings; ``forward(boxes, scores, labels=None)`` → ``(keep, scores)``.

    Example:
        >>> SoftNMS(method="gaussian")(torch.tensor([[0.0, 0, 4, 4]]), torch.tensor([0.5]))
        (tensor([0]), tensor([0.5000]))
    """

    def __init__(
        self,
        method: Method = "linear",
        sigma: float = 0.5,
        iou_threshold: float = 0.3,
        score_threshold: float = 0.001,
        *,
        strict: bool = False,
    ) -> None:
        super().__init__()
        self.sigma, self.score_threshold = _check_soft_settings(method, sigma, score_threshold)
        self.method, self.iou_threshold, self.strict = (
            method,
            check_real_number(iou_threshold, "iou_threshold"),
            strict,
        )

    def forward(self, boxes: Tensor, scores: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        settings = (self.method, self.sigma, self.iou_threshold, self.score_threshold)
        if labels is None:
            return soft_nms(boxes, scores, *settings, strict=self.strict)
        return batched_soft_nms(boxes, scores, labels, *settings, strict=self.strict)

    def extra_repr(self) -> str:
        return (
            f"method={self.method!r}, sigma={self.sigma}, iou_threshold={self.iou_threshold}, "
            f"score_threshold={self.score_threshold}"
        )
