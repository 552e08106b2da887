"""The one timer of the benchmark scripts: median wall time of repeated calls, in milliseconds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def median_ms(fn: Callable[[], object], repeats: int, *, device: str = "cpu", warmup: bool = True) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn`` after one warm-up call (``warmup=False`` when the
    caller already made the first call); on ``device="cuda"`` each call is bracketed by synchronisation."""
    if warmup:
        fn()
    samples = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)
