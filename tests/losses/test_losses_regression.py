"""Smooth L1 and L1: equal to torch, beta=0 is L1, empty input, fp16, gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visionkit.losses import L1Loss, SmoothL1Loss, l1_loss, smooth_l1_loss


def _reference_smooth_l1(x, y, beta):
    out = torch.empty_like(x)
    for i, (a, b) in enumerate(zip(x.flatten().tolist(), y.flatten().tolist(), strict=True)):
        d = abs(a - b)
        out.view(-1)[i] = 0.5 * d * d / beta if d < beta else d - 0.5 * beta
    return out


@pytest.mark.parametrize("beta", [1.0, 1 / 9, 0.5, 2.0])
def test_smooth_l1_matches_loop_and_torch(beta):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(20, 4, generator=generator, dtype=torch.float64) * 2
    y = torch.randn(20, 4, generator=generator, dtype=torch.float64)
    y[0] = x[0] + beta  # exactly at the switch point
    # the loop and torch's kernel perform our operations: |x − y|, then 0.5·d·d / beta (0.5·(d·d) and
    # (0.5·d)·d round alike: scaling by 2 is exact) or d − 0.5·beta on the same branch: identical; the
    # reductions are torch's sum (and the division of its CPU mean) on the same tensor
    assert torch.equal(smooth_l1_loss(x, y, beta, "none"), _reference_smooth_l1(x, y, beta))
    for reduction in ("none", "mean", "sum"):
        assert torch.equal(
            smooth_l1_loss(x, y, beta, reduction), F.smooth_l1_loss(x, y, reduction=reduction, beta=beta)
        )


def test_beta_zero_is_l1_and_l1_matches_torch():
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64)
    assert torch.equal(smooth_l1_loss(x, y, 0.0), l1_loss(x, y))
    for reduction in ("none", "mean", "sum"):
        assert torch.equal(l1_loss(x, y, reduction), F.l1_loss(x, y, reduction=reduction))


def test_empty_mean_is_zero_and_backpropagates():
    x = torch.zeros(0, 4, requires_grad=True)
    for fn in (lambda a: smooth_l1_loss(a, torch.zeros(0, 4)), lambda a: l1_loss(a, torch.zeros(0, 4))):
        loss = fn(x)
        assert loss.item() == 0.0
        loss.backward()


def test_fp16_computed_in_float32_and_infinite_error_is_finite_gradient():
    x = torch.tensor([60000.0, 1.0], dtype=torch.float16)
    loss = smooth_l1_loss(x, -x, reduction="none")
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
    x = torch.tensor([float("inf"), 0.2], requires_grad=True)
    loss = smooth_l1_loss(x, torch.zeros(2), reduction="none")
    assert loss[0] == float("inf") and not loss.isnan().any()


def test_gradcheck_float64():
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(6, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: smooth_l1_loss(a, y, 0.5, "mean"), (x,))
    assert torch.autograd.gradcheck(lambda a: l1_loss(a, y, "sum"), (x,))


def test_modules_and_bad_input():
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.equal(SmoothL1Loss(beta=0.3)(x, y), smooth_l1_loss(x, y, 0.3))
    assert torch.equal(L1Loss("sum")(x, y), l1_loss(x, y, "sum"))
    assert "beta=0.3" in repr(SmoothL1Loss(beta=0.3))
    with pytest.raises(ValueError, match="same shape"):
        smooth_l1_loss(x, y[:2])
    with pytest.raises(ValueError, match="beta"):
        smooth_l1_loss(x, y, beta=-1.0)
    with pytest.raises(ValueError, match="reduction"):
        L1Loss("avg")
    with pytest.raises(TypeError, match="target"):
        l1_loss(x, [1.0])  # type: ignore[arg-type]
