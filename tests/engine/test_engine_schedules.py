"""Closed-form learning-rate schedules: formulas, torch's recursive schedulers, warm-up, state_dict."""

from __future__ import annotations

import io
import math

import pytest
import torch

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


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_closed_form_matches_formula_per_group(name: str) -> None:
    factory, formula = FORMULAS[name]
    seen = _run(factory(_optimizer()), 15)
    for t, lrs in enumerate(seen):
        for base_lr, lr in zip(BASE_LRS, lrs, strict=True):
            assert lr == pytest.approx(formula(base_lr, t), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_linear_warmup_composes(name: str) -> None:
    factory, formula = FORMULAS[name]
    optimizer = _optimizer()
    scheduler = S.LinearWarmup(optimizer, factory(optimizer), warmup_steps=4, start_factor=0.1)
    for t, lrs in enumerate(_run(scheduler, 15)):
        for base_lr, lr in zip(BASE_LRS, lrs, strict=True):
            expected = base_lr * (0.1 + 0.9 * t / 4) if t < 4 else formula(base_lr, t - 4)
            assert lr == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize(
    ("ours", "reference"),
    [
        (lambda o: S.StepLR(o, 3, 0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.5)),
        (
            lambda o: S.MultiStepLR(o, [2, 5, 5], 0.3),
            lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 5, 5], 0.3),
        ),
        (lambda o: S.ExponentialLR(o, 0.9), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9)),
        (
            lambda o: S.CosineLR(o, 12, 1e-3),
            lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 12, 1e-3),
        ),
        (
            lambda o: S.InverseTimeLR(o, 0.5),
            lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1 / (1 + 0.5 * t)),
        ),
    ],
)
def test_equals_torch_schedulers(ours, reference) -> None:
    a, b = _run(ours(_optimizer()), 12), _run(reference(_optimizer()), 12)
    flat_a, flat_b = [lr for lrs in a for lr in lrs], [lr for lrs in b for lr in lrs]
    assert flat_a == pytest.approx(flat_b, rel=1e-10)


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
    assert [round(lrs[0], 12) for lrs in _run(scheduler, 6)][3:] == [0.01, 0.01, 0.01]


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
