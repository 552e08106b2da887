"""Regularization: weight-decay groups, L1/L2 penalties, ensembles (measured gain), and real short
runs on digits: a too-small model underfits, a large one on 100 samples overfits, and dropout, L2 and
early stopping shrink the generalization gap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

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


def test_decay_groups_decay_only_weights() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(weight_decay_groups(model, weight_decay=0.5), lr=0.1)
    (0 * sum(p.sum() for p in model.parameters())).backward()  # zero gradient: only decay acts
    optimizer.step()
    after = list(model.parameters())
    assert torch.allclose(after[0], before[0] * (1 - 0.1 * 0.5))
    assert all(torch.equal(a, b) for a, b in zip(after[1:], before[1:], strict=True))


def test_explicit_l2_equals_weight_decay_and_l1_gradient_is_sign() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(4, 2, bias=False), nn.Linear(4, 2, bias=False)
    b.load_state_dict(a.state_dict())
    inputs, targets = torch.randn(8, 4), torch.randn(8, 2)
    optimizer_a = torch.optim.SGD(a.parameters(), lr=0.1, weight_decay=0.3)
    optimizer_b = torch.optim.SGD(b.parameters(), lr=0.1)
    for _ in range(20):
        for model, optimizer, penalty in ((a, optimizer_a, 0.0), (b, optimizer_b, 0.3)):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(inputs), targets)
            if penalty:
                loss = loss + l2_penalty(model, penalty)
            loss.backward()
            optimizer.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6)
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
    assert diagnosis.verdict == "underfitting" and final["train_accuracy"] < 0.8
    assert "increase the network's capacity (deeper / wider)" in diagnosis.remedies


def test_large_model_on_100_samples_overfits_and_regularization_shrinks_the_gap(digits) -> None:
    history, gap, final = _fit(_mlp(512), digits, samples=100)
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
    # averaging probabilities never has a worse log-loss than the average member (Jensen) ...
    assert ensemble_nll <= sum(member_nll) / len(member_nll)
    # ... and here it is also more accurate than the average member
    assert ensemble_accuracy > sum(member_accuracy) / len(member_accuracy)
    assert torch.allclose(ensemble_probabilities(members, x_val).log(), log_probabilities, atol=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])
