"""Training to a budget: a wall-clock limit, and a warm-up + cosine learning-rate schedule that ends where
the budget ends (whichever of the step count and the time limit runs out first).

Both are trainer hooks (:class:`~visionkit.engine.trainer.HookBase`). With a time limit the run is not
reproducible step for step (the clock decides when it stops); without one, the schedule depends on the
step count only.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from visionkit.engine.trainer import Trainer
    >>> model = nn.Linear(2, 1)
    >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> data = [(torch.randn(4, 2), torch.randn(4, 1))] * 5
    >>> schedule = WarmupCosine(base_lr=0.1, warmup_steps=2, total_steps=10)
    >>> trainer = Trainer(model, optimizer, data, loss_fn=nn.functional.mse_loss, max_epochs=2,
    ...                   hooks=[schedule, TimeLimit(3600)])
    >>> trainer.train(); round(optimizer.param_groups[0]["lr"], 6)
    0.0
"""

from __future__ import annotations

import math
import time
from typing import Any

from visionkit.engine.trainer import HookBase

__all__ = ["TimeLimit", "WarmupCosine"]


class _Clock(HookBase):
    """Seconds of training so far, carried across a resume (``state_dict``)."""

    def __init__(self) -> None:
        self.previous = 0.0  # seconds trained before a resume
        self.started: float | None = None

    def before_train(self) -> None:
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return self.previous + (time.perf_counter() - self.started if self.started is not None else 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.previous = float(state["elapsed"])


class TimeLimit(_Clock):
    """Stop training cleanly after ``seconds`` of training (checked after every step).

    The trainer finishes the step, then stops; what follows (final evaluation, saving) is the caller's.
    ``stopped`` tells whether the limit was reached.
    """

    def __init__(self, seconds: float) -> None:
        super().__init__()
        if not seconds > 0 or not math.isfinite(seconds):
            raise ValueError(f"seconds must be a finite number > 0, got {seconds}")
        self.seconds = seconds
        self.stopped = False

    def after_step(self) -> None:
        if self.elapsed >= self.seconds:
            self.stopped = True
            self.trainer.should_stop = True


class WarmupCosine(_Clock):
    """Per-step learning rate ``base_lr · warm-up · ½(1 + cos(π · progress))`` on every param group.

    Warm-up rises linearly from ``1/warmup_steps`` to 1 over the first ``warmup_steps`` steps. ``progress``
    is ``step / total_steps``, or — with ``time_limit`` — the larger of that and ``elapsed / time_limit``,
    so that the learning rate reaches its floor when the budget ends. ``final_fraction`` is the floor
    (fraction of ``base_lr``).
    """

    def __init__(
        self,
        base_lr: float,
        warmup_steps: int,
        total_steps: int,
        *,
        time_limit: float | None = None,
        final_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        if total_steps < 1 or warmup_steps < 0:
            raise ValueError(
                f"need total_steps >= 1 and warmup_steps >= 0, got {total_steps}, {warmup_steps}"
            )
        self.base_lr, self.warmup_steps, self.total_steps = base_lr, warmup_steps, total_steps
        self.time_limit, self.final_fraction = time_limit, final_fraction

    def factor(self, step: int, elapsed: float = 0.0) -> float:
        """The multiplier of ``base_lr`` before optimizer step ``step`` (0-based)."""
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps else 1.0
        progress = step / self.total_steps
        if self.time_limit:
            progress = max(progress, elapsed / self.time_limit)
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return warm * (self.final_fraction + (1.0 - self.final_fraction) * cosine)

    def _apply(self) -> None:
        lr = self.base_lr * self.factor(self.trainer.step, self.elapsed)
        for group in self.trainer.optimizer.param_groups:
            group["lr"] = lr

    def before_train(self) -> None:
        super().before_train()
        self._apply()

    def after_step(self) -> None:
        if self.trainer.stepped:
            self._apply()
