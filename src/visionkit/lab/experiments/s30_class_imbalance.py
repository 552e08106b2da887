"""§30 imbalanced training data: resampling (:mod:`visionkit.data.samplers`) and loss weighting
(:mod:`visionkit.losses`) on the digits with the minority classes 0–4 cut to 5 % of their training
samples, and what accuracy hides.

Every run: the same MLP (64 → 64 → 10), epochs and seed, SGD with momentum through the engine's trainer;
only the sampler or the loss changes. Balanced accuracy and the minority classes' recall are measured on
the (balanced) test split; "accuracy hides it" on a test split subsampled to the training imbalance.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from torch import Tensor

from visionkit.data.samplers import ClassBalancedSampler, UnderSampler
from visionkit.lab.experiments._common import digits_tensors, fit, mlp, pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.losses import WeightedCrossEntropyLoss, softmax_focal_loss
from visionkit.metrics.classification import accuracy, balanced_accuracy, confusion_matrix, recall

RESAMPLE = Claim("§30", "对数据集进行重采样", "resample the data set (over- or under-sampling)")
PENALIZE = Claim("§30", "尝试对模型进行惩罚", "penalize the model (weight the minority classes' errors)")
METRICS = Claim(
    "§30", "尝试其它评价指标", "try other evaluation metrics (accuracy hides the minority classes)"
)
MINORITY = (0, 1, 2, 3, 4)
KEEP = 0.05


def imbalanced(images: Tensor, labels: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Keep ``KEEP`` of every minority class (at least one sample) and all of the others."""
    keep = []
    for label in range(10):
        index = torch.nonzero(labels == label).flatten()
        if label in MINORITY:
            index = index[torch.randperm(len(index), generator=generator)[: max(1, round(KEEP * len(index)))]]
        keep.append(index)
    chosen = torch.cat(keep).sort().values
    return images[chosen], labels[chosen]


def judge_imbalance(runs: dict[str, dict[str, float]]) -> list[Verdict]:
    """``runs``: name → ``balanced`` (balanced accuracy, balanced test), ``minority recall``, and for the
    baseline ``accuracy (imbalanced test)`` and ``balanced (imbalanced test)``."""
    base = runs["plain"]
    return [
        judge(
            RESAMPLE,
            "over-sampling and under-sampling each raise the balanced accuracy over plain training",
            f"over {runs['over-sampling']['balanced']:.3f}, under {runs['under-sampling']['balanced']:.3f}, "
            f"plain {base['balanced']:.3f}",
            holds=min(runs["over-sampling"]["balanced"], runs["under-sampling"]["balanced"])
            > base["balanced"],
        ),
        judge(
            PENALIZE,
            "class-weighted cross-entropy raises the balanced accuracy over plain training",
            f"weighted {runs['class weights']['balanced']:.3f}, plain {base['balanced']:.3f}",
            holds=runs["class weights"]["balanced"] > base["balanced"],
        ),
        judge(
            METRICS,
            "on a test split as imbalanced as training, plain training's accuracy exceeds its "
            "balanced accuracy by ≥ 0.05",
            f"accuracy {base['accuracy (imbalanced test)']:.3f}, balanced "
            f"{base['balanced (imbalanced test)']:.3f}",
            holds=base["accuracy (imbalanced test)"] - base["balanced (imbalanced test)"] >= 0.05,
        ),
    ]


def _scores(model: torch.nn.Module, images: Tensor, labels: Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        predictions = model.eval()(images).argmax(1)
    return labels.numpy(), predictions.numpy()


def _plot(ctx: LabContext, confusion: np.ndarray, runs: dict[str, dict[str, float]]) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    axes[0].imshow(confusion, cmap="Blues")
    axes[0].set_xlabel("predicted")
    axes[0].set_ylabel("true")
    axes[0].set_title("plain training, balanced test")
    names = list(runs)
    axes[1].barh(names, [runs[n]["balanced"] for n in names], color="#4878a8")
    axes[1].set_xlabel("balanced accuracy (test)")
    figure.tight_layout()
    ctx.figure(
        figure, "imbalance", f"Digits 0–4 cut to {KEEP:.0%} in training: confusion matrix and remedies."
    )


@register("class-imbalance", "§30", "Class imbalance: resampling, class weights and the metrics that show it")
def class_imbalance(ctx: LabContext) -> Findings:
    data = digits_tensors(ctx.seed)
    train = imbalanced(*data.train, ctx.generator(1))
    imbalanced_test = imbalanced(*data.test, ctx.generator(2))
    counts = torch.bincount(train[1], minlength=10)
    variants = {
        "plain": {},
        "over-sampling": {"sampler": ClassBalancedSampler(train[1], seed=ctx.seed)},
        "under-sampling": {"sampler": UnderSampler(train[1], seed=ctx.seed)},
        "class weights": {"loss_fn": WeightedCrossEntropyLoss.from_counts(counts, "inverse")},
        "focal γ 2": {"loss_fn": lambda logits, targets: softmax_focal_loss(logits, targets, gamma=2.0)},
    }
    runs, confusion = {}, None
    for name, options in variants.items():
        torch.manual_seed(ctx.seed)
        model = mlp([64, 64, 10])
        fit(
            model,
            train,
            data.val,
            epochs=ctx.pick(3, 15),
            lr=0.05,
            optimizer="momentum",
            seed=ctx.seed,
            **options,
        )
        truth, predicted = _scores(model, *data.test)
        runs[name] = {
            "accuracy": accuracy(truth, predicted),
            "balanced": balanced_accuracy(truth, predicted),
            "minority recall": statistics.mean(recall(truth, predicted, average=None)[list(MINORITY)]),
        }
        if name == "plain":
            confusion = confusion_matrix(truth, predicted)
            truth_i, predicted_i = _scores(model, *imbalanced_test)
            runs[name]["accuracy (imbalanced test)"] = accuracy(truth_i, predicted_i)
            runs[name]["balanced (imbalanced test)"] = balanced_accuracy(truth_i, predicted_i)
    _plot(ctx, confusion, runs)
    return Findings(
        verdicts=judge_imbalance(runs),
        tables=[
            Table.of("Training samples per class", [{str(c): int(n) for c, n in enumerate(counts)}]),
            Table.of("Test metrics per remedy", [{"run": k, **v} for k, v in runs.items()]),
        ],
        numbers={f"balanced {k}": v["balanced"] for k, v in runs.items()},
    )
