"""What a compression bought, measured: parameters, MACs, bytes on disk, wall-clock CPU latency.

Latency is measured for several models *in one process, interleaved* (round ``r`` times model A, then
B, then A again...), and the median of each is reported, so a machine shared with other work slows all
of them alike and their ratio stays honest.

Example:
    >>> import torch
    >>> from torch import nn
    >>> times = paired_latency_ms({"a": nn.Linear(8, 8)}, torch.randn(1, 8), repeats=3)
    >>> sorted(times)
    ['a']
"""

from __future__ import annotations

import io
import statistics
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from visionkit.analysis import summary
from visionkit.metrics.segmentation_compare import bootstrap_gain

__all__ = ["macs_and_params", "paired_accuracy_gain", "paired_latency_ms", "serialized_bytes"]


@torch.no_grad()
def paired_latency_ms(
    models: dict[str, nn.Module], example: Tensor, *, repeats: int = 30
) -> dict[str, float]:
    """Median milliseconds of one ``model(example)`` for each model, measured interleaved (eval mode,
    no gradients, one warm-up call each)."""
    for model in models.values():
        model.eval()
        model(example)
    samples: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(example)
            samples[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def macs_and_params(model: nn.Module, example: Tensor) -> tuple[int, int]:
    """``(MACs, parameters)`` of one forward of ``model`` on ``example`` (analysis.summary)."""
    report = summary(model, inputs=example)
    return int(report.total_macs), int(report.total_params)


def serialized_bytes(payload: Any) -> int:
    """Bytes of ``torch.save(payload)`` (what a file on disk would hold)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getbuffer().nbytes


def paired_accuracy_gain(
    baseline: np.ndarray, candidate: np.ndarray, *, resamples: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Paired bootstrap over test images of ``accuracy(candidate) − accuracy(baseline)``.

    Args:
        baseline, candidate: per-image correctness of two classifiers on the same images, ``(N,)`` of 0/1,
            or ``(N, S)`` for ``S`` training seeds each (an image's score is its mean over the seeds, so the
            images — not the seeds — are resampled).
        resamples: bootstrap draws of ``N`` images with replacement.

    Returns:
        ``{"gain", "low", "high", "below_zero"}`` in accuracy units (fractions, not points): the gain on
        all images, the 2.5th and 97.5th percentiles of the resampled gains, the fraction of draws ≤ 0.

    Example:
        >>> a, b = np.array([1, 0, 1, 0] * 25), np.array([1, 1, 1, 0] * 25)
        >>> result = paired_accuracy_gain(a, b, resamples=200)
        >>> round(result["gain"], 2), result["low"] > 0
        (0.25, True)
    """
    baseline, candidate = np.asarray(baseline, dtype=float), np.asarray(candidate, dtype=float)
    if baseline.shape != candidate.shape or baseline.ndim not in (1, 2) or len(baseline) == 0:
        raise ValueError(
            f"need two (N,) or (N, S) correctness arrays of one shape: {baseline.shape}, {candidate.shape}"
        )
    count = len(baseline)

    def per_image(scores: np.ndarray) -> np.ndarray:
        return (scores if scores.ndim == 1 else scores.mean(1)).reshape(count, 1, 1)

    return bootstrap_gain(per_image(baseline), per_image(candidate), resamples=resamples, seed=seed,
                          statistic=lambda summed: float(summed[0, 0]) / count)  # fmt: skip
