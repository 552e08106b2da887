"""§6 hyper-parameter tuning: the learning-rate range test (:func:`visionkit.engine.lr_finder.lr_range_test`)
on a digits MLP, then the same budget of training at its suggestion, 10× below and 10× above.

The handbook's §6 is a heading and a link; the claim tested is the range test's own: the rate where the
loss falls fastest trains at least as well as rates an order of magnitude away.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from visionkit.engine import optim
from visionkit.engine.lr_finder import LRFinderResult, lr_range_test
from visionkit.errors import NonFiniteLossError
from visionkit.lab.experiments._common import digits_tensors, fit, mlp, pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext

TUNING = Claim(
    "§6",
    "调参心得",
    "tuning experience (the handbook gives only a link): choose the learning rate by "
    "measurement — the range test's suggestion trains at least as well as 10× less or more",
)


def judge_range_test(accuracy: dict[str, float]) -> Verdict:
    """``accuracy``: ``"suggested"``, ``"10× lower"``, ``"10× higher"`` → validation accuracy after the same
    epochs (0 for a diverged run)."""
    return judge(
        TUNING,
        "validation accuracy at the suggested rate ≥ at 10× lower and at 10× higher",
        ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()),
        holds=accuracy["suggested"] >= max(accuracy["10× lower"], accuracy["10× higher"]),
    )


def _plot(ctx: LabContext, result: LRFinderResult, rates: dict[str, float]) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.2))
    axis.plot(result.lrs, result.losses)
    for name, rate in rates.items():
        axis.axvline(
            rate, linestyle="--" if name == "suggested" else ":", color="r" if name == "suggested" else "k"
        )
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("smoothed training loss")
    axis.set_title(f"range test: suggestion {result.suggestion:.3g}")
    figure.tight_layout()
    ctx.figure(figure, "range_test", "Loss during the range test; the suggestion (red) and 10× either side.")


@register("lr-range-test", "§6", "Learning-rate range test, and training at its suggestion")
def range_test(ctx: LabContext) -> Findings:
    data = digits_tensors(ctx.seed)
    torch.manual_seed(ctx.seed)
    model = mlp([64, 128, 128, 10])
    loader = DataLoader(
        TensorDataset(*data.train),
        batch_size=32,
        shuffle=True,
        generator=torch.Generator().manual_seed(ctx.seed),
    )
    result = lr_range_test(
        model,
        optim.SGD(model.parameters(), lr=1.0, momentum=0.9),
        loader,
        torch.nn.functional.cross_entropy,
        start_lr=1e-5,
        end_lr=10.0,
        num_steps=ctx.pick(60, 150),
    )
    rates = {
        "10× lower": result.suggestion / 10,
        "suggested": result.suggestion,
        "10× higher": result.suggestion * 10,
    }
    accuracy = {}
    for name, rate in rates.items():
        torch.manual_seed(ctx.seed)
        try:
            run = fit(
                mlp([64, 128, 128, 10]),
                data.train,
                data.val,
                epochs=ctx.pick(2, 8),
                lr=rate,
                optimizer="momentum",
                seed=ctx.seed,
            )
            accuracy[name] = run.last("val_accuracy")
        except NonFiniteLossError:
            accuracy[name] = 0.0
    _plot(ctx, result, rates)
    rows = [{"learning rate": rates[name], "run": name, "val accuracy": accuracy[name]} for name in rates]
    return Findings(
        verdicts=[judge_range_test(accuracy)],
        tables=[Table.of("Same budget at three rates", rows)],
        numbers={"suggestion": result.suggestion, **{f"accuracy {k}": v for k, v in accuracy.items()}},
        notes=[
            "The suggestion is the steepest descent of the smoothed loss; where it sits close to "
            "the divergence edge, a rate below it trains better."
        ],
    )
