"""Learning-rate schedules in closed form, as ``torch.optim.lr_scheduler.LRScheduler`` subclasses (§29).

Every schedule is a pure function ``lr_at(base_lr, t)`` of the base learning rate of a parameter group
and the scheduler's step counter ``t`` (``last_epoch``: 0 after construction, +1 per ``step()``), so
the learning rate never drifts from rounding and a resumed run gets exactly the same values. Step
per epoch or per iteration, as you like: ``t`` counts calls to ``step()``.

==========================  =====================================================
``StepLR``                  :math:`\\alpha_0 \\gamma^{\\lfloor t / s \\rfloor}` (discrete staircase)
``MultiStepLR``             :math:`\\alpha_0 \\gamma^{\\#\\{m_i \\le t\\}}`
``ExponentialLR``           :math:`\\alpha_0 \\gamma^{t}` (handbook: :math:`0.95^{epoch} \\alpha_0`)
``ExponentialDecayLR``      :math:`\\alpha_0 e^{-k t}`
``InverseTimeLR``           :math:`\\alpha_0 / (1 + k t)` (1/t decay)
``InverseSqrtLR``           :math:`k / \\sqrt{t + 1}` (handbook :math:`k/\\sqrt{epoch}`, epochs from 1)
``CosineLR``                :math:`\\eta_{min} + (\\alpha_0 - \\eta_{min})(1 + \\cos(\\pi t / T))/2`
``LinearWarmup(schedule)``  linear ramp for ``warmup_steps``, then ``schedule`` shifted by them
==========================  =====================================================
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class ClosedFormLR(LRScheduler):
    """Base class: a scheduler whose learning rate is ``lr_at(base_lr, last_epoch)`` for every group."""

    def lr_at(self, base_lr: float, step: int) -> float:
        """The learning rate of a group whose initial learning rate is ``base_lr``, at step ``step``."""
        raise NotImplementedError

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [self.lr_at(float(base_lr), self.last_epoch) for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")


class StepLR(ClosedFormLR):
    """Discrete staircase: multiply by ``gamma`` every ``step_size`` steps (handbook: halve every t).

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> schedule = StepLR(opt, step_size=2, gamma=0.5)
        >>> [schedule.lr_at(1.0, t) for t in range(5)]
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """

    def __init__(
        self, optimizer: Optimizer, step_size: int, gamma: float = 0.5, last_epoch: int = -1
    ) -> None:
        _positive("step_size", step_size)
        _positive("gamma", gamma)
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:
        return base_lr * self.gamma ** (step // self.step_size)


class MultiStepLR(ClosedFormLR):
    """Multiply by ``gamma`` at each milestone step (sorted; repeated milestones count twice).

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> schedule = MultiStepLR(opt, milestones=[1, 3], gamma=0.1)
        >>> [round(schedule.lr_at(1.0, t), 6) for t in range(4)]
        [1.0, 0.1, 0.1, 0.01]
    """

    def __init__(
        self, optimizer: Optimizer, milestones: Sequence[int], gamma: float = 0.1, last_epoch: int = -1
    ) -> None:
        if any(m < 0 for m in milestones):
            raise ValueError(f"milestones must be >= 0, got {list(milestones)}")
        _positive("gamma", gamma)
        self.milestones, self.gamma = sorted(int(m) for m in milestones), float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, step)


class ExponentialLR(ClosedFormLR):
    """``base_lr * gamma ** t`` (the handbook's ``0.95 ** epoch_num * alpha_0``).

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
        >>> ExponentialLR(opt, gamma=0.5).lr_at(2.0, 3)
        0.25
    """

    def __init__(self, optimizer: Optimizer, gamma: float = 0.95, last_epoch: int = -1) -> None:
        _positive("gamma", gamma)
        self.gamma = float(gamma)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:
        return base_lr * self.gamma**step


class ExponentialDecayLR(ClosedFormLR):
    """``base_lr * exp(-k t)``.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> round(ExponentialDecayLR(opt, k=math.log(2)).lr_at(1.0, 2), 12)
        0.25
    """

    def __init__(self, optimizer: Optimizer, k: float, last_epoch: int = -1) -> None:
        _non_negative("k", k)
        self.k = float(k)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:
        return base_lr * math.exp(-self.k * step)


class InverseTimeLR(ClosedFormLR):
    """1/t decay: ``base_lr / (1 + k t)``.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> InverseTimeLR(opt, k=0.5).lr_at(1.0, 2)
        0.5
    """

    def __init__(self, optimizer: Optimizer, k: float, last_epoch: int = -1) -> None:
        _non_negative("k", k)
        self.k = float(k)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:
        return base_lr / (1.0 + self.k * step)


class InverseSqrtLR(ClosedFormLR):
    """``k / sqrt(t + 1)``: the handbook's ``k / sqrt(epoch_num)`` with epochs counted from 1.

    ``k=None`` uses each group's base learning rate as ``k`` (so per-group rates keep their ratios).

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> InverseSqrtLR(opt, k=0.3).lr_at(1.0, 3)
        0.15
    """

    def __init__(self, optimizer: Optimizer, k: float | None = None, last_epoch: int = -1) -> None:
        if k is not None:
            _positive("k", k)
        self.k = None if k is None else float(k)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:
        scale = base_lr if self.k is None else self.k
        return scale / math.sqrt(step + 1)


class CosineLR(ClosedFormLR):
    """Cosine annealing from ``base_lr`` to ``min_lr`` over ``total_steps``, then constant ``min_lr``.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> [round(CosineLR(opt, total_steps=4).lr_at(1.0, t), 4) for t in range(6)]
        [1.0, 0.8536, 0.5, 0.1464, 0.0, 0.0]
    """

    def __init__(
        self, optimizer: Optimizer, total_steps: int, min_lr: float = 0.0, last_epoch: int = -1
    ) -> None:
        _positive("total_steps", total_steps)
        _non_negative("min_lr", min_lr)
        self.total_steps, self.min_lr = int(total_steps), float(min_lr)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:
        progress = min(step, self.total_steps) / self.total_steps
        return self.min_lr + (base_lr - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2


class LinearWarmup(ClosedFormLR):
    """Linear warm-up composed with any closed-form schedule.

    For ``t < warmup_steps`` the rate ramps linearly from ``start_factor * base_lr`` towards
    ``base_lr``; from then on it is ``schedule.lr_at(base_lr, t - warmup_steps)``. Pass ``schedule=None``
    for a constant rate after warm-up. Construct the inner schedule first, on the same optimizer.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        >>> schedule = LinearWarmup(opt, StepLR(opt, step_size=2, gamma=0.5), warmup_steps=2)
        >>> [schedule.lr_at(1.0, t) for t in range(6)]
        [0.0, 0.5, 1.0, 1.0, 0.5, 0.5]
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedule: ClosedFormLR | None,
        warmup_steps: int,
        start_factor: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        _positive("warmup_steps", warmup_steps)
        if not 0.0 <= start_factor <= 1.0:
            raise ValueError(f"start_factor must be in [0, 1], got {start_factor}")
        if schedule is not None and schedule.optimizer is not optimizer:
            raise ValueError("schedule must be built on the same optimizer as LinearWarmup")
        self.schedule, self.warmup_steps, self.start_factor = schedule, int(warmup_steps), float(start_factor)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:
        if step < self.warmup_steps:
            return base_lr * (self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps)
        if self.schedule is None:
            return base_lr
        return self.schedule.lr_at(base_lr, step - self.warmup_steps)

    def state_dict(self) -> dict[str, Any]:
        state = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "schedule")}
        state["schedule"] = None if self.schedule is None else self.schedule.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        inner = state.pop("schedule", None)
        self.__dict__.update(state)
        if self.schedule is not None and inner is not None:
            self.schedule.load_state_dict(inner)


__all__ = [
    "ClosedFormLR",
    "CosineLR",
    "ExponentialDecayLR",
    "ExponentialLR",
    "InverseSqrtLR",
    "InverseTimeLR",
    "LinearWarmup",
    "MultiStepLR",
    "StepLR",
]
