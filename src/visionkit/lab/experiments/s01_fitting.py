"""§1 over- and under-fitting, diagnosed from learning curves
(:func:`visionkit.engine.diagnostics.diagnose_fit`), and what each remedy the handbook lists does to the
train/validation gap.

Over-fitting: a 64 → 512 → 512 → 10 MLP trained on 100 digits (10 per class) for 100 epochs (SGD with
momentum, lr 0.05). Remedies, each alone, at a textbook setting: all 1,258 training digits, dropout 0.5,
L2 weight decay 1e-3, early stopping on the validation loss (patience 10, best weights restored), a
smaller 64 → 32 → 10 model. Under-fitting: a 64 → 4 → 10 MLP with weight decay 0.03 on all training
digits; remedies: no weight decay, a 64 → 128 → 10 model. Full mode averages 3 seeds.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from visionkit.engine.diagnostics import diagnose_fit
from visionkit.lab.experiments._common import digits_tensors, fit, mlp, pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext

OVERFIT = Claim(
    "§1",
    "在训练集上误差小，但在测试集上误差大，我们将这种情况称为高方差（high variance），也叫过拟合",
    "small error on the training set but large on the test set is high variance, over-fitting",
)
UNDERFIT = Claim(
    "§1",
    "在训练集上训练效果不好（测试集上也不好），准确率不高，我们将这种情况称为高偏差（high bias），也叫欠拟合",
    "poor results on the training set (and the test set) is high bias, under-fitting",
)
MORE_DATA = Claim(
    "§1", "增加数据集是解决过拟合的根本性方法", "more data is the fundamental cure for over-fitting"
)
REMEDIES = Claim(
    "§1",
    "如何解决过拟合？",
    "how to fix over-fitting: more data, a suitable model, dropout, "
    "regularization, early stopping, … (each narrows the train/validation gap)",
)
UNDER_REMEDIES = Claim(
    "§1",
    "如何解决欠拟合？",
    "how to fix under-fitting: less regularization, more network "
    "capacity, … (each raises the training accuracy)",
)
OVERFIT_REMEDIES = ("more data", "dropout 0.5", "L2 1e-3", "early stopping", "smaller model")


def judge_fitting(over: dict[str, dict[str, Any]], under: dict[str, dict[str, Any]]) -> list[Verdict]:
    """``over``/``under``: run name (``"baseline"`` and the remedies) → ``train``, ``val`` accuracy, ``gap``
    (train − val) and ``diagnosis`` (of the first seed); remedies narrow the gap (over-fitting) or raise
    the training accuracy (under-fitting) relative to their baseline."""
    base, low = over["baseline"], under["baseline"]
    narrower = {name: over[name]["gap"] < base["gap"] for name in OVERFIT_REMEDIES}
    best = max(OVERFIT_REMEDIES, key=lambda name: over[name]["val"])
    raised = {name: under[name]["train"] > low["train"] for name in under if name != "baseline"}
    return [
        judge(
            OVERFIT,
            "the 100-digit run is diagnosed over-fitting (high variance) by diagnose_fit",
            f"train {base['train']:.3f}, val {base['val']:.3f}: {base['diagnosis']}",
            holds=base["diagnosis"] == "overfitting",
        ),
        judge(
            UNDERFIT,
            "the 4-unit, weight-decayed run is diagnosed under-fitting (high bias)",
            f"train {low['train']:.3f}, val {low['val']:.3f}: {low['diagnosis']}",
            holds=low["diagnosis"] == "underfitting",
        ),
        judge(
            MORE_DATA,
            "more data gives the highest validation accuracy of all remedies",
            f"best: {best} ({over[best]['val']:.3f}); more data {over['more data']['val']:.3f}",
            holds=best == "more data",
        ),
        judge(
            REMEDIES,
            "every remedy narrows the train/validation gap of the baseline",
            "; ".join(f"{n}: {over[n]['gap']:.3f}" for n in OVERFIT_REMEDIES)
            + f" (baseline {base['gap']:.3f})",
            holds=all(narrower.values()),
        ),
        judge(
            UNDER_REMEDIES,
            "every remedy raises the training accuracy of the under-fitting baseline",
            "; ".join(f"{n}: {under[n]['train']:.3f}" for n in raised) + f" (baseline {low['train']:.3f})",
            holds=all(raised.values()),
        ),
    ]


def _average(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "train": statistics.mean(r["train"] for r in runs),
        "val": statistics.mean(r["val"] for r in runs),
        "gap": statistics.mean(r["train"] - r["val"] for r in runs),
        "diagnosis": runs[0]["diagnosis"],
        "epochs run": statistics.mean(r["epochs"] for r in runs),
    }


def _runs(
    ctx: LabContext,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], list[dict[str, float]]]:
    data = digits_tensors(ctx.seed)
    images, labels = data.train
    few = torch.cat([torch.nonzero(labels == c).flatten()[:10] for c in range(10)])
    small = (images[few], labels[few])
    epochs = ctx.pick(10, 100)
    over_settings = {
        "baseline": (small, lambda: mlp([64, 512, 512, 10]), {}),
        "more data": (data.train, lambda: mlp([64, 512, 512, 10]), {"epochs": max(epochs // 5, 4)}),
        "dropout 0.5": (small, lambda: mlp([64, 512, 512, 10], dropout=0.5), {}),
        "L2 1e-3": (small, lambda: mlp([64, 512, 512, 10]), {"weight_decay": 1e-3}),
        "early stopping": (small, lambda: mlp([64, 512, 512, 10]), {"patience": 10}),
        "smaller model": (small, lambda: mlp([64, 32, 10]), {}),
    }
    under_settings = {
        "baseline": (data.train, lambda: mlp([64, 4, 10]), {"weight_decay": 0.03}),
        "no weight decay": (data.train, lambda: mlp([64, 4, 10]), {}),
        "bigger model": (data.train, lambda: mlp([64, 128, 10]), {"weight_decay": 0.03}),
    }
    tables, curve = [], []
    for settings, default_epochs in ((over_settings, epochs), (under_settings, ctx.pick(2, 10))):
        results = {}
        for name, (train, build, options) in settings.items():
            runs = []
            for seed in range(ctx.pick(1, 3)):
                torch.manual_seed(ctx.seed + seed)
                run = fit(
                    build(),
                    train,
                    data.val,
                    lr=0.05,
                    optimizer="momentum",
                    seed=ctx.seed + seed,
                    **{"epochs": default_epochs, **options},
                )
                last = run.history[-1]
                runs.append(
                    {
                        "train": last["train_accuracy"],
                        "val": last["val_accuracy"],
                        "diagnosis": diagnose_fit(run.history).verdict,
                        "epochs": len(run.history),
                    }
                )
                if settings is over_settings and name == "baseline" and seed == 0:
                    curve = run.history
            results[name] = _average(runs)
        tables.append(results)
    return tables[0], tables[1], curve


@register("over-under-fitting", "§1", "Over- and under-fitting on the digits, and each remedy's effect")
def over_under_fitting(ctx: LabContext) -> Findings:
    over, under, curve = _runs(ctx)
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    epochs = [record["epoch"] for record in curve]
    for key in ("train_accuracy", "val_accuracy"):
        axes[0].plot(epochs, [record[key] for record in curve], label=key)
    axes[0].set_xlabel("epoch")
    axes[0].legend(fontsize=7)
    axes[0].set_title("over-fitting baseline (100 digits)")
    names = list(over)
    axes[1].barh(names, [over[n]["gap"] for n in names], color="#4878a8")
    axes[1].set_xlabel("train − validation accuracy")
    axes[1].set_title("gap per remedy")
    figure.tight_layout()
    ctx.figure(figure, "fitting", "Learning curves of the over-fitting run, and the gap after each remedy.")
    return Findings(
        verdicts=judge_fitting(over, under),
        tables=[
            Table.of("Over-fitting: baseline and remedies", [{"run": k, **v} for k, v in over.items()]),
            Table.of("Under-fitting: baseline and remedies", [{"run": k, **v} for k, v in under.items()]),
        ],
        numbers={f"gap {k}": v["gap"] for k, v in over.items()},
    )
