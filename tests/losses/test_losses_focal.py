"""Focal losses: torchvision goldens, reduction to (weighted) CE, stability, empty input, gradcheck."""

from __future__ import annotations

from pathlib import Path

import loss_formulas as focal
import pytest
import torch
import torch.nn.functional as F

from running_error import assert_bounded, assert_evaluations_agree, assert_formulas_agree, exact
from running_error_grad import Dual, assert_gradients_agree
from tolerances import abs_sum_upper, sum_difference_bound
from visionkit.losses import SigmoidFocalLoss, SoftmaxFocalLoss, sigmoid_focal_loss, softmax_focal_loss

GOLDEN = torch.load(
    Path(__file__).resolve().parents[1] / "data" / "torchvision_roi_golden.pt", weights_only=True
)


def _reference_sigmoid_focal(logits, targets, alpha, gamma):
    """Textbook formula in float64 with an explicit probability (fine for moderate logits)."""
    p = torch.sigmoid(logits.double())
    p_t = p * targets + (1 - p) * (1 - targets)
    alpha_t = 1.0 if alpha is None else alpha * targets + (1 - alpha) * (1 - targets)
    return -alpha_t * (1 - p_t) ** gamma * torch.log(p_t)


@pytest.mark.parametrize("alpha", [0.25, -1.0])
@pytest.mark.parametrize("gamma", [0.0, 2.0, 0.5])
def test_sigmoid_focal_matches_torchvision_golden(alpha, gamma):
    key = f"focal/alpha{alpha}/gamma{gamma}"
    logits = GOLDEN["focal/logits"].clone().requires_grad_()
    targets = GOLDEN["focal/targets"]
    ours = sigmoid_focal_loss(logits, targets, None if alpha < 0 else alpha, gamma)
    # torchvision computes 1 − p_t as 1 − (p·t + (1 − p)(1 − t)) where we use sigmoid(∓x): two formulas,
    # compared with the gap of their exact values computed from the data plus both running bounds
    # (tests/losses/focal_formulas.py).
    assert_formulas_agree(
        ours,
        focal.evaluate(focal.ours, logits.detach(), targets, None if alpha < 0 else alpha, gamma),
        GOLDEN[f"{key}/out"],
        focal.evaluate(focal.torchvision, logits.detach(), targets, alpha, gamma),
    )
    weight = GOLDEN[f"{key}/weight"]
    (ours * weight).sum().backward()
    # the gradients: both formulas differentiated in forward mode with running error bounds, with
    # torch's fused backward formulas for sigmoid and BCE (tests/running_error_grad.py)
    derivatives = []
    for formula, weighting in ((focal.ours, None if alpha < 0 else alpha), (focal.torchvision, alpha)):
        x = Dual.variable(logits.detach(), torch.float64)
        derivatives.append(
            formula(x, exact(targets, torch.float64), weighting, gamma) * exact(weight, torch.float64)
        )
    assert_gradients_agree(logits.grad, derivatives[0], GOLDEN[f"{key}/grad"], derivatives[1])


def test_sigmoid_focal_matches_formula_and_reduces_to_bce():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 4, generator=generator, dtype=torch.float64) * 3
    targets = (torch.rand(50, 4, generator=generator) > 0.5).double()
    for alpha, gamma in ((0.25, 2.0), (None, 1.5), (0.75, 0.0)):
        # log-sigmoid form here, log(p_t) of an explicit probability in the reference: two formulas
        assert_formulas_agree(
            sigmoid_focal_loss(logits, targets, alpha, gamma),
            focal.evaluate(focal.ours, logits, targets, alpha, gamma),
            _reference_sigmoid_focal(logits, targets, alpha, gamma),
            focal.evaluate(focal.textbook, logits, targets, alpha, gamma),
        )
    for reduction in ("none", "mean", "sum"):
        # gamma 0 and no alpha: the same torch call, then torch's own sum (and for "mean" the division by
        # the count that torch's CPU mean performs after the same sum): identical
        ours = sigmoid_focal_loss(logits, targets, None, 0.0, reduction)
        assert torch.equal(ours, F.binary_cross_entropy_with_logits(logits, targets, reduction=reduction))


def test_sigmoid_focal_is_stable_for_extreme_logits_and_fp16():
    logits = torch.tensor([100.0, -100.0, 100.0, -100.0, 0.0], dtype=torch.float16).requires_grad_()
    targets = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0], dtype=torch.float16)
    loss = sigmoid_focal_loss(logits, targets, None, 2.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    assert loss[0] == 0 and loss[1] == 0  # confident and right
    # confident and wrong: |x| (the formula's float64 value is 100 + 4e-44), within the float32 bound
    formula = focal.evaluate(focal.ours, logits.detach()[2:4].double(), targets[2:4].double(), None, 2.0)
    assert_evaluations_agree(loss[2:4], formula, torch.float32)
    assert_bounded(formula(torch.float64).value, torch.tensor([100.0, 100.0]), 1e-40)
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()


def test_sigmoid_focal_empty_mean_is_zero_and_backpropagates():
    logits = torch.zeros(0, 80, requires_grad=True)
    loss = sigmoid_focal_loss(logits, torch.zeros(0, 80), reduction="mean")
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad.shape == (0, 80)
    assert sigmoid_focal_loss(logits, torch.zeros(0, 80), reduction="none").shape == (0, 80)


def test_softmax_focal_reduces_to_cross_entropy():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(40, 6, generator=generator, dtype=torch.float64) * 3
    targets = torch.randint(0, 6, (40,), generator=generator)
    # "none": the same log_softmax call, negated and gathered (times the weight): identical. "sum" and
    # "mean": our torch.sum against nll_loss's own accumulation, the same terms in another order, then
    # for "mean" the same division by 40: sum_difference_bound with n (+1) operations.
    for weight in (None, torch.rand(6, generator=generator, dtype=torch.float64) + 0.1):
        terms = softmax_focal_loss(logits, targets, weight, 0.0, "none")
        assert torch.equal(terms, F.cross_entropy(logits, targets, weight=weight, reduction="none"))
        total = sum_difference_bound(abs_sum_upper(terms, 0), len(terms), torch.float64)
        ours = softmax_focal_loss(logits, targets, weight, 0.0, "sum")
        assert_bounded(ours, F.cross_entropy(logits, targets, weight=weight, reduction="sum"), total)
    ours = softmax_focal_loss(logits, targets, None, 0.0, "mean")
    mean = sum_difference_bound(abs_sum_upper(terms, 0) / len(terms), len(terms) + 1, torch.float64)
    assert_bounded(ours, F.cross_entropy(logits, targets, reduction="mean"), mean)


def test_softmax_focal_matches_loop_reference_with_alpha_and_ignore():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 3, 5, generator=generator, dtype=torch.float64)  # [N, C, d]
    targets = torch.randint(0, 3, (4, 5), generator=generator)
    targets[0, 0] = -100
    alpha = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    expected, count = torch.zeros(4, 5, dtype=torch.float64), 0
    for n in range(4):
        for d in range(5):
            if targets[n, d] == -100:
                continue
            p = torch.softmax(logits[n, :, d], 0)[targets[n, d]]
            expected[n, d] = -alpha[targets[n, d]] * (1 - p) ** 2 * torch.log(p)
            count += 1
    # log_softmax and expm1 here, softmax, 1 − p and log(p) in the loop: two formulas, both bounded
    ours_formula, loop_formula = softmax_focal_formulas(logits, targets, alpha)
    assert_formulas_agree(
        softmax_focal_loss(logits, targets, alpha, 2.0, "none"), ours_formula, expected, loop_formula
    )
    mean = lambda formula: lambda dtype: formula(dtype).reshape(-1).sum(0) / count  # noqa: E731
    assert_formulas_agree(
        softmax_focal_loss(logits, targets, alpha, 2.0, "mean"),
        mean(ours_formula),
        expected.sum() / count,
        mean(loop_formula),
    )


def softmax_focal_formulas(logits, targets, alpha):
    """Ours (``−log p_t · (−expm1(log p_t))² · α_t``) and the loop's (``−α_t (1 − p)² log p``) per
    ``[N, d]`` target, 0 where ignored (exactly, in both)."""
    valid = targets != -100
    safe = torch.where(valid, targets, torch.zeros_like(targets))
    n, d = torch.meshgrid(torch.arange(targets.shape[0]), torch.arange(targets.shape[1]), indexing="ij")

    def pick(values):
        return values[n, safe, d]

    def ours(dtype):
        log_p = pick(focal.log_softmax(exact(logits, dtype), 1))
        loss = -log_p * (-log_p.expm1()).clamp(min=0.0).pow(2) * exact(alpha[safe], dtype)
        return loss * exact(valid.double(), dtype)

    def loop(dtype):
        p = pick(focal.softmax(exact(logits, dtype), 1))
        loss = -exact(alpha[safe], dtype) * (1 - p).pow(2) * p.log()
        return loss * exact(valid.double(), dtype)

    return ours, loop


def test_softmax_focal_stable_and_empty():
    logits = torch.tensor([[1000.0, -1000.0], [-1000.0, 1000.0]], dtype=torch.float16).requires_grad_()
    loss = softmax_focal_loss(logits, torch.tensor([0, 0]), None, 2.0, "none")
    assert loss.dtype == torch.float32 and loss[0] == 0 and torch.isfinite(loss).all() and loss[1] > 1000
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()
    empty = torch.zeros(0, 5, requires_grad=True)
    loss = softmax_focal_loss(empty, torch.zeros(0, dtype=torch.int64))
    assert loss.item() == 0.0
    loss.backward()
    everything_ignored = softmax_focal_loss(torch.randn(3, 5), torch.full((3,), -100))
    assert everything_ignored.item() == 0.0


def test_gradcheck_float64():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(5, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    targets = (torch.rand(5, 3, generator=generator) > 0.5).double()
    assert torch.autograd.gradcheck(lambda x: sigmoid_focal_loss(x, targets, 0.25, 2.0, "mean"), (logits,))
    assert torch.autograd.gradcheck(lambda x: sigmoid_focal_loss(x, targets, None, 0.0, "sum"), (logits,))
    labels = torch.tensor([0, 2, 1, 1, 0])
    alpha = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: softmax_focal_loss(x, labels, alpha, 2.0, "mean"), (logits,))


def test_modules_and_bad_input():
    logits, targets = torch.randn(4, 3), (torch.rand(4, 3) > 0.5).float()
    assert torch.equal(
        SigmoidFocalLoss()(logits, targets), sigmoid_focal_loss(logits, targets, reduction="mean")
    )
    labels = torch.tensor([0, 1, 2, 0])
    module = SoftmaxFocalLoss(alpha=torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(
        module(logits, labels), softmax_focal_loss(logits, labels, torch.tensor([1.0, 2.0, 3.0]))
    )
    assert "alpha" in dict(module.named_buffers()) and "gamma=2.0" in repr(module)
    assert torch.equal(SoftmaxFocalLoss(alpha=0.5)(logits, labels), softmax_focal_loss(logits, labels, 0.5))
    with pytest.raises(ValueError, match="same shape"):
        sigmoid_focal_loss(logits, targets[:2])
    with pytest.raises(ValueError, match="alpha"):
        sigmoid_focal_loss(logits, targets, alpha=1.5)
    with pytest.raises(ValueError, match="gamma"):
        sigmoid_focal_loss(logits, targets, gamma=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        sigmoid_focal_loss(logits, targets, reduction="avg")
    with pytest.raises(ValueError, match="targets"):
        softmax_focal_loss(logits, torch.tensor([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="targets"):
        softmax_focal_loss(logits, labels[:2])
    with pytest.raises(TypeError, match="int64"):
        softmax_focal_loss(logits, labels.float())
    with pytest.raises(ValueError, match="alpha"):
        softmax_focal_loss(logits, labels, torch.ones(4))
    with pytest.raises(ValueError, match="logits is on cpu but targets is on meta"):
        sigmoid_focal_loss(logits, torch.zeros(4, 3, device="meta"))
