"""§26 the handbook's optimizer code, run as printed, against visionkit's optimizers.

The snippets are transcribed literally (plain Python floats, ``compute_gradient`` = the exact gradient of
f(x) = x²/2) and run from x = 1: the SGD and momentum snippets *add* the gradient and climb; the
bias-corrected Adam snippet divides by zero at t = 0 (``range`` starts at 0), and with t from 1 it still
ignores its corrections and takes a first step about 3.16× the learning rate — the large early step the
handbook says bias correction avoids. :class:`visionkit.engine.optim.Adam` takes a first step of lr.
"""

from __future__ import annotations

import math

import torch

from visionkit.engine import optim
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext

SGD_SNIPPET = Claim(
    "§26",
    "x += learning_rate * dx",
    "SGD code: dx = compute_gradient(x); x += learning_rate * dx",
    kind="fact",
)
MOMENTUM_SNIPPET = Claim(
    "§26",
    "x += learning_rate * vx",
    "SGD + momentum code: vx = rho * vx + dx; x += learning_rate * vx",
    kind="fact",
)
ADAM_ZERO = Claim(
    "§26",
    "first_unbias = first_moment / (1 - beta1 ** t)",
    "bias-corrected Adam code: for t in range(num_iteration): … first_moment / (1 - beta1 ** t)",
    kind="fact",
)
ADAM_STEP = Claim(
    "§26",
    "Adam完整的算法包含偏置项，以避免开始时出现很大的步长。",
    "the full Adam algorithm includes bias correction to avoid very large steps at the start "
    "(the code that follows)",
    kind="fact",
)


def _gradient(x: float) -> float:
    return x  # f(x) = x² / 2


def handbook_sgd(x: float, learning_rate: float, steps: int) -> float:
    """§26 SGD snippet as printed."""
    for _ in range(steps):
        dx = _gradient(x)
        x += learning_rate * dx
    return x


def handbook_momentum(x: float, learning_rate: float, steps: int, rho: float = 0.9) -> float:
    """§26 SGD + momentum snippet as printed."""
    vx = 0.0
    for _ in range(steps):
        dx = _gradient(x)
        vx = rho * vx + dx
        x += learning_rate * vx
    return x


def handbook_adam(
    x: float, learning_rate: float, iterations: range, beta1: float = 0.9, beta2: float = 0.999
) -> float:
    """§26 "complete" Adam snippet as printed (``iterations`` is its ``range(num_iteration)``)."""
    first_moment = 0.0
    second_moment = 0.0
    for t in iterations:
        dx = _gradient(x)
        first_moment = beta1 * first_moment + (1 - beta1) * dx
        second_moment = beta2 * second_moment + (1 - beta2) * dx * dx
        first_unbias = first_moment / (1 - beta1**t)  # noqa: F841  (computed and unused, as printed)
        second_unbias = second_moment / (1 - beta2**t)  # noqa: F841
        x -= learning_rate * first_moment / (math.sqrt(second_moment) + 1e-7)
    return x


def judge_snippets(
    sgd_loss: tuple[float, float],
    momentum_loss: tuple[float, float],
    adam_zero_error: bool,
    first_steps: dict[str, float],
) -> list[Verdict]:
    """Losses ``(before, after)`` of 20 steps of each snippet; whether Adam's snippet raised at t = 0;
    first-step sizes in units of lr (``snippet`` with t from 1, ``visionkit`` Adam)."""
    return [
        judge(
            SGD_SNIPPET,
            "20 steps decrease f(x) = x²/2 from x = 1",
            f"f: {sgd_loss[0]:.4g} → {sgd_loss[1]:.4g}",
            holds=sgd_loss[1] < sgd_loss[0],
            correction="the step must go against the gradient: "
            "x -= learning_rate * dx (visionkit.engine.optim.SGD does)",
        ),
        judge(
            MOMENTUM_SNIPPET,
            "20 steps decrease f(x) = x²/2 from x = 1",
            f"f: {momentum_loss[0]:.4g} → {momentum_loss[1]:.4g}",
            holds=momentum_loss[1] < momentum_loss[0],
            correction="x -= learning_rate * vx",
        ),
        judge(
            ADAM_ZERO,
            "the loop runs its first iteration (t = 0)",
            "ZeroDivisionError at t = 0" if adam_zero_error else "ran",
            holds=not adam_zero_error,
            correction="t must start at 1: for t in range(1, num_iteration + 1)",
        ),
        judge(
            ADAM_STEP,
            "the snippet's first step is ≤ 1.5 lr (bias correction keeps it ≈ lr)",
            f"snippet {first_steps['snippet']:.3f} lr; visionkit Adam {first_steps['visionkit']:.3f} lr",
            holds=first_steps["snippet"] <= 1.5,
            correction="the update must use the corrected moments: "
            "x -= learning_rate * first_unbias / (np.sqrt(second_unbias) + 1e-7)",
        ),
    ]


def _visionkit_steps(optimizer_class: type[torch.optim.Optimizer], lr: float, steps: int) -> float:
    """x after ``steps`` steps of a visionkit optimizer on f(x) = x²/2 from x = 1."""
    x = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    optimizer = optimizer_class([x], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        (x.square().sum() / 2).backward()
        optimizer.step()
    return float(x.detach())


@register(
    "optimizer-snippets", "§26", "The handbook's SGD, momentum and Adam code, run as printed", errata=True
)
def optimizer_snippets(ctx: LabContext) -> Findings:
    lr, steps = 0.1, 20
    losses = {}
    for name, run in (("sgd", handbook_sgd), ("momentum", handbook_momentum)):
        losses[name] = (0.5, run(1.0, lr, steps) ** 2 / 2)
    try:
        handbook_adam(1.0, lr, range(steps))
        adam_zero_error = False
    except ZeroDivisionError:
        adam_zero_error = True
    snippet_first = abs(1.0 - handbook_adam(1.0, lr, range(1, 2))) / lr
    first_steps = {"snippet": snippet_first, "visionkit": abs(1.0 - _visionkit_steps(optim.Adam, lr, 1)) / lr}
    sgd_after = _visionkit_steps(optim.SGD, lr, steps) ** 2 / 2
    rows = [
        {"code": "SGD snippet", "f before": losses["sgd"][0], "f after 20 steps": losses["sgd"][1]},
        {
            "code": "momentum snippet",
            "f before": losses["momentum"][0],
            "f after 20 steps": losses["momentum"][1],
        },
        {"code": "visionkit.engine.optim.SGD", "f before": 0.5, "f after 20 steps": sgd_after},
    ]
    return Findings(
        verdicts=judge_snippets(losses["sgd"], losses["momentum"], adam_zero_error, first_steps),
        tables=[
            Table.of("f(x) = x²/2 from x = 1, learning rate 0.1", rows),
            Table.of("Adam's first step (in units of lr)", [first_steps]),
        ],
        numbers={"sgd_snippet_loss": losses["sgd"][1], "adam_snippet_first_step": snippet_first},
    )
