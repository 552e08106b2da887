"""Training diagnostics: per-layer gradient norms (handbook §2/§3) and fit diagnosis (§1).

* :class:`GradientNormMonitor` registers a hook on every weight matrix/kernel and records the 2-norm
  of its gradient at each backward pass; :meth:`GradientNormMonitor.check` calls the gradients
  *vanishing* when the early layers' norms fall below ``vanishing_ratio`` times the late layers',
  *exploding* when a norm exceeds ``exploding_bound`` or the total norm grows ``growth_factor``-fold
  within ``growth_window`` steps, and names every layer whose gradient holds NaN/Inf.
* :func:`diagnose_fit` reads learning curves and answers underfitting (high bias), overfitting (high
  variance) or good, with the numbers behind the verdict and the handbook's remedies.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from visionkit.engine.trainer import HookBase

#: Handbook §1.1 (over-fitting) and §1.2 (under-fitting) remedies.
OVERFITTING_REMEDIES = (
    "get more training data (the fundamental remedy), or augment it",
    "use a smaller / more suitable model",
    "add dropout",
    "add regularization (L2 weight decay, L1)",
    "stop early on the validation metric",
    "decay the learning rate",
    "use batch normalization",
)
UNDERFITTING_REMEDIES = (
    "add new features",
    "add polynomial (higher-order) features",
    "reduce the regularization strength",
    "increase the network's capacity (deeper / wider)",
    "use ensemble methods such as bagging",
)


@dataclass
class GradientReport:
    """Result of :meth:`GradientNormMonitor.check`: ``status`` is ``"healthy"``, ``"vanishing"``,
    ``"exploding"`` or ``"nonfinite"``; ``layers`` names the layers concerned."""

    status: str
    message: str
    layers: list[str] = field(default_factory=list)
    norms: dict[str, float] = field(default_factory=dict)


class GradientNormMonitor:
    """Record the gradient 2-norm of every weight (``dim >= 2``) of ``model`` at every backward pass.

    Call :meth:`record` once per optimizer step (``GradientFlowHook`` does) to close a history entry.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 1))
        >>> monitor = GradientNormMonitor(model)
        >>> model(torch.randn(8, 4)).sum().backward(); _ = monitor.record()
        >>> monitor.layer_names, len(monitor.history)
        (['0', '2'], 1)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        vanishing_ratio: float = 1e-2,
        exploding_bound: float = 1e3,
        growth_factor: float = 100.0,
        growth_window: int = 10,
    ) -> None:
        self.vanishing_ratio, self.exploding_bound = vanishing_ratio, exploding_bound
        self.growth_factor, self.growth_window = growth_factor, growth_window
        self.layer_names: list[str] = []
        self.history: list[dict[str, float]] = []
        self._current: dict[str, float] = {}
        self._handles = []
        for name, parameter in model.named_parameters():
            if parameter.dim() >= 2 and parameter.requires_grad:
                layer = name.rsplit(".", 1)[0] if "." in name else name
                self.layer_names.append(layer)
                self._handles.append(parameter.register_hook(self._make_hook(layer)))

    def _make_hook(self, layer: str):
        def hook(grad: torch.Tensor) -> None:
            norm = float(torch.linalg.vector_norm(grad.detach().float()))
            # with gradient accumulation several backward passes add up: combine their norms
            self._current[layer] = math.hypot(self._current.get(layer, 0.0), norm)

        return hook

    def record(self) -> dict[str, float]:
        """Close the current entry (norms since the last call) and append it to :attr:`history`."""
        entry = {name: self._current[name] for name in self.layer_names if name in self._current}
        self._current = {}
        if entry:
            self.history.append(entry)
        return entry

    def remove(self) -> None:
        """Remove the gradient hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def check(self, entry: Mapping[str, float] | None = None) -> GradientReport:
        """Classify one history entry (default: the latest)."""
        if entry is None:
            if not self.history:
                raise ValueError("GradientNormMonitor.check: no gradients recorded yet (call record())")
            entry = self.history[-1]
        norms = dict(entry)
        bad = [name for name, value in norms.items() if not math.isfinite(value)]
        if bad:
            return GradientReport("nonfinite", f"non-finite gradient in layers {bad}", bad, norms)
        big = [name for name, value in norms.items() if value > self.exploding_bound]
        if big:
            return GradientReport(
                "exploding", f"gradient norm above {self.exploding_bound:g} in {big}", big, norms
            )
        growth = self._growth()
        if growth > self.growth_factor:
            return GradientReport(
                "exploding",
                f"total gradient norm grew {growth:.3g}x in {self.growth_window} steps",
                [],
                norms,
            )
        values = [norms[name] for name in self.layer_names if name in norms]
        quarter = max(1, len(values) // 4)
        early, late = sum(values[:quarter]) / quarter, sum(values[-quarter:]) / quarter
        if len(values) >= 2 and early < self.vanishing_ratio * late:
            names = [name for name in self.layer_names if name in norms][:quarter]
            ratio = self.vanishing_ratio
            message = f"early-layer gradient norm {early:.3g} < {ratio:g} x late-layer norm {late:.3g}"
            return GradientReport("vanishing", message, names, norms)
        return GradientReport(
            "healthy", f"early/late gradient-norm ratio {early / max(late, 1e-30):.3g}", [], norms
        )

    def _growth(self) -> float:
        if len(self.history) < 2:
            return 1.0
        totals = [
            math.sqrt(sum(v * v for v in entry.values())) for entry in self.history[-self.growth_window :]
        ]
        return totals[-1] / max(min(totals), 1e-30)


class GradientFlowHook(HookBase):
    """Record the monitor after every optimizer step and keep each step's :class:`GradientReport`; with
    ``stop_on_nonfinite`` a NaN/Inf gradient raises ``FloatingPointError`` naming the layers; writes a
    gradient-flow PNG at the end of training when ``plot_path`` is given."""

    def __init__(
        self,
        monitor: GradientNormMonitor,
        plot_path: str | os.PathLike[str] | None = None,
        *,
        stop_on_nonfinite: bool = False,
    ) -> None:
        self.monitor, self.plot_path, self.stop_on_nonfinite = monitor, plot_path, stop_on_nonfinite
        self.reports: list[GradientReport] = []

    def after_step(self) -> None:
        if not self.monitor.record():
            return
        report = self.monitor.check()
        self.reports.append(report)
        if self.stop_on_nonfinite and report.status == "nonfinite":
            raise FloatingPointError(f"step {self.trainer.step}: {report.message}")

    def after_train(self) -> None:
        if self.plot_path is not None and self.monitor.history:
            plot_gradient_flow(self.monitor, self.plot_path)


@dataclass
class FitDiagnosis:
    """Result of :func:`diagnose_fit`."""

    verdict: str  # "underfitting", "overfitting" or "good"
    label: str  # "high bias", "high variance" or "good fit"
    evidence: list[str]
    remedies: tuple[str, ...]


def _series(history: Sequence[Mapping[str, float]], key: str) -> list[float]:
    return [float(record[key]) for record in history if key in record]


def diagnose_fit(
    history: Sequence[Mapping[str, float]],
    *,
    target_error: float = 0.05,
    gap_tolerance: float = 0.05,
    loss_progress: float = 0.5,
    loss_gap_ratio: float = 0.5,
) -> FitDiagnosis:
    """Diagnose learning curves as underfitting (high bias), overfitting (high variance) or good.

    With ``train_accuracy`` and ``val_accuracy`` in the records, errors are ``1 - accuracy`` at the
    final epoch: high bias when the training error exceeds ``target_error``; high variance when the
    validation error exceeds the training error by more than ``gap_tolerance``. With losses only
    (``train_loss``/``val_loss``): high bias when the final training loss is above ``loss_progress``
    times the first; high variance when the final validation loss exceeds the training loss by more
    than ``loss_gap_ratio`` of it *and* has risen above its own minimum. High bias is reported first
    (fix it before variance).

    Args:
        history: one dict per epoch (``Trainer.history``).

    Example:
        >>> diagnose_fit([{"train_accuracy": 1.0, "val_accuracy": 0.7}]).label
        'high variance'
    """
    evidence: list[str] = []
    train_acc, val_acc = _series(history, "train_accuracy"), _series(history, "val_accuracy")
    train_loss, val_loss = _series(history, "train_loss"), _series(history, "val_loss")
    if train_acc and val_acc:
        train_error, val_error = 1 - train_acc[-1], 1 - val_acc[-1]
        high_bias = train_error > target_error
        high_variance = val_error - train_error > gap_tolerance
        evidence.append(f"training error {train_error:.3f} (target {target_error:.3f})")
        evidence.append(
            f"validation error {val_error:.3f}, gap {val_error - train_error:.3f} (tolerance {gap_tolerance})"
        )
    elif train_loss and val_loss:
        high_bias = train_loss[-1] > loss_progress * train_loss[0]
        gap = (val_loss[-1] - train_loss[-1]) / max(train_loss[-1], 1e-12)
        rising = val_loss[-1] > min(val_loss) * 1.05
        high_variance = gap > loss_gap_ratio and rising
        evidence.append(
            f"training loss {train_loss[0]:.4g} -> {train_loss[-1]:.4g} (high bias above {loss_progress}x)"
        )
        evidence.append(
            f"validation loss {val_loss[-1]:.4g}: {gap:.2f}x above training loss; minimum {min(val_loss):.4g}"
        )
        if rising:
            evidence.append(f"validation loss rose after epoch {val_loss.index(min(val_loss)) + 1}")
    else:
        raise ValueError(
            "diagnose_fit needs train_accuracy and val_accuracy, or train_loss and val_loss, in the records"
        )
    if high_bias:
        return FitDiagnosis("underfitting", "high bias", evidence, UNDERFITTING_REMEDIES)
    if high_variance:
        return FitDiagnosis("overfitting", "high variance", evidence, OVERFITTING_REMEDIES)
    return FitDiagnosis("good", "good fit", evidence, ())


def plot_learning_curves(
    history: Sequence[Mapping[str, float]],
    path: str | os.PathLike[str],
    diagnosis: FitDiagnosis | None = None,
) -> Path:
    """Save loss (and accuracy, when recorded) curves per epoch as a PNG; the title shows the diagnosis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("train_loss", "val_loss"), ("train_accuracy", "val_accuracy")]
    panels = [pair for pair in keys if any(k in record for record in history for k in pair)]
    figure, axes = plt.subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 3.5), squeeze=False)
    for axis, pair in zip(axes[0], panels, strict=False):
        for key in pair:
            values = [(r["epoch"], r[key]) for r in history if key in r]
            if values:
                axis.plot(*zip(*values, strict=True), marker="o", label=key)
        axis.set_xlabel("epoch")
        axis.legend()
    if diagnosis is not None:
        figure.suptitle(f"{diagnosis.verdict} ({diagnosis.label})")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


def plot_gradient_flow(monitor: GradientNormMonitor, path: str | os.PathLike[str]) -> Path:
    """Save a PNG of the mean gradient norm per layer (log scale), first to last layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name in monitor.layer_names if any(name in entry for entry in monitor.history)]
    means = [
        sum(entry[name] for entry in monitor.history if name in entry)
        / max(1, sum(name in entry for entry in monitor.history))
        for name in names
    ]
    figure, axis = plt.subplots(figsize=(max(5, 0.35 * len(names)), 3.5))
    axis.bar(range(len(names)), [max(m, 1e-30) for m in means])
    axis.set_yscale("log")
    axis.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    axis.set_ylabel("mean gradient 2-norm")
    axis.set_title(f"gradient flow: {monitor.check().status}")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path


__all__ = [
    "OVERFITTING_REMEDIES",
    "UNDERFITTING_REMEDIES",
    "FitDiagnosis",
    "GradientFlowHook",
    "GradientNormMonitor",
    "GradientReport",
    "diagnose_fit",
    "plot_gradient_flow",
    "plot_learning_curves",
]
