"""§29 learning-rate schedules: the shapes of visionkit's closed-form schedules against the handbook's
formulas.

The handbook files k/√epoch under *exponential* decay: an exponential schedule multiplies the rate by the
same factor every epoch, which k/√epoch does not (its factors √(t/(t+1)) climb towards 1 — a power law).
Its 1/t formula writes α on both sides: applied as an update every epoch it compounds to α0/∏(1 + k·e),
not α0/(1 + k·t).
"""

from __future__ import annotations

import itertools

import torch

from visionkit.engine import schedules
from visionkit.lab.experiments._common import pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext

STAIRCASE = Claim(
    "§29", "每 t 轮学习，学习率减半", "discrete staircase: halve the learning rate every t epochs"
)
EXPONENTIAL = Claim(
    "§29",
    r"\alpha=0.95^{\text { epoch}_{-} n u m} \cdot \alpha_{0}",
    "exponential decay: α = 0.95^epoch · α0",
    kind="fact",
)
SQRT_AS_EXPONENTIAL = Claim(
    "§29",
    r"\alpha=\frac{k}{\sqrt{e p o c h_{-} n u m}}",
    "listed as exponential decay: α = k / √epoch",
    kind="fact",
)
ONE_OVER_T = Claim(
    "§29",
    r"\alpha=\frac{\alpha}{1+\operatorname{decay}_{rate}* \operatorname{epoch}_{num}}",
    "1/t decay: α = α / (1 + decay_rate · epoch)",
    kind="fact",
)
EPOCHS = 40


def _ratios(values: list[float]) -> list[float]:
    return [b / a for a, b in itertools.pairwise(values)]


def judge_schedules(
    staircase: list[float],
    step: int,
    exponential: list[float],
    inverse_sqrt: list[float],
    compounded: list[float],
    one_over_t: list[float],
) -> list[Verdict]:
    """Learning rates per epoch (base 1): the staircase must halve exactly every ``step`` epochs; an
    exponential schedule has one constant ratio (to 1e-12); the printed 1/t update applied every epoch
    (``compounded``) must equal α0/(1 + k·t) (``one_over_t``) to 1e-12."""
    halves = all(staircase[t] == 0.5 ** (t // step) for t in range(len(staircase)))
    exp_ratios, sqrt_ratios = _ratios(exponential), _ratios(inverse_sqrt)
    spread = max(sqrt_ratios) - min(sqrt_ratios)
    gap = max(abs(a - b) / b for a, b in zip(compounded, one_over_t, strict=True))
    return [
        judge(
            STAIRCASE,
            f"lr(t) == 0.5^⌊t/{step}⌋ for t < {len(staircase)}",
            f"{staircase[0]:g}, {staircase[step]:g}, {staircase[2 * step]:g} at t = 0, {step}, {2 * step}",
            holds=halves,
        ),
        judge(
            EXPONENTIAL,
            "one constant ratio 0.95 per epoch (to 1e-12)",
            f"ratios {min(exp_ratios):.12f} … {max(exp_ratios):.12f}",
            holds=all(abs(r - 0.95) <= 1e-12 for r in exp_ratios),
        ),
        judge(
            SQRT_AS_EXPONENTIAL,
            "k/√epoch has one constant ratio per epoch (exponential, to 1e-12)",
            f"ratios {min(sqrt_ratios):.4f} … {max(sqrt_ratios):.4f} (spread {spread:.3f})",
            holds=spread <= 1e-12,
            correction="k/√epoch is an inverse-square-root (power-law) decay, "
            "like 1/t: its per-epoch factor √(t/(t+1)) rises towards 1",
        ),
        judge(
            ONE_OVER_T,
            "α ← α/(1 + k·epoch) applied each epoch equals α0/(1 + k·t) (to 1e-12)",
            f"largest relative gap {gap:.3g} over {len(compounded)} epochs",
            holds=gap <= 1e-12,
            correction="write α = α0 / (1 + k·t) with the initial α0; the printed update compounds to "
            f"α0/∏(1 + k·e): {compounded[-1]:.3g} vs {one_over_t[-1]:.3g} at epoch {len(compounded) - 1}",
        ),
    ]


def _curve(factory: object) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = factory(optimizer)  # type: ignore[operator]
    return [schedule.lr_at(1.0, t) for t in range(EPOCHS)]


@register("lr-schedules", "§29", "Learning-rate schedule shapes against the handbook's formulas", errata=True)
def lr_schedules(ctx: LabContext) -> Findings:
    k = 0.1
    curves = {
        "staircase (halve every 10)": _curve(lambda o: schedules.StepLR(o, step_size=10, gamma=0.5)),
        "exponential 0.95^t": _curve(lambda o: schedules.ExponentialLR(o, gamma=0.95)),
        "exponential e^(−kt)": _curve(lambda o: schedules.ExponentialDecayLR(o, k)),
        "1/t: 1/(1+kt)": _curve(lambda o: schedules.InverseTimeLR(o, k)),
        "k/√t (k = 1)": _curve(lambda o: schedules.InverseSqrtLR(o)),
        "cosine": _curve(lambda o: schedules.CosineLR(o, total_steps=EPOCHS)),
        "warm-up 5 + cosine": _curve(
            lambda o: schedules.LinearWarmup(
                o, schedules.CosineLR(o, total_steps=EPOCHS - 5), 5, start_factor=0.1
            )
        ),
    }
    compounded, rate = [], 1.0
    for epoch in range(EPOCHS):
        rate = rate / (1 + k * epoch)
        compounded.append(rate)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for name, values in curves.items():
        axis.plot(range(EPOCHS), values, label=name)
    axis.plot(range(EPOCHS), compounded, "k:", label="handbook 1/t, applied each epoch")
    axis.set_yscale("log")
    axis.set_xlabel("epoch")
    axis.set_ylabel("learning rate / α0")
    axis.legend(fontsize=7)
    figure.tight_layout()
    ctx.figure(figure, "schedules", "visionkit's schedules (engine.schedules) over 40 epochs, log scale.")
    rows = [
        {"epoch": t, **{name: values[t] for name, values in curves.items()}} for t in (0, 1, 5, 10, 20, 39)
    ]
    return Findings(
        verdicts=judge_schedules(
            curves["staircase (halve every 10)"],
            10,
            curves["exponential 0.95^t"],
            curves["k/√t (k = 1)"],
            compounded,
            curves["1/t: 1/(1+kt)"],
        ),
        tables=[Table.of("Learning rate / α0 at selected epochs", rows)],
        numbers={
            "compounded_one_over_t_last": compounded[-1],
            "one_over_t_last": curves["1/t: 1/(1+kt)"][-1],
        },
    )
