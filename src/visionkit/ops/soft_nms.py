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

Algorithm (exactly the sequential loop, vectorised): a remaining box whose score beats every remaining
box it interacts with (IoU > N_t for linear, IoU > 0 for gaussian) is selected by the loop at its
current score, because only interacting selections can lower it and they all come after it. Each round
selects all such local maxima at once, applies their decays to their neighbours (sparse overlap graph,
no N×N matrix) and drops boxes under the score threshold. Selected scores never increase along the loop
and equal scores go to the lower index first, so sorting the selections by (score desc, index asc) gives
the loop's order. Decays from several boxes multiply in a different order than in the loop, which can
change a score in its last bit (far below the 1e-6 the tests allow).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from visionkit.ops._nms_core import _expand_ranges, block_iou, box_columns
from visionkit.ops._overlap_pairs import overlap_pairs
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
    candidates = (scores >= score_threshold).nonzero().squeeze(1)
    boxes, scores = boxes[candidates], scores[candidates]
    labels = None if labels is None else labels[candidates]
    interaction = iou_threshold if method == "linear" else 0.0
    pairs = overlap_pairs(boxes, interaction, labels)
    if pairs is None:
        chosen, chosen_scores = _sequential(boxes, scores, labels, settings)
    else:
        first, second, iou = pairs
        factor = _decay(iou, method, sigma).to(scores.dtype)
        chosen, chosen_scores = _rounds(scores, first, second, factor, score_threshold)
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
