"""Loss formulas in running-error arithmetic (tests/running_error.py), operation by operation in each
implementation's order, for the derived bounds of tests/losses (focal losses, BCE with pos_weight).

torch's kernels as modelled here (torch 2.x, aten/src/ATen/native): ``sigmoid(x) = 1 / (1 + exp(−x))``,
``log_sigmoid(x) = min(x, 0) − log1p(exp(−|x|))``, ``binary_cross_entropy_with_logits(x, t) =
(1 − t)·x − log_sigmoid(x)``, ``pow(x, 2) = x·x``, ``pow(x, 0.5) = sqrt(x)``, other exponents a libm-class
pow; ``log_softmax`` along a dimension ``(x − max) − log(Σ exp(x − max))`` and ``softmax``
``exp(x − max) / Σ exp(x − max)`` (the sum in any order).
"""

from __future__ import annotations

import torch

from running_error import Bounded, exact
from running_error_grad import Dual


def sigmoid(x: Bounded | Dual) -> Bounded | Dual:
    """For derivatives, torch's fused backward ``grad·(1 − y)·y`` (:meth:`Dual.sigmoid`)."""
    return x.sigmoid() if isinstance(x, Dual) else 1 / (1 + (-x).exp())


def bce_with_logits(x: Bounded | Dual, t: Bounded, pos_weight: Bounded | None = None) -> Bounded | Dual:
    if isinstance(x, Dual):  # torch's fused backward (sigmoid(x) − t)·grad
        assert pos_weight is None
        return x.bce_with_logits(t)
    log_sigmoid = x.minimum(0.0) - (-x.abs()).exp().log1p()
    if pos_weight is not None:
        log_sigmoid = log_sigmoid * ((pos_weight - 1) * t + 1)
    return (1 - t) * x - log_sigmoid


def bce_textbook(x: Bounded, t: Bounded, pos_weight: Bounded) -> Bounded:
    """``−(w·t·log σ(x) + (1 − t)·log(1 − σ(x)))`` with an explicit probability (a test's reference)."""
    p = sigmoid(x)
    return -(pos_weight * t * p.log() + (1 - t) * (1 - p).log())


def ours(x: Bounded, t: Bounded, alpha: float | None, gamma: float) -> Bounded:
    """visionkit.losses.sigmoid_focal_loss (reduction "none")."""
    loss = bce_with_logits(x, t)
    if gamma != 0:
        loss = loss * (t * sigmoid(-x) + (1 - t) * sigmoid(x)).pow(gamma)
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return loss


def torchvision(x: Bounded, t: Bounded, alpha: float, gamma: float) -> Bounded:
    """torchvision.ops.sigmoid_focal_loss 0.29 (reduction "none"; ``alpha < 0``: no weighting)."""
    p = sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    loss = bce_with_logits(x, t) * (1 - p_t).pow(gamma)
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss


def textbook(x: Bounded, t: Bounded, alpha: float | None, gamma: float) -> Bounded:
    """``−α_t (1 − p_t)^γ log(p_t)`` with an explicit probability (the test's reference)."""
    p = sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = 1.0 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
    return -alpha_t * (1 - p_t).pow(gamma) * p_t.log()


def evaluate(formula, logits: torch.Tensor, targets: torch.Tensor, *args):
    """``formula`` on exact inputs, as a function of the dtype of the evaluation."""
    return lambda dtype: formula(exact(logits, dtype), exact(targets, dtype), *args)


def log_softmax(x: Bounded, dim: int) -> Bounded:
    """Either association of ``x − max − log Σ``: the larger of the two bounds."""
    shifted = x - x.amax(dim).unsqueeze(dim)
    log_total = shifted.exp().sum(dim).log().unsqueeze(dim)
    first = shifted - log_total
    second = x - (x.amax(dim).unsqueeze(dim) + log_total)
    first.error = torch.maximum(first.error, second.error)
    return first


def softmax(x: Bounded, dim: int) -> Bounded:
    shifted = (x - x.amax(dim).unsqueeze(dim)).exp()
    return shifted / shifted.sum(dim).unsqueeze(dim)
