"""Limited-memory BFGS (handbook §26, "second-order methods"; Nocedal & Wright, ch. 7).

L-BFGS approximates the inverse Hessian from the last ``history_size`` pairs of parameter and gradient
differences ``(s_k, y_k)`` and applies it to the gradient with the two-loop recursion, in O(m n) time
and memory instead of the O(n^2) of BFGS. A line search picks the step along the resulting direction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer

from visionkit.engine.optim.line_search import LinePoint, armijo_backtracking, strong_wolfe

LINE_SEARCHES = (None, "strong_wolfe", "armijo")


def two_loop_recursion(
    grad: torch.Tensor, steps: list[torch.Tensor], grad_changes: list[torch.Tensor], gamma: float
) -> torch.Tensor:
    r"""Return :math:`-H_k \nabla f` for the L-BFGS inverse-Hessian approximation :math:`H_k`.

    Args:
        grad: flat gradient, shape ``(n,)``.
        steps: :math:`s_i = x_{i+1} - x_i`, oldest first, each ``(n,)``.
        grad_changes: :math:`y_i = g_{i+1} - g_i`, oldest first, each ``(n,)``.
        gamma: scale of the initial matrix :math:`H^0 = \gamma I`, usually
            :math:`s^\top y / y^\top y` of the newest pair.

    Returns:
        The search direction, shape ``(n,)``.

    Example:
        >>> g = torch.tensor([2.0, 4.0])
        >>> two_loop_recursion(g, [], [], gamma=0.5)  # no history: scaled steepest descent
        tensor([-1., -2.])
    """
    q = grad.clone()
    rhos = [1.0 / float(y.dot(s)) for s, y in zip(steps, grad_changes, strict=True)]
    alphas = [0.0] * len(steps)
    for i in reversed(range(len(steps))):
        alphas[i] = rhos[i] * float(steps[i].dot(q))
        q.add_(grad_changes[i], alpha=-alphas[i])
    r = q.mul_(gamma)
    for i in range(len(steps)):
        beta = rhos[i] * float(grad_changes[i].dot(r))
        r.add_(steps[i], alpha=alphas[i] - beta)
    return r.neg_()


class LBFGS(Optimizer):
    """L-BFGS with a strong-Wolfe (default) or Armijo backtracking line search.

    ``step(closure)`` runs up to ``max_iter`` iterations; the closure must zero the gradients,
    compute the loss, call ``backward()`` and return the loss. All parameters form one group, as the
    method works on the flattened parameter vector.

    Args:
        params: the parameters (a single group).
        lr: initial trial step of the line search (and the fixed step when ``line_search=None``).
        max_iter: iterations per ``step`` call.
        max_eval: closure evaluations per ``step`` call (default ``max_iter * 5 // 4``).
        tolerance_grad: stop when the largest gradient entry is at most this.
        tolerance_change: stop when the step or the loss change is at most this.
        history_size: number of ``(s, y)`` pairs kept.
        line_search: ``"strong_wolfe"``, ``"armijo"`` or ``None`` (fixed step ``lr``).

    Example:
        >>> x = torch.nn.Parameter(torch.tensor([3.0, -2.0], dtype=torch.float64))
        >>> opt = LBFGS([x], max_iter=50)
        >>> def closure():
        ...     opt.zero_grad(); loss = ((x - 1) ** 2).sum(); loss.backward(); return loss
        >>> _ = opt.step(closure)
        >>> [round(v, 9) for v in x.detach().tolist()]
        [1.0, 1.0]
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search: str | None = "strong_wolfe",
    ) -> None:
        if not lr > 0.0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if line_search not in LINE_SEARCHES:
            raise ValueError(f"line_search must be one of {LINE_SEARCHES}, got {line_search!r}")
        if max_iter < 1 or history_size < 1:
            raise ValueError(f"max_iter and history_size must be >= 1, got {max_iter} and {history_size}")
        defaults = {
            "lr": lr,
            "max_iter": max_iter,
            "max_eval": max_eval if max_eval is not None else max_iter * 5 // 4,
            "tolerance_grad": tolerance_grad,
            "tolerance_change": tolerance_change,
            "history_size": history_size,
            "line_search": line_search,
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(f"LBFGS supports one parameter group, got {len(self.param_groups)}")
        self._params: list[torch.Tensor] = self.param_groups[0]["params"]

    def _flat_grad(self) -> torch.Tensor:
        grads = [torch.zeros_like(p).view(-1) if p.grad is None else p.grad.reshape(-1) for p in self._params]
        return torch.cat(grads)

    def _flat_params(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self._params])

    def _set_params(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self._params:
            count = p.numel()
            p.copy_(flat[offset : offset + count].view_as(p))
            offset += count

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        """Run up to ``max_iter`` L-BFGS iterations; returns the loss from the first closure call."""
        if closure is None:
            raise ValueError("LBFGS.step needs a closure that re-evaluates the loss and returns it")
        group = self.param_groups[0]
        state = self.state[self._params[0]]
        state.setdefault("steps", [])
        state.setdefault("grad_changes", [])
        state.setdefault("iterations", 0)
        state.setdefault("evaluations", 0)

        def evaluate_at(origin: torch.Tensor, direction: torch.Tensor) -> Callable[[float], Any]:
            def evaluate(step: float) -> tuple[float, torch.Tensor]:
                self._set_params(origin + step * direction)
                with torch.enable_grad():
                    loss = float(torch.as_tensor(closure()).detach())
                return loss, self._flat_grad()

            return evaluate

        with torch.enable_grad():
            first_loss = closure()
        loss, grad = float(torch.as_tensor(first_loss).detach()), self._flat_grad()
        evaluations = 1
        if grad.abs().max() <= group["tolerance_grad"]:
            return first_loss
        for _ in range(group["max_iter"]):
            state["iterations"] += 1
            direction = self._direction(state, grad)
            slope = float(grad.dot(direction))
            if slope > -group["tolerance_change"]:
                break  # not a descent direction any more
            step = group["lr"]
            if state["iterations"] == 1:
                step = min(1.0, 1.0 / float(grad.abs().sum())) * group["lr"]
            origin = self._flat_params()
            point, used = self._line_search(
                group, evaluate_at(origin, direction), direction, loss, grad, slope, step
            )
            evaluations += used
            self._set_params(origin + point.step * direction)
            state["last_step"] = point.step * direction
            state["last_grad"] = grad
            previous_loss, loss, grad = loss, point.loss, point.grad
            if (
                evaluations >= group["max_eval"]
                or grad.abs().max() <= group["tolerance_grad"]
                or float(state["last_step"].abs().max()) <= group["tolerance_change"]
                or abs(loss - previous_loss) < group["tolerance_change"]
            ):
                break
        state["evaluations"] += evaluations
        return first_loss

    def _direction(self, state: dict[str, Any], grad: torch.Tensor) -> torch.Tensor:
        """Store the newest curvature pair (if it keeps H positive definite), then run the two loops."""
        steps, changes = state["steps"], state["grad_changes"]
        gamma = 1.0
        if "last_step" in state:
            s, y = state["last_step"], grad - state["last_grad"]
            if float(y.dot(s)) > 1e-10:
                if len(steps) == self.param_groups[0]["history_size"]:
                    steps.pop(0)
                    changes.pop(0)
                steps.append(s)
                changes.append(y)
        if steps:
            gamma = float(steps[-1].dot(changes[-1])) / float(changes[-1].dot(changes[-1]))
        return two_loop_recursion(grad, steps, changes, gamma)

    def _line_search(
        self,
        group: dict[str, Any],
        evaluate: Callable[[float], tuple[float, torch.Tensor]],
        direction: torch.Tensor,
        loss: float,
        grad: torch.Tensor,
        slope: float,
        step: float,
    ) -> tuple[LinePoint, int]:
        start = LinePoint(0.0, loss, grad, slope)
        if group["line_search"] == "strong_wolfe":
            return strong_wolfe(evaluate, direction, start, step, tolerance_change=group["tolerance_change"])
        if group["line_search"] == "armijo":
            return armijo_backtracking(evaluate, direction, start, step)
        new_loss, new_grad = evaluate(step)
        return LinePoint(step, new_loss, new_grad, float(new_grad.dot(direction))), 1


__all__ = ["LBFGS", "two_loop_recursion"]
