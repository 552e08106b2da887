"""Stochastic gradient descent, with heavy-ball momentum or Nesterov momentum (handbook §26).

Batch, stochastic and mini-batch gradient descent are one algorithm: they differ only in how many
examples produce the gradient of each step, i.e. in the ``batch_size`` of the data loader.

* batch gradient descent (BGD): ``batch_size = len(dataset)`` (one step per epoch, exact gradient);
* stochastic gradient descent: ``batch_size = 1`` (one example per step, noisiest gradient);
* mini-batch gradient descent (MBGD): ``1 < batch_size < len(dataset)``, the usual choice (32–256).

The handbook's §26 snippets add the gradient (``x += learning_rate * dx``), which climbs the loss; here
the parameters move *against* the gradient, as the formulas above the snippets say.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from visionkit.engine.optim.base import StepOptimizer, check_range


class SGD(StepOptimizer):
    r"""Gradient descent with optional momentum, dampening, Nesterov momentum and L2 weight decay.

    With gradient :math:`g_t = \nabla f(x_t) + \lambda x_t` (``weight_decay`` :math:`\lambda`):

    * plain: :math:`x_{t+1} = x_t - \alpha g_t`;
    * momentum :math:`\rho`: :math:`v_1 = g_1`, :math:`v_{t+1} = \rho v_t + (1 - d) g_t`,
      :math:`x_{t+1} = x_t - \alpha v_{t+1}` (Polyak's heavy ball, Sutskever et al. 2013 form);
    * Nesterov: :math:`x_{t+1} = x_t - \alpha (g_t + \rho v_{t+1})`, the look-ahead gradient rewritten
      in terms of the current parameters.

    These are the update rules of ``torch.optim.SGD``; the two agree to rounding.

    Args:
        params: parameters or parameter groups (dicts with their own options).
        lr: learning rate :math:`\alpha` > 0.
        momentum: :math:`\rho` in [0, 1).
        dampening: :math:`d`, damps the new gradient in the momentum buffer.
        weight_decay: L2 coefficient :math:`\lambda` added to the gradient.
        nesterov: use Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = SGD([w], lr=0.1)
        >>> (w**2).sum().backward(); _ = opt.step()
        >>> round(w.item(), 6)
        0.8
    """

    supports_sparse_grad = True  # as before: sparse gradients reach the update

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if not lr > 0.0:
            raise ValueError(f"lr must be > 0, got {lr}")
        for name, value in (("momentum", momentum), ("dampening", dampening), ("weight_decay", weight_decay)):
            check_range(name, value, 0.0)
        if nesterov and (momentum <= 0.0 or dampening != 0.0):
            raise ValueError(
                f"nesterov=True needs momentum > 0 and dampening == 0, got momentum={momentum}, "
                f"dampening={dampening}"
            )
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        super().__init__(params, defaults)

    def _update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        direction = param.grad
        assert direction is not None
        if group["weight_decay"] != 0.0:
            direction = direction.add(param, alpha=group["weight_decay"])
        momentum = group["momentum"]
        if momentum != 0.0:
            state = self.state[param]
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = torch.clone(direction).detach()
                state["momentum_buffer"] = buffer
            else:
                buffer.mul_(momentum).add_(direction, alpha=1.0 - group["dampening"])
            direction = direction.add(buffer, alpha=momentum) if group["nesterov"] else buffer
        param.add_(direction, alpha=-group["lr"])


__all__ = ["SGD"]
