"""Regularization: weight-decay groups, L1/L2 penalties, ensembles (measured gain), and real short
runs on digits: a too-small model underfits, a large one on 100 samples overfits, and dropout, L2 and
early stopping shrink the generalization gap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tolerances import assert_within, gamma, lapack_backward_error, unit_roundoff
from visionkit.data.digits import Digits
from visionkit.engine.diagnostics import diagnose_fit
from visionkit.engine.hooks import EarlyStopping, EvalHook
from visionkit.engine.regularization import (
    Ensemble,
    ensemble_probabilities,
    l1_penalty,
    l2_penalty,
    split_decay_parameters,
    weight_decay_groups,
)
from visionkit.engine.trainer import Trainer


def _conv_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LayerNorm(144), nn.Linear(144, 10)
    )


def test_decay_groups_exclude_norm_and_bias() -> None:
    model = _conv_model()
    decay, no_decay = split_decay_parameters(model)
    assert {id(p) for p in decay} == {id(model[0].weight), id(model[5].weight)}
    assert len(no_decay) == 6  # conv bias, BN weight+bias, LN weight+bias, linear bias
    decay, no_decay = split_decay_parameters(model, exclude_norm=False, exclude_bias=False)
    assert len(decay) == 8 and not no_decay
    with pytest.raises(ValueError, match="weight_decay"):
        weight_decay_groups(model, -1.0)


def _contraction(inputs: torch.Tensor, lr: float, decay: float) -> float:
    """‖I − lr(XᵀX/8 + c·I)‖₂ for mse over 8×2 values (∇ = (W XᵀX − YᵀX)/8): the Lipschitz constant of
    the exact SGD step, from XᵀX's eigenvalues (float64 of float32 data: the products are exact, the sums
    and LAPACK's eigensolver within the bound below)."""
    gram = inputs.double().T @ inputs.double()
    values = torch.linalg.eigvalsh(gram)
    error = gamma(len(inputs), torch.float64) * float(gram.abs().norm()) + lapack_backward_error(
        4, 4, torch.float64
    ) * float(values.abs().max())
    lr32, c32 = float(torch.tensor(lr)), float(torch.tensor(decay))  # the float32 constants the kernels use
    ends = [1 - lr32 * (v / 8 + c32) for value in values.tolist() for v in (value - error, value + error)]
    rho = max(abs(e) for e in ends) * (1 + 8 * unit_roundoff(torch.float64))
    assert rho < 1
    return rho


def _step_rounding(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Frobenius bound of one float32 SGD step's rounding (either weight-decay form) against the exact
    step from the same W: out = XWᵀ (γ₄|X||W|ᵀ) and r = out − Y (u|r|); mse's backward scales r by 2/16
    (exact); ∇ = doutᵀX (γ₈); + 0.3W, by the optimizer or by autograd's accumulation of the penalty's
    0.15·2W, γ₂(|∇| + 0.3|W|); W + (−lr)·G, γ₂(|W| + lr|G|)."""
    u = unit_roundoff(torch.float32)
    with torch.no_grad():
        w, x = model.weight.double(), inputs.double()
        residual = (x @ w.T - targets.double()).abs()
        residual_error = gamma(4, torch.float32) * (x.abs() @ w.abs().T) + u * residual
        grad = residual.T @ x.abs() / 8
        grad_error = residual_error.T @ x.abs() / 8 + gamma(8, torch.float32) * grad
        total = grad + 0.3 * w.abs()
        total_error = grad_error + gamma(2, torch.float32) * total
        step_error = 0.1 * total_error + gamma(2, torch.float32) * (w.abs() + 0.1 * total)
    return float(step_error.norm()) * (1 + gamma(32, torch.float64))  # this float64 evaluation's rounding


def test_decay_groups_decay_only_weights() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(weight_decay_groups(model, weight_decay=0.5), lr=0.1)
    (0 * sum(p.sum() for p in model.parameters())).backward()  # zero gradient: only decay acts
    optimizer.step()
    after = list(model.parameters())
    # both ≈ p·(1 − lr·wd): SGD rounds 0.5p (exact), the product by lr and the subtraction (u·0.05|p| and
    # u|p'|); the reference rounds 1 − 0.05 and the product (u|p| and u|p'|): 3u|p| covers the sum
    assert_within(after[0], before[0] * (1 - 0.1 * 0.5), 3 * unit_roundoff(torch.float32) * before[0].abs())
    assert all(torch.equal(a, b) for a, b in zip(after[1:], before[1:], strict=True))


def test_explicit_l2_equals_weight_decay_and_l1_gradient_is_sign() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(4, 2, bias=False), nn.Linear(4, 2, bias=False)
    b.load_state_dict(a.state_dict())
    inputs, targets = torch.randn(8, 4), torch.randn(8, 2)
    optimizer_a = torch.optim.SGD(a.parameters(), lr=0.1, weight_decay=0.3)
    optimizer_b = torch.optim.SGD(b.parameters(), lr=0.1)
    rho, distance = _contraction(inputs, lr=0.1, decay=0.3), 0.0
    for _ in range(20):
        # the exact step F(W) = W − lr(∇mse(W) + 0.3W) contracts by rho; each side's computed step is
        # within its rounding bound of F(its W): ‖W_a − W_b‖ ≤ rho·previous + e_a + e_b
        distance = rho * distance + _step_rounding(a, inputs, targets) + _step_rounding(b, inputs, targets)
        for model, optimizer, penalty in ((a, optimizer_a, 0.0), (b, optimizer_b, 0.3)):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(inputs), targets)
            if penalty:
                loss = loss + l2_penalty(model, penalty)
            loss.backward()
            optimizer.step()
    assert float((a.weight - b.weight).detach().norm()) <= distance
    weight = nn.Parameter(torch.tensor([2.0, -3.0, 0.5]))
    l1_penalty([weight], 0.25).backward()
    assert torch.equal(weight.grad, torch.tensor([0.25, -0.25, 0.25]))
    assert l1_penalty(nn.Linear(2, 1), 1.0) > 0
    with pytest.raises(ValueError, match="no parameters"):
        l1_penalty([], 1.0)


@pytest.fixture(scope="module")
def digits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {split: (Digits(split).images.flatten(1), Digits(split).targets) for split in ("train", "val")}


def _mlp(hidden: int, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(64, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 10),
    )  # fmt: skip


def _fit(model, digits, *, samples: int, epochs: int = 60, weight_decay: float = 0.0, early: bool = False):
    """Full-batch AdamW on the first ``samples`` training digits; train/val metrics every epoch."""
    inputs, targets = digits["train"][0][:samples], digits["train"][1][:samples]

    def evaluate(model: nn.Module) -> dict[str, float]:
        metrics = {}
        for name, (x, y) in (("train", (inputs, targets)), ("val", digits["val"])):
            logits = model(x)
            metrics[f"{name}_loss"] = float(nn.functional.cross_entropy(logits, y))
            metrics[f"{name}_accuracy"] = float((logits.argmax(1) == y).float().mean())
        return metrics

    hooks = [EvalHook(evaluate)]
    if early:
        hooks.append(EarlyStopping("val_loss", patience=5))
    optimizer = torch.optim.AdamW(weight_decay_groups(model, weight_decay), lr=1e-2)
    trainer = Trainer(
        model, optimizer, [(inputs, targets)], loss_fn=nn.functional.cross_entropy, hooks=hooks,
        max_epochs=epochs, seed=0,
    )  # fmt: skip
    trainer.train()
    with torch.no_grad():
        final = evaluate(model.eval())  # after early stopping this is the restored best model
    return trainer.history, final["val_loss"] - final["train_loss"], final


def test_too_small_model_underfits(digits) -> None:
    torch.manual_seed(0)
    bottleneck = nn.Sequential(nn.Linear(64, 1), nn.Linear(1, 10))  # everything through one number
    history, _, final = _fit(bottleneck, digits, samples=1258, epochs=40)
    diagnosis = diagnose_fit(history)
    assert diagnosis.verdict == "underfitting" and final["train_accuracy"] < 0.8  # 0.22 (seeds 0-2)
    assert "increase the network's capacity (deeper / wider)" in diagnosis.remedies


def test_large_model_on_100_samples_overfits_and_regularization_shrinks_the_gap(digits) -> None:
    history, gap, final = _fit(_mlp(512), digits, samples=100)
    # behaviour checks; measured for model seeds 0-2 under ATEN_CPU_CAPABILITY=default/avx2/native (the
    # same numbers on each): train accuracy 1.0, val 0.755-0.773; gap ratios dropout 0.57-0.81, L2
    # 0.33-0.38, early stopping 0.26-0.35
    assert diagnose_fit(history).verdict == "overfitting"
    assert final["train_accuracy"] == 1.0 and final["val_accuracy"] < 0.85
    _, dropout_gap, _ = _fit(_mlp(512, dropout=0.5), digits, samples=100)
    _, l2_gap, _ = _fit(_mlp(512), digits, samples=100, weight_decay=1.0)
    _, early_gap, _ = _fit(_mlp(512), digits, samples=100, early=True)
    assert dropout_gap < 0.9 * gap
    assert l2_gap < 0.5 * gap
    assert early_gap < 0.5 * gap


def test_ensemble_of_independent_models_beats_its_members(digits) -> None:
    x_val, y_val = digits["val"]
    members = []
    for seed in range(5):
        model = _mlp(32, seed=seed)
        _fit(model, digits, samples=300, epochs=25)
        members.append(model)
    with torch.no_grad():
        member_nll = [float(nn.functional.cross_entropy(m.eval()(x_val), y_val)) for m in members]
        member_accuracy = [float((m(x_val).argmax(1) == y_val).float().mean()) for m in members]
        log_probabilities = Ensemble(members).eval()(x_val)
    ensemble_nll = float(nn.functional.nll_loss(log_probabilities, y_val))
    ensemble_accuracy = float((log_probabilities.argmax(1) == y_val).float().mean())
    # averaging probabilities never has a worse log-loss than the average member (Jensen; here 0.43 vs
    # 0.51, far beyond rounding) ...
    assert ensemble_nll <= sum(member_nll) / len(member_nll)
    # ... and here it is also more accurate than the average member (behaviour: 0.885 vs 0.848-0.860 for
    # member seeds 0-4, 10-14, 20-24 under ATEN_CPU_CAPABILITY=default/avx2/native)
    assert ensemble_accuracy > sum(member_accuracy) / len(member_accuracy)
    # the same softmax / stack / mean on the same inputs; Ensemble only clamps at float32's tiny
    probabilities = ensemble_probabilities(members, x_val)
    assert torch.equal(probabilities.clamp_min(torch.finfo(torch.float32).tiny).log(), log_probabilities)
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
