"""Closed-form learning-rate schedules: formulas, torch's recursive schedulers, warm-up, state_dict.

Tolerances (tests/tolerances.py): our closed forms and the formulas below run the same Python float
operations, except the cosine's argument (π·t/T against π·(t/T)): exact, or for the cosine each within
:func:`_cosine_bound` of the exact value. Against torch's recursive schedulers the rounding counts differ
per schedule (a product per step, C pow at 1 ulp = 2 roundings) and the cosine recursion gets a running
error bound (:func:`_torch_cosine_bounds`).
"""

from __future__ import annotations

import io
import math

import pytest
import torch

from tolerances import LIBM_ULPS, eps, gamma, unit_roundoff
from visionkit.engine import schedules as S

BASE_LRS = (0.1, 0.03)


def _optimizer() -> torch.optim.Optimizer:
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    return torch.optim.SGD(
        [{"params": [params[0]], "lr": BASE_LRS[0]}, {"params": [params[1]], "lr": BASE_LRS[1]}]
    )


# name -> (factory, formula(base_lr, t)) written independently of the implementation
FORMULAS = {
    "step": (lambda o: S.StepLR(o, step_size=3, gamma=0.5), lambda a, t: a * 0.5 ** (t // 3)),
    "multistep": (
        lambda o: S.MultiStepLR(o, milestones=[7, 2, 7], gamma=0.1),
        lambda a, t: a * 0.1 ** ((t >= 2) + 2 * (t >= 7)),
    ),
    "exponential": (lambda o: S.ExponentialLR(o, gamma=0.95), lambda a, t: 0.95**t * a),
    "exp_decay": (lambda o: S.ExponentialDecayLR(o, k=0.2), lambda a, t: a * math.exp(-0.2 * t)),
    "inverse_time": (lambda o: S.InverseTimeLR(o, k=0.5), lambda a, t: a / (1 + 0.5 * t)),
    "inverse_sqrt": (lambda o: S.InverseSqrtLR(o, k=0.2), lambda a, t: 0.2 / math.sqrt(t + 1)),
    "inverse_sqrt_base": (lambda o: S.InverseSqrtLR(o), lambda a, t: a / math.sqrt(t + 1)),
    "cosine": (
        lambda o: S.CosineLR(o, total_steps=10, min_lr=1e-3),
        lambda a, t: 1e-3 + (a - 1e-3) * (1 + math.cos(math.pi * min(t, 10) / 10)) / 2,
    ),
}


def _run(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> list[list[float]]:
    seen = []
    for _ in range(steps):
        seen.append([group["lr"] for group in scheduler.optimizer.param_groups])
        scheduler.optimizer.step()
        scheduler.step()
    return seen


F64 = torch.float64
U = unit_roundoff(F64)


def _cosine_bound(base_lr: float, min_lr: float, t: int, total: int, value: float) -> float:
    """|m + (a − m)(1 + ĉ)/2 − exact| for the closed form: the argument π·t/T rounded 3 times (π itself,
    the product, the division) moves cos by ≤ γ₃·πt/T, cos adds 1 ulp (≤ ε); 1 + ĉ, a − m and the product
    round once each (≤ 8u of (a − m)/2 with |1 + cos| ≤ 2), + m once (u|value|)."""
    delta_c = gamma(3, F64) * math.pi * min(t, total) / total + LIBM_ULPS * eps(F64)
    return (base_lr - min_lr) * (delta_c + 8 * U) / 2 + U * abs(value)


def _assert_formula(name: str, base_lr: float, t: int, lr: float, expected: float) -> None:
    if name == "cosine":  # the argument is rounded differently: each side within _cosine_bound
        bound = _cosine_bound(base_lr, 1e-3, t, 10, lr) + _cosine_bound(base_lr, 1e-3, t, 10, expected)
        assert abs(lr - expected) <= bound, (t, lr, expected)
    else:  # the same float operations in the same order
        assert lr == expected, (name, t)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_closed_form_matches_formula_per_group(name: str) -> None:
    factory, formula = FORMULAS[name]
    seen = _run(factory(_optimizer()), 15)
    for t, lrs in enumerate(seen):
        for base_lr, lr in zip(BASE_LRS, lrs, strict=True):
            _assert_formula(name, base_lr, t, lr, formula(base_lr, t))


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_linear_warmup_composes(name: str) -> None:
    factory, formula = FORMULAS[name]
    optimizer = _optimizer()
    scheduler = S.LinearWarmup(optimizer, factory(optimizer), warmup_steps=4, start_factor=0.1)
    for t, lrs in enumerate(_run(scheduler, 15)):
        for base_lr, lr in zip(BASE_LRS, lrs, strict=True):
            if t < 4:  # start + (1 − start)·t/W with 1 − 0.1 == 0.9 in float64: the same operations
                assert lr == base_lr * (0.1 + 0.9 * t / 4)
            else:
                _assert_formula(name, base_lr, t - 4, lr, formula(base_lr, t - 4))


def _torch_cosine_bounds(base_lr: float, min_lr: float, total: int, steps: int) -> list[float]:
    """Running error bound of CosineAnnealingLR's recursion
    ``l_t = fl(fl(fl(1 + ĉ_t)/fl(1 + ĉ_(t−1)))·fl(l_(t−1) − m)) + m``, ĉ_t = cos(fl(fl(π·t)/T)), against
    the exact ``m + (a − m)(1 + cos(πt/T))/2`` (which the exact recursion reproduces), starting exactly
    at ``a``: N̂_t = fl(1 + ĉ_t) within ΔN_t = γ₃·πt/T + ε + u|N̂_t|; the ratio within
    (ΔN_t + q·ΔN_(t−1))/(N̂_(t−1) − ΔN_(t−1)) + u|q̂|; then the subtraction, product and sum."""
    bounds, error, lr = [0.0], 0.0, base_lr
    for t in range(1, steps):
        numerator = 1 + math.cos(math.pi * t / total)
        denominator = 1 + math.cos(math.pi * (t - 1) / total)
        delta_n = gamma(3, F64) * math.pi * t / total + LIBM_ULPS * eps(F64) + U * abs(numerator)
        delta_d = gamma(3, F64) * math.pi * (t - 1) / total + LIBM_ULPS * eps(F64) + U * abs(denominator)
        ratio = numerator / denominator
        delta_q = (delta_n + (abs(ratio) + 1) * delta_d) / (denominator - delta_d) + U * abs(ratio)
        difference = lr - min_lr
        delta_p = delta_q * abs(difference) + (abs(ratio) + delta_q) * (error + U * abs(difference))
        lr = ratio * difference + min_lr
        error = delta_p + U * abs(ratio * difference) + U * abs(lr)
        bounds.append(error)
    return bounds


def _pow_steps(count: int) -> int:
    """Roundings of a power by C pow: exact for exponents 0 and 1, else 1 ulp (2 roundings)."""
    return 0 if count in (0, 1) else 2


TORCH_PAIRS = {
    # name: (ours, torch's, bound(base_lr, t, value, ours_value) of |ours − torch's|)
    "step": (lambda o: S.StepLR(o, 3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5), None),
    "multistep": (
        lambda o: S.MultiStepLR(o, [2, 5, 5], 0.3),
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5, 5], 0.3),
        # ours a·pow(0.3, k) (+1 rounding); torch a·0.3 at t = 2, then ·pow(0.3, 2) at t = 5
        lambda a, t, v: (gamma(3, F64) + gamma((t >= 2) + (t >= 5) * 3, F64)) * abs(v),
    ),
    "exponential": (
        lambda o: S.ExponentialLR(o, 0.9),
        lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9),
        lambda a, t, v: (gamma(_pow_steps(t) + 1, F64) + gamma(max(t, 1), F64)) * abs(v),  # t products
    ),
    "cosine": (
        lambda o: S.CosineLR(o, 12, 1e-3),
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 12, 1e-3),
        lambda a, t, v: _cosine_bound(a, 1e-3, t, 12, v) + _torch_cosine_bounds(a, 1e-3, 12, 12)[t],
    ),
    "inverse_time": (
        lambda o: S.InverseTimeLR(o, 0.5),
        lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1 / (1 + 0.5 * t)),
        lambda a, t, v: gamma(3, F64) * abs(v),  # a/(1 + t/2) once; a·(1/(1 + t/2)) twice
    ),
}


@pytest.mark.parametrize("name", sorted(TORCH_PAIRS))
def test_equals_torch_schedulers(name: str) -> None:
    ours, reference, bound = TORCH_PAIRS[name]
    a, b = _run(ours(_optimizer()), 12), _run(reference(_optimizer()), 12)
    for t, (lrs_a, lrs_b) in enumerate(zip(a, b, strict=True)):
        for base_lr, lr_a, lr_b in zip(BASE_LRS, lrs_a, lrs_b, strict=True):
            if bound is None:  # halvings: exact on both sides
                assert lr_a == lr_b, t
            else:
                assert abs(lr_a - lr_b) <= bound(base_lr, t, lr_a), (t, lr_a, lr_b)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_state_dict_round_trip(name: str) -> None:
    factory, _ = FORMULAS[name]
    uninterrupted = _run(factory(_optimizer()), 12)
    optimizer = _optimizer()
    first = S.LinearWarmup(optimizer, factory(optimizer), warmup_steps=2)
    _run(first, 5)
    state = {"optimizer": optimizer.state_dict(), "scheduler": first.state_dict()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    # a fresh scheduler of different settings takes the saved ones
    optimizer = _optimizer()
    resumed = S.LinearWarmup(optimizer, factory(optimizer), warmup_steps=9)
    optimizer.load_state_dict(state["optimizer"])
    resumed.load_state_dict(state["scheduler"])
    assert resumed.last_epoch == 5 and resumed.warmup_steps == 2
    continued = _run(resumed, 7)
    reference_optimizer = _optimizer()
    reference = S.LinearWarmup(reference_optimizer, factory(reference_optimizer), warmup_steps=2)
    assert continued == _run(reference, 12)[5:]
    assert len(uninterrupted) == 12


def test_cosine_stays_at_minimum_after_total_steps() -> None:
    scheduler = S.CosineLR(_optimizer(), total_steps=3, min_lr=0.01)
    for t, lrs in enumerate(_run(scheduler, 6)[3:], start=3):  # cos(π) within the closed form's bound
        assert abs(lrs[0] - 0.01) <= _cosine_bound(BASE_LRS[0], 0.01, t, 3, lrs[0])


@pytest.mark.parametrize(
    ("factory", "argument"),
    [
        (lambda o: S.StepLR(o, step_size=0), "step_size"),
        (lambda o: S.StepLR(o, step_size=2, gamma=0.0), "gamma"),
        (lambda o: S.MultiStepLR(o, milestones=[-1]), "milestones"),
        (lambda o: S.ExponentialDecayLR(o, k=-1.0), "k"),
        (lambda o: S.CosineLR(o, total_steps=0), "total_steps"),
        (lambda o: S.LinearWarmup(o, None, warmup_steps=0), "warmup_steps"),
        (lambda o: S.LinearWarmup(o, None, warmup_steps=2, start_factor=2.0), "start_factor"),
        (lambda o: S.LinearWarmup(o, S.StepLR(_optimizer(), 2), warmup_steps=2), "same optimizer"),
    ],
)
def test_bad_arguments_are_named(factory, argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        factory(_optimizer())
