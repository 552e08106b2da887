"""Balanced positive / negative sampling of matched anchors (Faster R-CNN RPN and RoI head, handbook §10).

The RPN of Ren et al. (2015, §3.1.3) trains on 256 anchors per image with up to half positives; when an
image has fewer positives the batch is padded with negatives. Input is the output of
:func:`visionkit.ops.matcher.match_by_quality`: ``>= 0`` positive (matched gt index), ``-1`` negative,
``-2`` ignored (never sampled).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["BalancedPositiveNegativeSampler", "sample_balanced"]


def _check_settings(batch_size_per_image: int, positive_fraction: float) -> None:
    if (
        isinstance(batch_size_per_image, bool)
        or not isinstance(batch_size_per_image, int)
        or batch_size_per_image < 0
    ):
        raise ValueError(f"batch_size_per_image must be an integer >= 0, got {batch_size_per_image!r}")
    if not isinstance(positive_fraction, (int, float)) or not 0.0 <= float(positive_fraction) <= 1.0:
        raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction!r}")


def _random_subset(indices: Tensor, count: int, generator: torch.Generator | None) -> Tensor:
    device = generator.device if generator is not None else indices.device
    order = torch.randperm(indices.numel(), generator=generator, device=device)[:count]
    return indices[order.to(indices.device)]


def sample_balanced(
    matches: Tensor,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Pick ``min(#pos, int(batch * fraction))`` positives and fill the rest of the batch with negatives.

    Args:
        matches: ``Tensor[N]`` integer matcher output (``>= 0`` positive, ``-1`` negative, ``-2`` ignored).
        batch_size_per_image: total number of samples wanted.
        positive_fraction: largest share of positives in the batch.
        generator: ``torch.Generator`` for reproducible draws (on ``matches``' device, or CPU).

    Returns:
        ``(positive_mask, negative_mask)``, two ``Tensor[N]`` bool; disjoint; all candidates are taken when
        there are fewer than asked for.

    Example:
        >>> matches = torch.tensor([0, -1, -1, -2, 1, -1])
        >>> pos, neg = sample_balanced(matches, 4, 0.5, torch.Generator().manual_seed(0))
        >>> pos.nonzero().flatten().tolist(), int(neg.sum())
        ([0, 4], 2)
    """
    _check_settings(batch_size_per_image, positive_fraction)
    if not isinstance(matches, Tensor) or matches.dim() != 1:
        shape = list(matches.shape) if isinstance(matches, Tensor) else type(matches).__name__
        raise ValueError(f"matches must be a 1-D Tensor[N] of matcher output, got {shape}")
    if matches.is_floating_point() or matches.is_complex() or matches.dtype == torch.bool:
        raise ValueError(f"matches must be an integer tensor, got {matches.dtype}")
    if matches.numel() and int(matches.min()) < -2:
        raise ValueError(
            f"matches may only hold gt indices >= 0, -1 (negative) and -2 (ignored), got {int(matches.min())}"
        )
    positive = torch.nonzero(matches >= 0).flatten()
    negative = torch.nonzero(matches == -1).flatten()
    num_positive = min(positive.numel(), int(batch_size_per_image * positive_fraction))
    num_negative = min(negative.numel(), batch_size_per_image - num_positive)
    positive_mask = torch.zeros_like(matches, dtype=torch.bool)
    negative_mask = torch.zeros_like(matches, dtype=torch.bool)
    positive_mask[_random_subset(positive, num_positive, generator)] = True
    negative_mask[_random_subset(negative, num_negative, generator)] = True
    return positive_mask, negative_mask


class BalancedPositiveNegativeSampler:
    """Per-image balanced sampling (see :func:`sample_balanced`).

    Args:
        batch_size_per_image: samples per image (RPN: 256, RoI head: 512).
        positive_fraction: largest share of positives (RPN: 0.5, RoI head: 0.25).

    Example:
        >>> sampler = BalancedPositiveNegativeSampler(batch_size_per_image=4, positive_fraction=0.25)
        >>> pos, neg = sampler([torch.tensor([0, 1, -1, -1, -2])], generator=torch.Generator().manual_seed(0))
        >>> int(pos[0].sum()), int(neg[0].sum())
        (1, 2)
    """

    def __init__(self, batch_size_per_image: int = 256, positive_fraction: float = 0.5) -> None:
        _check_settings(batch_size_per_image, positive_fraction)
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = float(positive_fraction)

    def __repr__(self) -> str:
        return (
            f"BalancedPositiveNegativeSampler(batch_size_per_image={self.batch_size_per_image}, "
            f"positive_fraction={self.positive_fraction})"
        )

    def __call__(
        self, matches: Sequence[Tensor], generator: torch.Generator | None = None
    ) -> tuple[list[Tensor], list[Tensor]]:
        """One ``Tensor[N_i]`` of matcher output per image → lists of bool (positive, negative) masks."""
        if isinstance(matches, Tensor):
            raise TypeError(
                "matches must be a list with one Tensor[N_i] per image; wrap a single tensor in [ ]"
            )
        positive_masks, negative_masks = [], []
        for image_matches in matches:
            positive, negative = sample_balanced(
                image_matches, self.batch_size_per_image, self.positive_fraction, generator
            )
            positive_masks.append(positive)
            negative_masks.append(negative)
        return positive_masks, negative_masks
