"""Assign ground-truth boxes to anchors / proposals by IoU thresholds (Faster R-CNN RPN, handbook §10).

Semantics follow torchvision's and detectron2's ``Matcher`` (Ren et al., 2015, §3.1.2): for every anchor
take its best ground truth (ties: lower gt index) and its IoU ``q``;

* ``q >= high_threshold``                → the gt index (positive);
* ``low_threshold <= q < high_threshold`` → ``BETWEEN_THRESHOLDS = -2`` (ignored in training);
* ``q < low_threshold``                  → ``BELOW_LOW_THRESHOLD = -1`` (negative).

With ``allow_low_quality_matches`` every ground truth additionally claims the anchors that have its highest
IoU (all of them when tied), so no object is left without a positive anchor; such an anchor gets its own
best gt (which may be a different gt when the anchor is tied between two), exactly as in torchvision.

Deliberate difference, documented and tested: a ground truth whose highest IoU is ``<= 0`` (it overlaps no
anchor at all, e.g. a zero-area or out-of-image box) claims nothing. torchvision would make every anchor
with IoU 0 "tied best" for it and turn the whole background positive. Empty inputs are defined too:
no ground truth → all anchors ``-1`` (a valid negative image; torchvision raises); no anchors → ``[0]``.

Thresholds are compared in the dtype of the quality matrix (a Python float threshold is rounded to it, as
in torchvision), so an IoU written as ``0.7`` counts as "at" a threshold of ``0.7`` in every dtype.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["BELOW_LOW_THRESHOLD", "BETWEEN_THRESHOLDS", "Matcher", "match_by_quality"]

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


def _check_thresholds(high_threshold: float, low_threshold: float) -> None:
    for name, value in (("high_threshold", high_threshold), ("low_threshold", low_threshold)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if low_threshold > high_threshold:
        raise ValueError(
            f"low_threshold must be <= high_threshold, got low_threshold={low_threshold} and "
            f"high_threshold={high_threshold}"
        )


def match_by_quality(
    match_quality_matrix: Tensor,
    high_threshold: float = 0.7,
    low_threshold: float = 0.3,
    allow_low_quality_matches: bool = True,
) -> Tensor:
    """Match each of ``N`` predictions (anchors) to one of ``M`` ground truths, or mark it -1 / -2.

    Args:
        match_quality_matrix: ``Tensor[M, N]`` quality (usually ``box_iou(gt_boxes, anchors)``); NaN is an
            error.
        high_threshold: quality ``>=`` this is a positive match (RPN: 0.7; Fast R-CNN head: 0.5).
        low_threshold: quality ``<`` this is a negative (RPN: 0.3); in between is ignored.
        allow_low_quality_matches: also match every gt to its highest-quality predictions (ties included).

    Returns:
        ``Tensor[N]`` int64: gt index in ``[0, M)``, ``-1`` (below low) or ``-2`` (between thresholds).

    Example:
        >>> iou = torch.tensor([[0.9, 0.5, 0.1, 0.2], [0.1, 0.6, 0.2, 0.0]])
        >>> match_by_quality(iou, 0.7, 0.3, allow_low_quality_matches=False)
        tensor([ 0, -2, -1, -1])
        >>> match_by_quality(iou, 0.7, 0.3)
        tensor([ 0,  1, -1, -1])
    """
    _check_thresholds(high_threshold, low_threshold)
    if not isinstance(match_quality_matrix, Tensor) or match_quality_matrix.dim() != 2:
        shape = list(match_quality_matrix.shape) if isinstance(match_quality_matrix, Tensor) else None
        raise ValueError(f"match_quality_matrix must be a Tensor[M gt, N predictions], got {shape}")
    if match_quality_matrix.is_complex() or match_quality_matrix.dtype == torch.bool:
        raise ValueError(f"match_quality_matrix must be real, got {match_quality_matrix.dtype}")
    num_gt, num_predictions = match_quality_matrix.shape
    device = match_quality_matrix.device
    if num_gt == 0 or num_predictions == 0:
        return torch.full((num_predictions,), BELOW_LOW_THRESHOLD, dtype=torch.int64, device=device)
    quality = (
        match_quality_matrix if match_quality_matrix.is_floating_point() else match_quality_matrix.float()
    )
    matched_values, best_gt = quality.max(dim=0)  # max propagates NaN: one check on [N] suffices
    if torch.isnan(matched_values).any():
        index = torch.isnan(quality).nonzero()[0].tolist()
        raise ValueError(
            f"match_quality_matrix contains NaN, first at [gt {index[0]}, prediction {index[1]}]"
        )
    unmatched = torch.where(matched_values < low_threshold, BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS)
    matches = torch.where(matched_values >= high_threshold, best_gt, unmatched)
    if allow_low_quality_matches:
        best_for_each_gt = quality.max(dim=1).values
        # A gt overlapping nothing (best <= 0) must not make every zero-IoU anchor "tied best": compare it
        # with NaN, which equals nothing.
        best_for_each_gt = torch.where(best_for_each_gt > 0, best_for_each_gt, math.nan)
        claimed = (quality == best_for_each_gt[:, None]).any(dim=0)
        matches = torch.where(claimed, best_gt, matches)
    return matches


class Matcher:
    """Thresholded IoU matcher with optional low-quality matches (see :func:`match_by_quality`).

    Args:
        high_threshold: quality ``>=`` this is a positive match.
        low_threshold: quality ``<`` this is a negative; ``[low, high)`` is ignored (-2).
        allow_low_quality_matches: give every gt its highest-quality predictions.

    Example:
        >>> matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
        >>> matcher(torch.tensor([[0.5, 0.1], [0.2, 0.25]]))
        tensor([0, 1])
        >>> matcher(torch.zeros(0, 3))  # image without objects: all negatives
        tensor([-1, -1, -1])
    """

    BELOW_LOW_THRESHOLD = BELOW_LOW_THRESHOLD
    BETWEEN_THRESHOLDS = BETWEEN_THRESHOLDS

    def __init__(
        self, high_threshold: float = 0.7, low_threshold: float = 0.3, allow_low_quality_matches: bool = True
    ) -> None:
        _check_thresholds(high_threshold, low_threshold)
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __repr__(self) -> str:
        return (
            f"Matcher(high_threshold={self.high_threshold}, low_threshold={self.low_threshold}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches})"
        )

    def __call__(self, match_quality_matrix: Tensor) -> Tensor:
        """``Tensor[M, N]`` quality → ``Tensor[N]`` int64 matches."""
        return match_by_quality(
            match_quality_matrix, self.high_threshold, self.low_threshold, self.allow_low_quality_matches
        )
