"""Adaptive-learning-rate optimizers: Adagrad, RMSprop, Adam and AdamW (handbook §26).

Each keeps per-parameter statistics of past gradients and divides the step by a running measure of
the gradient's size, so that rarely-updated or small-gradient directions move faster.

The handbook's bias-corrected Adam snippet computes the unbiased moments and then steps with the
biased ones, and starts ``t`` at 0, which divides by ``1 - beta**0 = 0``. Here ``t`` counts steps
from 1 and the update uses the bias-corrected moments, as in Kingma & Ba (2015), Algorithm 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from visionkit.engine.optim.base import StepOptimizer, check_range


class Adagrad(StepOptimizer):
    r"""Adagrad (Duchi et al., 2011): divide by the root of the *sum* of all past squared gradients.

    :math:`G_t = G_{t-1} + g_t^2`, :math:`x_{t+1} = x_t - \frac{\alpha_t}{\sqrt{G_t} + \epsilon} g_t`,
    with :math:`\alpha_t = \alpha / (1 + (t-1)\,\mathrm{lr\_decay})`. The step only shrinks, which
    suits convex problems and can stall on non-convex ones (handbook §26). Same rule as
    ``torch.optim.Adagrad``.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = Adagrad([w], lr=0.5)
        >>> (w**2).sum().backward(); _ = opt.step()
        >>> round(w.item(), 4)  # first step moves by lr * sign(g)
        0.5
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        check_range("lr", lr, 0.0, open_low=True)
        for name, value in (
            ("lr_decay", lr_decay),
            ("weight_decay", weight_decay),
            ("initial_accumulator_value", initial_accumulator_value),
            ("eps", eps),
        ):
            check_range(name, value, 0.0)
        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "eps": eps,
        }
        super().__init__(params, defaults)

    def _update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["sum"] = torch.full_like(param, group["initial_accumulator_value"])
        state["step"] += 1
        step = state["step"].item()
        grad = param.grad
        assert grad is not None
        if group["weight_decay"] != 0.0:
            grad = grad.add(param, alpha=group["weight_decay"])
        step_lr = group["lr"] / (1 + (step - 1) * group["lr_decay"])
        state["sum"].addcmul_(grad, grad, value=1.0)
        denominator = state["sum"].sqrt().add_(group["eps"])
        param.addcdiv_(grad, denominator, value=-step_lr)


class RMSprop(StepOptimizer):
    r"""RMSprop (Hinton, 2012): divide by the root of a *moving average* of squared gradients.

    :math:`s_t = \beta s_{t-1} + (1-\beta) g_t^2`, :math:`x_{t+1} = x_t - \alpha g_t / (\sqrt{s_t} +
    \epsilon)`. ``centered`` subtracts the squared moving mean of the gradient (an estimate of its
    variance); ``momentum`` accumulates the scaled step. Same rule as ``torch.optim.RMSprop``
    (``alpha`` is :math:`\beta`).

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = RMSprop([w], lr=0.01, alpha=0.99)
        >>> (w**2).sum().backward(); _ = opt.step()
        >>> round(w.item(), 4)  # 1 - 0.01 * 2 / sqrt(0.01 * 4)
        0.9
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        check_range("lr", lr, 0.0, open_low=True)
        check_range("alpha", alpha, 0.0)
        for name, value in (("eps", eps), ("weight_decay", weight_decay), ("momentum", momentum)):
            check_range(name, value, 0.0)
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "centered": centered,
        }
        super().__init__(params, defaults)

    def _update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["square_avg"] = torch.zeros_like(param)
            if group["momentum"] > 0:
                state["momentum_buffer"] = torch.zeros_like(param)
            if group["centered"]:
                state["grad_avg"] = torch.zeros_like(param)
        state["step"] += 1
        grad = param.grad
        assert grad is not None
        if group["weight_decay"] != 0.0:
            grad = grad.add(param, alpha=group["weight_decay"])
        alpha = group["alpha"]
        square_avg = state["square_avg"]
        square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg.lerp_(grad, 1 - alpha)
            average = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
        else:
            average = square_avg.sqrt()
        average = average.add_(group["eps"])
        if group["momentum"] > 0:
            buffer = state["momentum_buffer"]
            buffer.mul_(group["momentum"]).addcdiv_(grad, average)
            param.add_(buffer, alpha=-group["lr"])
        else:
            param.addcdiv_(grad, average, value=-group["lr"])


class Adam(StepOptimizer):
    r"""Adam (Kingma & Ba, 2015) with bias correction; ``t`` starts at 1.

    :math:`m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t`, :math:`v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2`,
    :math:`\hat m_t = m_t / (1-\beta_1^t)`, :math:`\hat v_t = v_t / (1-\beta_2^t)`,
    :math:`x_{t+1} = x_t - \alpha \hat m_t / (\sqrt{\hat v_t} + \epsilon)`.
    ``weight_decay`` adds :math:`\lambda x_t` to :math:`g_t` (L2 regularisation, which the adaptive
    denominator then rescales — see :class:`AdamW` for the decoupled form). ``amsgrad`` uses the
    running maximum of :math:`v_t` (Reddi et al., 2018). Same rule as ``torch.optim.Adam``.

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = Adam([w], lr=0.1)
        >>> (w**2).sum().backward(); _ = opt.step()
        >>> round(w.item(), 4)  # the first bias-corrected step has size lr
        0.9
    """

    decoupled_weight_decay = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        check_range("lr", lr, 0.0, open_low=True)
        check_range("betas[0]", betas[0], 0.0, 1.0)
        check_range("betas[1]", betas[1], 0.0, 1.0)
        check_range("eps", eps, 0.0)
        check_range("weight_decay", weight_decay, 0.0)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
        }
        super().__init__(params, defaults)

    def _update(self, param: torch.Tensor, group: dict[str, Any]) -> None:
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"].item()
        beta1, beta2 = group["betas"]
        grad = param.grad
        assert grad is not None
        if group["weight_decay"] != 0.0:
            if self.decoupled_weight_decay:
                param.mul_(1 - group["lr"] * group["weight_decay"])
            else:
                grad = grad.add(param, alpha=group["weight_decay"])
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad.conj(), value=1 - beta2)
        if group["amsgrad"]:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            second_moment = state["max_exp_avg_sq"]
        else:
            second_moment = exp_avg_sq
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = group["lr"] / bias_correction1
        # ``** 0.5`` (C pow), not math.sqrt: the same Python operation as torch.optim.Adam, so the two
        # take bit-identical steps (pow and sqrt may differ in the last bit on some libms)
        denominator = (second_moment.sqrt() / bias_correction2**0.5).add_(group["eps"])
        param.addcdiv_(exp_avg, denominator, value=-step_size)


class AdamW(Adam):
    r"""AdamW (Loshchilov & Hutter, 2019): Adam with *decoupled* weight decay.

    Before the Adam step the weights shrink by :math:`(1 - \alpha\lambda)`, independently of the
    adaptive denominator, so every weight decays at the same relative rate. Same rule as
    ``torch.optim.AdamW`` (default ``weight_decay=1e-2``).

    Example:
        >>> w = torch.nn.Parameter(torch.tensor([1.0]))
        >>> opt = AdamW([w], lr=0.1, weight_decay=0.5)
        >>> (w**2).sum().backward(); _ = opt.step()
        >>> round(w.item(), 4)  # 1 * (1 - 0.05) - 0.1
        0.85
    """

    decoupled_weight_decay = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


__all__ = ["Adagrad", "Adam", "AdamW", "RMSprop"]
