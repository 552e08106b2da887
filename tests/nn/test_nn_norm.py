"""Our BatchNorm2d against torch.nn.BatchNorm2d: forward, backward, running buffers, eval, gradcheck."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

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
    for step in range(3):  # several steps exercise the running-average update and num_batches_tracked
        x = torch.randn(shape) * (step + 1) + step
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = ours(x1), theirs(x2)
        torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
        grad = torch.randn_like(y1)
        y1.backward(grad)
        y2.backward(grad)
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.weight.grad, theirs.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.bias.grad, theirs.bias.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    torch.testing.assert_close(ours.running_var, theirs.running_var)  # unbiased variance in the update
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 3
    ours.eval(), theirs.eval()
    x = torch.randn(shape)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


def test_against_slow_reference_and_state_dict_names() -> None:
    x = torch.randn(3, 4, 2, 5, dtype=torch.float64)
    weight, bias = torch.rand(4, dtype=torch.float64) + 0.5, torch.randn(4, dtype=torch.float64)
    out = batch_norm_2d(x, None, None, weight, bias, training=True)
    torch.testing.assert_close(out, _reference_batch_norm(x, weight, bias, 1e-5))
    assert list(BatchNorm2d(4).state_dict()) == list(nn.BatchNorm2d(4).state_dict())
    BatchNorm2d(4).load_state_dict(nn.BatchNorm2d(4).state_dict(), strict=True)


def test_running_variance_is_unbiased() -> None:
    bn = BatchNorm2d(1, momentum=1.0)
    x = torch.tensor([1.0, 2.0, 3.0, 6.0]).view(4, 1, 1, 1)
    bn(x)
    assert bn.running_mean.item() == pytest.approx(3.0)
    assert bn.running_var.item() == pytest.approx(14.0 / 3.0)  # sum sq dev 14 over n - 1 = 3


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
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


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
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-8, atol=1e-8)
    grad = torch.randn(y_ours.shape, generator=generator, dtype=torch.float64)
    (g_ours,) = torch.autograd.grad(y_ours, x, grad)
    (g_theirs,) = torch.autograd.grad(y_theirs, x, grad)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.running_var, theirs.running_var, rtol=1e-10, atol=1e-12)
