"""Pooling as autograd Functions (§20): equal to torch.nn.functional forward and backward; gradcheck."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from running_error import assert_bounded
from tolerances import sum_difference_bound
from visionkit.ops.pooling import AvgPool2d, MaxPool2d, avg_pool2d, max_pool2d

CONFIGS = [
    # kernel, stride, padding, ceil_mode
    (2, 2, 0, False),
    (3, 2, 1, False),
    (3, 2, 1, True),
    (2, 2, 0, True),
    (3, 1, 1, False),
    ((2, 3), (1, 2), (1, 0), True),
    (3, 3, 0, True),
    (1, 1, 0, False),
]


def _pair_grad(fn, x, grad_seed=0, weight=None):
    x = x.clone().requires_grad_()
    out = fn(x)
    if weight is None:
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=x.dtype)
    out.backward(weight)
    return out.detach(), x.grad


def _pair(value):
    return (value, value) if isinstance(value, int) else value


def _windows_per_cell(kernel, stride) -> int:
    """Most windows (without dilation) that can contain one input cell: ``ceil(k / s)`` per axis."""
    kernel, stride = _pair(kernel), _pair(stride)
    return math.ceil(kernel[0] / stride[0]) * math.ceil(kernel[1] / stride[1])


def max_pool_grad_bound(fn, x, kernel, grad_seed=0):
    """The input gradient of max pooling is, per input cell, the sum of the output gradients of the
    windows it won: the same terms on both sides (the arg-max indices are asserted equal) added in
    another order (scatter_add_ here, torch's loop there): twice γ(n − 1) times their absolute sum, which
    is the backward of |weight| through the same routing."""
    out = fn(x)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=x.dtype)
    _, abs_sum = _pair_grad(fn, x.double(), weight=weight.abs().double())
    # a cell is in at most one window per kernel tap, dilation or not
    return sum_difference_bound(abs_sum, math.prod(_pair(kernel)), x.dtype)


def avg_pool_bounds(x, kernel, stride, padding, ceil_mode, include, divisor=None, grad_seed=0):
    """Forward: a window's sum of its ``n <= kH·kW`` cells (padding adds exact zeros) in another order,
    then the same division: each side within γ(n)·Σ|x|/d of the exact mean, so the two within twice that
    (:func:`sum_difference_bound` with ``n + 1`` operations), Σ|x|/d the average of |x|. Backward: both
    add, per input cell, the same shares g/d (one identical division) of the windows covering it in
    another order (fold here, torch's loop there)."""
    args = (kernel, stride, padding, ceil_mode, include, divisor)
    area = math.prod(_pair(kernel))
    mean_abs = F.avg_pool2d(x.double().abs(), *args)
    forward = sum_difference_bound(mean_abs, area + 1, x.dtype)
    out = F.avg_pool2d(x, *args)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=x.dtype)
    _, shares = _pair_grad(lambda t: F.avg_pool2d(t, *args), x.double(), weight=weight.abs().double())
    backward = sum_difference_bound(shares, _windows_per_cell(kernel, stride or kernel), x.dtype)
    return forward, backward


@pytest.mark.parametrize(("kernel", "stride", "padding", "ceil_mode"), CONFIGS)
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 2, 5, 5), (3, 6, 8)])
def test_max_pool_matches_torch(kernel, stride, padding, ceil_mode, shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ours, ours_grad = _pair_grad(lambda t: max_pool2d(t, kernel, stride, padding, 1, ceil_mode), x)
    ref, ref_grad = _pair_grad(lambda t: F.max_pool2d(t, kernel, stride, padding, 1, ceil_mode), x)
    assert torch.equal(ours, ref)
    bound = max_pool_grad_bound(lambda t: F.max_pool2d(t, kernel, stride, padding, 1, ceil_mode), x, kernel)
    assert_bounded(ours_grad, ref_grad, bound)
    _, ours_idx = max_pool2d(x, kernel, stride, padding, 1, ceil_mode, return_indices=True)
    _, ref_idx = F.max_pool2d(x, kernel, stride, padding, 1, ceil_mode, return_indices=True)
    assert torch.equal(ours_idx, ref_idx)


@pytest.mark.parametrize("dilation", [2, (2, 1)])
def test_max_pool_dilation_matches_torch(dilation):
    x = torch.randn(2, 2, 9, 10, generator=torch.Generator().manual_seed(2))
    for ceil_mode in (False, True):
        ours, ours_grad = _pair_grad(lambda t, c=ceil_mode: max_pool2d(t, 3, 2, 1, dilation, c), x)
        ref, ref_grad = _pair_grad(lambda t, c=ceil_mode: F.max_pool2d(t, 3, 2, 1, dilation, c), x)
        assert torch.equal(ours, ref)
        bound = max_pool_grad_bound(lambda t, c=ceil_mode: F.max_pool2d(t, 3, 2, 1, dilation, c), x, 3)
        assert_bounded(ours_grad, ref_grad, bound)


@pytest.mark.parametrize(("kernel", "stride", "padding", "ceil_mode"), CONFIGS)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_matches_torch(kernel, stride, padding, ceil_mode, count_include_pad):
    x = torch.randn(2, 3, 7, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    args = (kernel, stride, padding, ceil_mode, count_include_pad)
    ours, ours_grad = _pair_grad(lambda t: avg_pool2d(t, *args), x)
    ref, ref_grad = _pair_grad(lambda t: F.avg_pool2d(t, *args), x)
    forward, backward = avg_pool_bounds(x, *args)
    assert_bounded(ours, ref, forward)
    assert_bounded(ours_grad, ref_grad, backward)


def test_avg_pool_divisor_override_matches_torch():
    x = torch.randn(1, 2, 6, 6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ours, ours_grad = _pair_grad(lambda t: avg_pool2d(t, 3, 2, 1, True, True, divisor_override=5), x)
    ref, ref_grad = _pair_grad(lambda t: F.avg_pool2d(t, 3, 2, 1, True, True, divisor_override=5), x)
    forward, backward = avg_pool_bounds(x, 3, 2, 1, True, True, divisor=5)
    assert_bounded(ours, ref, forward)
    assert_bounded(ours_grad, ref_grad, backward)


def test_max_pool_ties_go_to_first_maximum_like_torch():
    # A constant image: every window is one big tie; the first cell (row-major) wins, as in torch.
    x = torch.ones(1, 1, 4, 4)
    _, indices = max_pool2d(x, 2, return_indices=True)
    assert indices.tolist() == [[[[0, 2], [8, 10]]]]
    ours, ours_grad = _pair_grad(lambda t: max_pool2d(t, 3, 1, 1), x)
    assert torch.equal(ours, torch.ones(1, 1, 4, 4))
    _, ref_grad = _pair_grad(lambda t: F.max_pool2d(t, 3, 1, 1), x)
    assert torch.equal(ours_grad, ref_grad)
    # The gradient sum is preserved: each output's gradient goes to exactly one input.
    x = torch.randn(1, 1, 6, 6).requires_grad_()
    max_pool2d(x, 3, 1, 1).sum().backward()
    assert x.grad.sum().item() == 36.0


def test_max_pool_nan_propagates_like_torch():
    x = torch.randn(1, 1, 4, 4)
    x[0, 0, 1, 1] = float("nan")
    assert torch.equal(max_pool2d(x, 2).isnan(), F.max_pool2d(x, 2).isnan())


def _loop_max_pool(x, kernel, stride):
    """Obviously correct reference: visit every window, keep the first strict maximum."""
    n, c, h, w = x.shape
    out_h, out_w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    out = torch.empty(n, c, out_h, out_w, dtype=x.dtype)
    for b, ch, i, j in itertools.product(range(n), range(c), range(out_h), range(out_w)):
        best = -float("inf")
        for dy, dx in itertools.product(range(kernel), range(kernel)):
            best = max(best, x[b, ch, i * stride + dy, j * stride + dx].item())
        out[b, ch, i, j] = best
    return out


def test_max_pool_matches_loop_reference_with_ties():
    x = torch.randint(0, 3, (1, 2, 6, 7)).double()  # many ties
    assert torch.equal(max_pool2d(x, 3, 2), _loop_max_pool(x, 3, 2))


def test_mean_pool_gradient_spreads_evenly_and_preserves_sum():
    x = torch.randn(1, 1, 4, 4, requires_grad=True)
    avg_pool2d(x, 2).backward(torch.tensor([[[[4.0, 8.0], [12.0, 16.0]]]]))
    assert x.grad[0, 0, :2, :2].eq(1.0).all() and x.grad[0, 0, 2:, 2:].eq(4.0).all()
    assert x.grad.sum().item() == 40.0


@pytest.mark.parametrize(("kernel", "stride", "padding", "ceil_mode"), CONFIGS[:6])
def test_gradcheck_float64(kernel, stride, padding, ceil_mode):
    # Distinct values so the max is unique and the function is differentiable at the test point.
    x = (torch.randperm(2 * 5 * 7).double().view(1, 2, 5, 7) / 10).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: max_pool2d(t, kernel, stride, padding, 1, ceil_mode), (x,))
    for include in (True, False):
        assert torch.autograd.gradcheck(
            lambda t, i=include: avg_pool2d(t, kernel, stride, padding, ceil_mode, i), (x,)
        )


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(3, 9),
    width=st.integers(3, 9),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 3),
    padding=st.integers(0, 1),
    ceil_mode=st.booleans(),
    include=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_fuzz_against_torch(height, width, kernel, stride, padding, ceil_mode, include, seed):
    padding = min(padding, kernel // 2)
    x = torch.randn(1, 2, height, width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    ours, ours_grad = _pair_grad(lambda t: max_pool2d(t, kernel, stride, padding, 1, ceil_mode), x, seed)
    ref, ref_grad = _pair_grad(lambda t: F.max_pool2d(t, kernel, stride, padding, 1, ceil_mode), x, seed)
    assert torch.equal(ours, ref)
    reference_pool = lambda t: F.max_pool2d(t, kernel, stride, padding, 1, ceil_mode)  # noqa: E731
    assert_bounded(ours_grad, ref_grad, max_pool_grad_bound(reference_pool, x, kernel, seed))
    args = (kernel, stride, padding, ceil_mode, include)
    ours, ours_grad = _pair_grad(lambda t: avg_pool2d(t, *args), x, seed)
    ref, ref_grad = _pair_grad(lambda t: F.avg_pool2d(t, *args), x, seed)
    forward, backward = avg_pool_bounds(x, *args, grad_seed=seed)
    assert_bounded(ours, ref, forward)
    assert_bounded(ours_grad, ref_grad, backward)


def test_modules_and_bad_input():
    x = torch.randn(1, 2, 6, 6)
    assert torch.equal(MaxPool2d(2)(x), F.max_pool2d(x, 2))
    forward, _ = avg_pool_bounds(x, 3, 2, 1, False, False)
    assert_bounded(
        AvgPool2d(3, 2, 1, count_include_pad=False)(x),
        F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
        forward,
    )
    assert "kernel_size=2" in repr(MaxPool2d(2))
    with pytest.raises(ValueError, match="input must be"):
        max_pool2d(torch.zeros(6, 6), 2)
    with pytest.raises(ValueError, match="input must be"):
        avg_pool2d(torch.zeros(1, 1, 6, 6, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="padding"):
        max_pool2d(x, 2, padding=2)
    with pytest.raises(ValueError, match="kernel_size"):
        max_pool2d(x, 0)
    with pytest.raises(ValueError, match="divisor_override"):
        avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(TypeError, match="input"):
        max_pool2d([[1.0]], 2)  # type: ignore[arg-type]
