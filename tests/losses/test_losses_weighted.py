"""Class-imbalance losses: class weights from frequencies, weighted CE, BCE with pos_weight."""

from __future__ import annotations

import loss_formulas as formulas
import pytest
import torch
import torch.nn.functional as F

from running_error import Bounded, assert_bounded, assert_formulas_agree, exact
from tolerances import LIBM_ULPS, eps, unit_roundoff
from visionkit.losses import (
    BCEWithPosWeightLoss,
    WeightedCrossEntropyLoss,
    bce_with_pos_weight,
    class_weights,
    class_weights_from_labels,
    weighted_cross_entropy,
)


def raw_weights(counts, method: str, beta: float = 0.0) -> Bounded:
    """Raw class weights in float64 running-error arithmetic, as the library computes them."""
    c = exact(counts.double(), torch.float64)
    if method == "inverse":
        return 1 / c
    if method == "inverse_sqrt":
        return 1 / c.sqrt()  # torch's rsqrt: a square root and a division
    power = torch.tensor(beta, dtype=torch.float64).pow(counts.double())  # a libm-class pow
    return (1 - beta) / (1 - Bounded(power, LIBM_ULPS * eps(torch.float64) * power, torch.float64))


def normalised(raw: Bounded, dtype) -> Bounded:
    """``raw · n / Σ raw`` evaluated in ``dtype`` on the given raw weights."""
    return raw * float(len(raw.value)) / raw.sum(0)


def as_float32_input(raw: Bounded) -> Bounded:
    """Raw weights typed into ``torch.tensor([...])`` as Python floats: rounded to float32 (the test's
    expectation is then computed in float32)."""
    return Bounded(
        raw.value, raw.error + unit_roundoff(torch.float32) * (raw.value.abs() + raw.error), torch.float32
    )


def assert_class_weights(ours, raw: Bounded, expected, expected_raw: Bounded) -> None:
    """Ours: the float64 normalisation then one rounding to float32; the expectation: the float32
    normalisation of float32-rounded raw weights. Both against the exact weights."""
    exact_weights = normalised(raw, torch.float64)
    ours_error = exact_weights.error + unit_roundoff(torch.float32) * exact_weights.magnitude()
    theirs = normalised(expected_raw, torch.float32)
    assert_bounded(ours, expected, ours_error + theirs.error + exact_weights.error)


def test_class_weights_formulas():
    counts = torch.tensor([100, 10, 1])
    inverse = class_weights(counts, "inverse")
    raw = torch.tensor([1 / 100, 1 / 10, 1.0])
    exact_raw = raw_weights(counts, "inverse")
    assert_class_weights(inverse, exact_raw, raw * 3 / raw.sum(), as_float32_input(exact_raw))
    raw = torch.tensor([0.1, 10**-0.5, 1.0])
    exact_raw = raw_weights(counts, "inverse_sqrt")
    python_pow = LIBM_ULPS * eps(torch.float64) * exact_raw.value  # 10 ** -0.5 by Python's libm pow
    typed = as_float32_input(Bounded(exact_raw.value, exact_raw.error + python_pow, torch.float64))
    assert_class_weights(class_weights(counts, "inverse_sqrt"), exact_raw, raw * 3 / raw.sum(), typed)
    beta = 0.99
    raw = torch.tensor([(1 - beta) / (1 - beta**n) for n in (100, 10, 1)])
    exact_raw = raw_weights(counts, "effective_number", beta)
    ours = class_weights(counts, "effective_number", beta)
    assert_class_weights(ours, exact_raw, raw * 3 / raw.sum(), as_float32_input(exact_raw))
    # Limits of the effective number: beta = 0 gives equal weights (1 / (1 − 0) each: exact)
    assert torch.equal(class_weights(counts, "effective_number", 0.0), torch.ones(3))
    # beta -> 1 approaches the inverse: (1 − β)/(1 − β^c) = 1 / Σ_{k<c} β^k lies in [1/c, r/c] with
    # r = β^-(c_max − 1), so after normalisation each weight is within a factor r of the inverse weight;
    # plus the rounding of both computations (float64 running bounds, then float32).
    beta = 1 - 1e-9
    near = class_weights(counts, "effective_number", beta)
    r = beta ** -(int(counts.max()) - 1) * (1 + 4 * eps(torch.float64))  # Python's pow: raised by 2 ulps
    effective = normalised(raw_weights(counts, "effective_number", beta), torch.float64)
    inverse_exact = normalised(raw_weights(counts, "inverse"), torch.float64)
    rounding = sum(w.error + unit_roundoff(torch.float32) * w.magnitude() for w in (effective, inverse_exact))
    assert_bounded(near, inverse, (r - 1) * inverse_exact.magnitude() + rounding)
    for method in ("inverse", "inverse_sqrt", "effective_number"):
        weights = class_weights(counts, method)
        assert weights.dtype == torch.float32 and weights[0] < weights[1] < weights[2]


def test_absent_class_gets_zero_and_labels_helper():
    weights = class_weights(torch.tensor([4, 0, 4]))
    assert weights.tolist() == [1.0, 0.0, 1.0]
    assert class_weights(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    labels = torch.tensor([0, 0, 0, 2])
    assert torch.equal(
        class_weights_from_labels(labels, 3), class_weights(torch.tensor([3, 0, 1]))
    )  # same counts
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
    for w in (None, weight):
        # "none": the same torch call. "sum", "mean": the same terms (and weights) summed in other orders
        # (torch.sum here, nll_loss's accumulation there), then the same division: each side within the
        # running bound of the exact sum (quotient), twice that between them.
        terms = weighted_cross_entropy(logits, targets, w, "none")
        assert torch.equal(terms, F.cross_entropy(logits, targets, weight=w, reduction="none"))
        total = exact(terms, torch.float64).sum(0)
        valid = targets != -100
        per_target = torch.ones(len(targets), dtype=torch.float64) if w is None else w[targets.clamp(min=0)]
        count = exact(per_target * valid, torch.float64).sum(0)
        for reduction, formula in (("sum", total), ("mean", total / count)):
            ours = weighted_cross_entropy(logits, targets, w, reduction)
            theirs = F.cross_entropy(logits, targets, weight=w, reduction=reduction)
            assert_bounded(ours, theirs, 2 * formula.error)


def test_bce_with_pos_weight_equals_torch_and_formula():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 3, generator=generator, dtype=torch.float64)
    targets = (torch.rand(8, 3, generator=generator) > 0.7).double()
    pos_weight = torch.tensor([1.0, 3.0, 10.0], dtype=torch.float64)
    for reduction in ("none", "mean", "sum"):
        # the same torch call, then torch's own sum (and the division by the count of torch's CPU mean)
        ours = bce_with_pos_weight(logits, targets, pos_weight, reduction)
        ref = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight, reduction=reduction)
        assert torch.equal(ours, ref)
    p = torch.sigmoid(logits)
    formula = -(pos_weight * targets * torch.log(p) + (1 - targets) * torch.log(1 - p))
    weights = pos_weight.expand_as(logits)
    # log-sigmoid form (torch's kernel) against log of an explicit probability: two formulas
    assert_formulas_agree(
        bce_with_pos_weight(logits, targets, pos_weight, "none"),
        formulas.evaluate(
            lambda x, t: formulas.bce_with_logits(x, t, exact(weights, x.dtype)), logits, targets
        ),
        formula,
        formulas.evaluate(lambda x, t: formulas.bce_textbook(x, t, exact(weights, x.dtype)), logits, targets),
    )


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
