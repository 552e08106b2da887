"""Class-imbalance losses: class weights from frequencies, weighted CE, BCE with pos_weight."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visionkit.losses import (
    BCEWithPosWeightLoss,
    WeightedCrossEntropyLoss,
    bce_with_pos_weight,
    class_weights,
    class_weights_from_labels,
    weighted_cross_entropy,
)


def test_class_weights_formulas():
    counts = torch.tensor([100, 10, 1])
    inverse = class_weights(counts, "inverse")
    raw = torch.tensor([1 / 100, 1 / 10, 1.0])
    torch.testing.assert_close(inverse, raw * 3 / raw.sum())
    raw = torch.tensor([0.1, 10**-0.5, 1.0])
    torch.testing.assert_close(class_weights(counts, "inverse_sqrt"), raw * 3 / raw.sum())
    beta = 0.99
    raw = torch.tensor([(1 - beta) / (1 - beta**n) for n in (100, 10, 1)])
    torch.testing.assert_close(class_weights(counts, "effective_number", beta), raw * 3 / raw.sum())
    # Limits of the effective number: beta = 0 gives equal weights; beta -> 1 approaches the inverse.
    torch.testing.assert_close(class_weights(counts, "effective_number", 0.0), torch.ones(3))
    torch.testing.assert_close(
        class_weights(counts, "effective_number", 1 - 1e-9), inverse, rtol=1e-5, atol=1e-6
    )
    for method in ("inverse", "inverse_sqrt", "effective_number"):
        weights = class_weights(counts, method)
        assert weights.dtype == torch.float32 and weights[0] < weights[1] < weights[2]


def test_absent_class_gets_zero_and_labels_helper():
    weights = class_weights(torch.tensor([4, 0, 4]))
    assert weights.tolist() == [1.0, 0.0, 1.0]
    assert class_weights(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    labels = torch.tensor([0, 0, 0, 2])
    torch.testing.assert_close(class_weights_from_labels(labels, 3), class_weights(torch.tensor([3, 0, 1])))
    with pytest.raises(ValueError, match="labels"):
        class_weights_from_labels(torch.tensor([0, 3]), 3)
    with pytest.raises(ValueError, match="counts"):
        class_weights(torch.tensor([1, -1]))
    with pytest.raises(ValueError, match="method"):
        class_weights(torch.tensor([1, 1]), "log")
    with pytest.raises(ValueError, match="beta"):
        class_weights(torch.tensor([1, 1]), "effective_number", beta=1.0)


def test_weighted_cross_entropy_equals_torch():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(30, 4, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 4, (30,), generator=generator)
    targets[:3] = -100
    weight = class_weights(torch.tensor([50, 20, 5, 1])).double()
    for reduction in ("none", "mean", "sum"):
        for w in (None, weight):
            ours = weighted_cross_entropy(logits, targets, w, reduction)
            torch.testing.assert_close(ours, F.cross_entropy(logits, targets, weight=w, reduction=reduction))


def test_bce_with_pos_weight_equals_torch_and_formula():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    targets = (torch.rand(8, 3, generator=generator) > 0.7).double()
    pos_weight = torch.tensor([1.0, 3.0, 10.0], dtype=torch.float64)
    for reduction in ("none", "mean", "sum"):
        ours = bce_with_pos_weight(logits, targets, pos_weight, reduction)
        ref = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction=reduction)
        torch.testing.assert_close(ours, ref)
    p = torch.sigmoid(logits)
    formula = -(pos_weight * targets * torch.log(p) + (1 - targets) * torch.log(1 - p))
    torch.testing.assert_close(bce_with_pos_weight(logits, targets, pos_weight, "none"), formula)


def test_empty_inputs_give_zero_and_backpropagate():
    logits = torch.zeros(0, 4, requires_grad=True)
    loss = weighted_cross_entropy(logits, torch.zeros(0, dtype=torch.int64), torch.ones(4))
    assert loss.item() == 0.0
    loss.backward()
    loss = bce_with_pos_weight(logits, torch.zeros(0, 4), 2.0)
    assert loss.item() == 0.0
    loss.backward()


def test_gradcheck_float64():
    logits = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 2, 1, 0])
    weight = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: weighted_cross_entropy(x, targets, weight), (logits,))
    binary = (torch.rand(6, 3) > 0.5).double()
    assert torch.autograd.gradcheck(lambda x: bce_with_pos_weight(x, binary, 4.0), (logits,))


def test_modules_and_bad_input():
    logits, targets = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 0])
    module = WeightedCrossEntropyLoss.from_counts(torch.tensor([30, 10, 1]), "inverse_sqrt")
    assert torch.equal(module(logits, targets), weighted_cross_entropy(logits, targets, module.weight))
    assert "weight" in dict(module.named_buffers())
    binary = (torch.rand(5, 3) > 0.5).float()
    assert torch.equal(BCEWithPosWeightLoss(2.0)(logits, binary), bce_with_pos_weight(logits, binary, 2.0))
    half = bce_with_pos_weight(logits.half(), binary.half(), 2.0)
    assert half.dtype == torch.float32
    with pytest.raises(ValueError, match="weight"):
        weighted_cross_entropy(logits, targets, torch.ones(4))
    with pytest.raises(ValueError, match="targets"):
        weighted_cross_entropy(logits, targets[:2])
    with pytest.raises(ValueError, match="pos_weight"):
        bce_with_pos_weight(logits, binary, -1.0)
    with pytest.raises(ValueError, match="one shape"):
        bce_with_pos_weight(logits, binary[:2])
