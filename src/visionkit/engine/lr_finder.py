"""Learning-rate range test (Smith 2017, "Cyclical Learning Rates", §3.3) — handbook §6 tuning.

Train for a few steps while the learning rate grows geometrically from ``start_lr`` to ``end_lr``;
record the (exponentially smoothed) loss; stop once it exceeds ``diverge_factor`` times the best loss.
A good learning rate lies where the loss falls fastest, well below the one where it blows up. The
model and optimizer are restored afterwards, so the test leaves no trace.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from visionkit.engine.checkpoint import capture_rng_state, restore_rng_state
from visionkit.engine.trainer import move_to_device


@dataclass
class LRFinderResult:
    """Learning rates tried, smoothed losses, and the suggestion (steepest descent of the loss)."""

    lrs: list[float]
    losses: list[float]
    suggestion: float
    diverged_at: float | None


def _suggest(lrs: list[float], losses: list[float]) -> float:
    """The learning rate where the smoothed loss falls fastest per log-lr (ignoring the last points)."""
    if len(lrs) < 3:
        return lrs[0]
    logs = [math.log10(lr) for lr in lrs]
    slopes = [(losses[i + 1] - losses[i - 1]) / (logs[i + 1] - logs[i - 1]) for i in range(1, len(lrs) - 1)]
    return lrs[1 + min(range(len(slopes)), key=slopes.__getitem__)]


def lr_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable[Any],
    loss_fn: Callable[[Any, Any], torch.Tensor],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.9,
    diverge_factor: float = 4.0,
) -> LRFinderResult:
    """Run the range test over batches ``(inputs, targets)`` of ``loader`` (cycled as needed).

    Returns:
        :class:`LRFinderResult`; ``model``, ``optimizer`` and the RNG states are as they were before.

    Example:
        >>> model = nn.Linear(2, 1)
        >>> data = [(torch.randn(16, 2), torch.randn(16, 1))]
        >>> result = lr_range_test(model, torch.optim.SGD(model.parameters(), lr=1.0), data,
        ...                        nn.functional.mse_loss, num_steps=30)
        >>> result.lrs[0] == 1e-7 and result.suggestion > 1e-7
        True
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    rng, was_training = capture_rng_state(), model.training
    device = next(model.parameters()).device
    ratio = (end_lr / start_lr) ** (1 / (num_steps - 1))
    lrs: list[float] = []
    losses: list[float] = []
    average, best, diverged = 0.0, math.inf, None
    model.train()
    try:
        batches: Iterator[Any] = iter(())
        for step in range(num_steps):
            try:
                inputs, targets = next(batches)
            except StopIteration:
                batches = iter(loader)
                inputs, targets = next(batches)
            lr = start_lr * ratio**step
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad()
            loss = loss_fn(model(move_to_device(inputs, device)), move_to_device(targets, device))
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            average = smoothing * average + (1 - smoothing) * value
            smoothed = average / (1 - smoothing ** (step + 1))  # bias-corrected like Adam's moments
            lrs.append(lr)
            losses.append(smoothed)
            best = min(best, smoothed)
            if not math.isfinite(smoothed) or smoothed > diverge_factor * best:
                diverged = lr
                break
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        model.train(was_training)
        restore_rng_state(rng)
    usable = len(losses) - 1 if diverged is not None else len(losses)
    return LRFinderResult(lrs, losses, _suggest(lrs[:usable], losses[:usable]), diverged)


def plot_lr_finder(result: LRFinderResult, path: str | os.PathLike[str]) -> Path:
    """Save loss vs learning rate (log x-axis) with the suggestion marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(result.lrs, result.losses)
    axis.axvline(result.suggestion, color="red", linestyle="--", label=f"suggested {result.suggestion:.2g}")
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("smoothed loss")
    axis.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


__all__ = ["LRFinderResult", "lr_range_test", "plot_lr_finder"]
