"""What every visionkit optimizer shares: argument range checks and the closure-then-update ``step``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["StepOptimizer", "check_range"]


def check_range(
    name: str, value: float, low: float, high: float | None = None, *, open_low: bool = False
) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``low`` ≤ ``value`` (< with ``open_low``) < ``high``."""
    ok = value > low if open_low else value >= low
    if high is not None:
        ok = ok and value < high
    if not ok:
        bound = f"{'>' if open_low else '>='} {low}" + (f" and < {high}" if high is not None else "")
        raise ValueError(f"{name} must be {bound}, got {value}")


class StepOptimizer(Optimizer):
    """Shared ``step``: evaluate the closure, then call ``_update`` for every parameter with a gradient.

    Subclasses implement ``_update(param, group)``; ``supports_sparse_grad`` says whether a sparse gradient
    reaches ``_update`` or is refused with a ``TypeError``.
    """

    supports_sparse_grad = False

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:  # type: ignore[override]
        """Take one step; ``closure`` (optional) re-evaluates the loss and returns it."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                if param.grad.is_sparse and not self.supports_sparse_grad:
                    raise TypeError(f"{type(self).__name__} does not support sparse gradients")
                self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        raise NotImplementedError
