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

import torch
from torch import Tensor, nn

from visionkit.analysis import summary

__all__ = ["macs_and_params", "paired_latency_ms", "serialized_bytes"]


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
