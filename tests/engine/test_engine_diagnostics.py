"""Gradient-norm monitor (vanishing / exploding / NaN by layer) and learning-curve fit diagnosis."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from tolerances import LIBM_ULPS, assert_numbers_within, eps, gamma
from visionkit.engine.diagnostics import (
    OVERFITTING_REMEDIES,
    UNDERFITTING_REMEDIES,
    GradientFlowHook,
    GradientNormMonitor,
    diagnose_fit,
    plot_learning_curves,
)
from visionkit.engine.trainer import Trainer

F64 = torch.float64


def _sigmoid_mlp(depth: int = 20, width: int = 32) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(8, width), nn.Sigmoid()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(width, 1))


class ResidualBlock(nn.Module):
    """Pre-normalized ReLU residual block (ResNet v2 order, LayerNorm for BatchNorm): without the
    normalization, 18 un-scaled residual additions grow the activations and the gradients explode."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.relu(self.linear(self.norm(x)))


def _residual_mlp(depth: int = 20, width: int = 32) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(8, width), *[ResidualBlock(width) for _ in range(depth - 2)], nn.Linear(width, 1)
    )


def _backward(model: nn.Module, monitor: GradientNormMonitor, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    inputs, targets = torch.randn(64, 8, generator=generator), torch.randn(64, 1, generator=generator)
    nn.functional.mse_loss(model(inputs), targets).backward()
    monitor.record()


def test_sigmoid_mlp_vanishes_and_residual_relu_is_healthy() -> None:
    torch.manual_seed(0)
    sigmoid = _sigmoid_mlp()
    monitor = GradientNormMonitor(sigmoid)
    _backward(sigmoid, monitor)
    report = monitor.check()
    assert len(monitor.layer_names) == 20
    assert report.status == "vanishing"
    assert report.layers[0] == "0"  # names the first layer
    # reference: the norms read straight from .grad agree with the hooks — exactly: one backward pass hands
    # the hook the tensor .grad stores, vector_norm is torch.norm's kernel, and hypot(0, x) = x
    assert report.norms["0"] == float(sigmoid[0].weight.grad.norm())

    torch.manual_seed(0)
    residual = _residual_mlp()
    monitor = GradientNormMonitor(residual)
    _backward(residual, monitor)
    assert monitor.check().status == "healthy"


def test_exploding_by_bound_and_by_growth() -> None:
    torch.manual_seed(0)
    deep = nn.Sequential(*[nn.Linear(16, 16, bias=False) for _ in range(12)])
    with torch.no_grad():
        for layer in deep:
            layer.weight.mul_(6.0)  # gain > 1 per layer: activations and gradients blow up
    monitor = GradientNormMonitor(deep)
    generator = torch.Generator().manual_seed(0)
    deep(torch.randn(4, 16, generator=generator)).pow(2).mean().backward()
    monitor.record()
    report = monitor.check()
    assert report.status == "exploding" and report.layers

    monitor = GradientNormMonitor(nn.Linear(3, 3), growth_factor=50.0, growth_window=5)
    for scale in (1.0, 3.0, 10.0, 30.0, 100.0):
        monitor.history.append({"linear": scale})
    assert monitor.check({"linear": 100.0}).status == "exploding"
    assert "grew" in monitor.check({"linear": 100.0}).message


def test_non_finite_gradient_is_named_by_layer() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    model[2].weight.register_hook(lambda g: g * float("nan"))  # before the monitor's hook: it sees the NaN
    monitor = GradientNormMonitor(model)
    model(torch.randn(5, 4)).sum().backward()
    monitor.record()
    report = monitor.check()
    assert report.status == "nonfinite" and report.layers == ["2"] and "'2'" in report.message


def test_accumulated_backward_passes_combine_norms() -> None:
    model = nn.Linear(3, 1, bias=False)
    monitor = GradientNormMonitor(model)
    x = torch.tensor([[1.0, 2.0, 2.0]])
    model(x).sum().backward()
    model(x).sum().backward()
    entry = monitor.record()
    # two norms of 3 (exact: √9) combined in quadrature by math.hypot (under 1 ulp since Python 3.10):
    # against 3√2 rounded twice here, 1 ulp + γ₂ of 3√2 < 4.25
    assert_numbers_within(entry["weight"], 3.0 * 2**0.5, (LIBM_ULPS * eps(F64) + gamma(2, F64)) * 4.25)


def test_check_without_history_is_an_error() -> None:
    with pytest.raises(ValueError, match="record"):
        GradientNormMonitor(nn.Linear(2, 2)).check()


def test_gradient_flow_hook_in_trainer_writes_png(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _sigmoid_mlp(depth=8)
    monitor = GradientNormMonitor(model)
    hook = GradientFlowHook(monitor, plot_path=tmp_path / "gradient_flow.png")
    data = [(torch.randn(16, 8), torch.randn(16, 1)) for _ in range(3)]
    Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), data, loss_fn=nn.functional.mse_loss, hooks=[hook]
    ).train()
    assert len(monitor.history) == 3 and len(hook.reports) == 3
    with Image.open(tmp_path / "gradient_flow.png") as image:
        assert image.format == "PNG" and image.size[0] > 100
    monitor.remove()
    model(torch.randn(2, 8)).sum().backward()
    assert monitor.record() == {}  # hooks removed


UNDERFIT = [
    {"epoch": e, "train_accuracy": a, "val_accuracy": a - 0.01} for e, a in enumerate([0.3, 0.5, 0.6], 1)
]
OVERFIT = [
    {"epoch": e, "train_accuracy": a, "val_accuracy": v}
    for e, (a, v) in enumerate([(0.8, 0.7), (1.0, 0.72)], 1)
]
GOOD = [
    {"epoch": e, "train_accuracy": a, "val_accuracy": v}
    for e, (a, v) in enumerate([(0.9, 0.88), (0.99, 0.97)], 1)
]


@pytest.mark.parametrize(
    ("history", "verdict", "label", "remedies"),
    [
        (UNDERFIT, "underfitting", "high bias", UNDERFITTING_REMEDIES),
        (OVERFIT, "overfitting", "high variance", OVERFITTING_REMEDIES),
        (GOOD, "good", "good fit", ()),
    ],
)
def test_diagnose_fit_on_accuracy_curves(history, verdict, label, remedies) -> None:
    diagnosis = diagnose_fit(history)
    assert (diagnosis.verdict, diagnosis.label, diagnosis.remedies) == (verdict, label, remedies)
    assert any("training error" in line for line in diagnosis.evidence)


def _losses(train, val):
    return [
        {"epoch": e, "train_loss": t, "val_loss": v}
        for e, (t, v) in enumerate(zip(train, val, strict=True), 1)
    ]


@pytest.mark.parametrize(
    ("history", "verdict"),
    [
        (_losses([2.3, 2.1, 2.0], [2.3, 2.15, 2.05]), "underfitting"),
        (_losses([2.3, 0.8, 0.2, 0.05], [2.3, 1.0, 0.9, 1.3]), "overfitting"),
        (_losses([2.3, 0.8, 0.3, 0.2], [2.3, 0.9, 0.35, 0.25]), "good"),
        (
            _losses([2.3, 0.8, 0.1], [2.3, 1.0, 0.9]),
            "good",
        ),  # big gap but still improving: not (yet) overfitting
    ],
)
def test_diagnose_fit_on_loss_curves(history, verdict) -> None:
    assert diagnose_fit(history).verdict == verdict


def test_diagnose_fit_needs_curves() -> None:
    with pytest.raises(ValueError, match="train_accuracy"):
        diagnose_fit([{"epoch": 1, "train_loss": 1.0}])


def test_learning_curve_png(tmp_path: Path) -> None:
    history = [{**a, **b} for a, b in zip(OVERFIT, _losses([1.0, 0.1], [1.1, 1.5]), strict=True)]
    path = plot_learning_curves(history, tmp_path / "curves.png", diagnose_fit(history))
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_gradient_flow_hook_can_stop_on_non_finite_gradient() -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 1))
    calls = [0]

    def poison(grad: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return grad * float("inf") if calls[0] == 2 else grad

    model[2].weight.register_hook(poison)
    hook = GradientFlowHook(GradientNormMonitor(model), stop_on_nonfinite=True)
    data = [(torch.randn(4, 8), torch.randn(4, 1)) for _ in range(4)]
    trainer = Trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), data, loss_fn=nn.functional.mse_loss, hooks=[hook]
    )
    with pytest.raises(FloatingPointError, match=r"step 2: non-finite gradient in layers \['2'\]"):
        trainer.train()
