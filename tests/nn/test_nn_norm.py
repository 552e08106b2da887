"""Our BatchNorm2d against torch.nn.BatchNorm2d: forward, backward, running buffers, eval, gradcheck."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bn_bounds as bn
from running_error import assert_bounded, assert_formulas_agree, exact, stack
from visionkit.nn import BatchNorm2d, batch_norm_2d
from visionkit.nn.norm import _BatchNormTrainFunction


def _reference_batch_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """Slow, obvious per-channel formula from the paper."""
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        values = x[:, c]
        mean = values.sum() / values.numel()
        var = ((values - mean) ** 2).sum() / values.numel()
        out[:, c] = weight[c] * (values - mean) / torch.sqrt(var + eps) + bias[c]
    return out


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (2, 8, 1, 3), (7, 2, 3, 1)])
def test_matches_torch_forward_backward_and_buffers(momentum: float | None, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    ours, theirs = BatchNorm2d(shape[1], momentum=momentum), nn.BatchNorm2d(shape[1], momentum=momentum)
    with torch.no_grad():
        for module in (ours, theirs):
            module.weight.copy_(torch.linspace(0.5, 2.0, shape[1]))
            module.bias.copy_(torch.linspace(-1.0, 1.0, shape[1]))
    # Every comparison: our and torch's formulas (tests/nn/bn_bounds.py) in float32 running-error
    # arithmetic, the gap of their exact values plus both bounds; the buffers and accumulated parameter
    # gradients carry their bounds from step to step.
    f32, weight, bias, eps = torch.float32, ours.weight, ours.bias, ours.eps
    running = [exact(torch.zeros(shape[1]), f32), exact(torch.ones(shape[1]), f32)]
    grads_w, grads_b = [], []
    for step in range(3):  # several steps exercise the running-average update and num_batches_tracked
        x = torch.randn(shape) * (step + 1) + step
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = ours(x1), theirs(x2)
        assert_formulas_agree(
            bn.per_channel(y1),
            lambda d, x=x: bn.forward(x, weight, bias, eps, d, ours=True),
            bn.per_channel(y2),
            lambda d, x=x: bn.forward(x, weight, bias, eps, d, ours=False),
            dtypes=(f32, f32),
        )
        grad = torch.randn_like(y1)
        y1.backward(grad)
        y2.backward(grad)
        assert_formulas_agree(
            bn.per_channel(x1.grad),
            lambda d, x=x, g=grad: bn.grad_input(x, weight, g, eps, d, ours=True),
            bn.per_channel(x2.grad),
            lambda d, x=x, g=grad: bn.grad_input(x, weight, g, eps, d, ours=False),
            dtypes=(f32, f32),
        )
        factor = 1.0 / (step + 1) if momentum is None else momentum
        running = bn.running_update(*running, x, factor, f32)
        grads_w.append([bn.grad_parameters(x, grad, eps, f32, flag)[0] for flag in (True, False)])
        grads_b.append(bn.grad_parameters(x, grad, eps, f32, True)[1])
    # parameter gradients accumulate over the 3 steps; the two differ in formula for the weight gradient
    assert_accumulated(ours.weight.grad, theirs.weight.grad, [g[0] for g in grads_w], [g[1] for g in grads_w])
    assert_accumulated(ours.bias.grad, theirs.bias.grad, grads_b, grads_b)
    for got, want, bounded in zip(
        (ours.running_mean, ours.running_var), (theirs.running_mean, theirs.running_var), running, strict=True
    ):
        assert_bounded(got, want, 2 * bounded.error)  # the unbiased variance in the update
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3
    ours.eval(), theirs.eval()
    x = torch.randn(shape)
    output = bn.evaluation(x, weight, bias, *running, eps, f32)
    assert_bounded(bn.per_channel(ours(x)), bn.per_channel(theirs(x)), 2 * output.error)


def assert_accumulated(got, want, ours_steps, theirs_steps) -> None:
    """Sums over steps of per-step values bounded by two formulas: their gap plus both bounds."""
    ours_total, theirs_total = stack(ours_steps, 0).sum(0), stack(theirs_steps, 0).sum(0)
    gap = (ours_total.value - theirs_total.value).abs()
    assert_bounded(got, want, gap + 2 * (ours_total.error + theirs_total.error))


def test_against_slow_reference_and_state_dict_names() -> None:
    x = torch.randn(3, 4, 2, 5, dtype=torch.float64)
    weight, bias = torch.rand(4, dtype=torch.float64) + 0.5, torch.randn(4, dtype=torch.float64)
    out = batch_norm_2d(x, None, None, weight, bias, training=True)
    # the reference: ((w·(x − μ)) / sqrt(σ² + ε)) + b from the same two-pass statistics: two formulas
    assert_formulas_agree(
        bn.per_channel(out),
        lambda d: bn.forward(x, weight, bias, 1e-5, d, ours=True),
        bn.per_channel(_reference_batch_norm(x, weight, bias, 1e-5)),
        lambda d: reference_formula(x, weight, bias, 1e-5, d),
    )
    assert list(BatchNorm2d(4).state_dict()) == list(nn.BatchNorm2d(4).state_dict())
    BatchNorm2d(4).load_state_dict(nn.BatchNorm2d(4).state_dict(), strict=True)


def reference_formula(x, weight, bias, eps, dtype):
    """_reference_batch_norm's order: ``(w·(x − μ)) / sqrt(Σ(x − μ)²/n + ε) + b``."""
    _, _, centered, squares, n = bn.statistics(x, dtype)
    w, b = exact(weight, dtype).unsqueeze(1), exact(bias, dtype).unsqueeze(1)
    return w * centered / (squares / n + eps).sqrt().unsqueeze(1) + b


def test_running_variance_is_unbiased() -> None:
    layer = BatchNorm2d(1, momentum=1.0)
    x = torch.tensor([1.0, 2.0, 3.0, 6.0]).view(4, 1, 1, 1)
    layer(x)
    # exact: the mean 12/4, the deviations and 14 are exact, 0·ρ + 1·stat is exact; one rounding of 14/3
    assert layer.running_mean.item() == 3.0
    assert layer.running_var.item() == torch.tensor(14.0 / 3.0).item()  # sum sq dev 14 over n - 1 = 3


def test_gradcheck_float64() -> None:
    x = torch.randn(3, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(2, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, w, b: _BatchNormTrainFunction.apply(a, w, b, 1e-5), (x, weight, bias)
    )


def test_eval_without_running_stats_uses_batch_statistics() -> None:
    ours, theirs = BatchNorm2d(3, track_running_stats=False), nn.BatchNorm2d(3, track_running_stats=False)
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 4, 4)
    assert_formulas_agree(
        bn.per_channel(ours(x)),
        lambda d: bn.forward(x, ours.weight, ours.bias, ours.eps, d, ours=True),
        bn.per_channel(theirs(x)),
        lambda d: bn.forward(x, ours.weight, ours.bias, ours.eps, d, ours=False),
        dtypes=(torch.float32, torch.float32),
    )


def test_bad_input_named() -> None:
    with pytest.raises(ValueError, match=r"expected input \(N, 3, H, W\)"):
        BatchNorm2d(3)(torch.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm2d(3)(torch.randn(1, 3, 1, 1))
    with pytest.raises(ValueError, match="shape"):
        batch_norm_2d(torch.randn(3, 4), None, None)
    with pytest.raises(ValueError, match="num_features"):
        BatchNorm2d(0)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 4),
    channels=st.integers(1, 4),
    height=st.integers(1, 4),
    width=st.integers(1, 4),
    momentum=st.sampled_from([0.0, 0.1, 0.9, 1.0]),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
    seed=st.integers(0, 2**16),
)
def test_fuzz_equal_to_torch(
    batch: int, channels: int, height: int, width: int, momentum: float, scale: float, seed: int
) -> None:
    """Random shapes (incl. 1×1 maps), momenta and magnitudes, in float64: same output, gradients, buffers."""
    generator = torch.Generator().manual_seed(seed)
    if batch * height * width < 2:  # both implementations reject a single value per channel
        single = torch.randn(batch, channels, height, width, generator=generator)
        for layer in (BatchNorm2d(channels), nn.BatchNorm2d(channels)):
            with pytest.raises(ValueError, match="more than 1 value per channel"):
                layer(single)
        return
    x = (
        torch.randn(batch, channels, height, width, generator=generator, dtype=torch.float64) * scale
    ).requires_grad_()
    ours, theirs = (
        BatchNorm2d(channels, momentum=momentum).double(),
        nn.BatchNorm2d(channels, momentum=momentum).double(),
    )
    y_ours, y_theirs = ours(x), theirs(x)
    data, w, b = x.detach(), ours.weight, ours.bias
    assert_formulas_agree(
        bn.per_channel(y_ours),
        lambda d: bn.forward(data, w, b, ours.eps, d, ours=True),
        bn.per_channel(y_theirs),
        lambda d: bn.forward(data, w, b, ours.eps, d, ours=False),
    )
    grad = torch.randn(y_ours.shape, generator=generator, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad(y_ours, x, grad)
    (g_theirs,) = torch.autograd.grad(y_theirs, x, grad)
    assert_formulas_agree(
        bn.per_channel(g_ours),
        lambda d: bn.grad_input(data, w, grad, ours.eps, d, ours=True),
        bn.per_channel(g_theirs),
        lambda d: bn.grad_input(data, w, grad, ours.eps, d, ours=False),
    )
    f64 = torch.float64
    buffers = bn.running_update(
        exact(torch.zeros(channels), f64), exact(torch.ones(channels), f64), data, momentum, f64
    )
    assert_bounded(ours.running_mean, theirs.running_mean, 2 * buffers[0].error)
    assert_bounded(ours.running_var, theirs.running_var, 2 * buffers[1].error)
