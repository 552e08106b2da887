"""The documented fast paths give the same numbers: channels_last memory format, and torch.compile
(the whole backbone is captured as one graph — ``fullgraph=True`` — so Inductor can fuse it; the
Inductor code itself is checked for equality by benchmarks/bench_models.py --compile, too slow to
compile inside the unit tests on 2 CPU cores)."""

from __future__ import annotations

import pytest
import torch

from visionkit.models import create_model


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_channels_last_forward_and_backward_match(name: str) -> None:
    """Compared in float64: in float32 a training step with batch-2 BN on 2×2 maps amplifies
    summation-order rounding to ~1 % in some gradients, which would hide real errors. (float64
    depthwise convolutions in channels_last take a slow kernel, hence the 32×32 input.)"""
    torch.manual_seed(0)
    kwargs = {"width_multiplier": 0.5} if name == "mobilenet_v2" else {}
    model = create_model(name, num_classes=5, **kwargs).double()
    fast = create_model(name, num_classes=5, **kwargs).double().to(memory_format=torch.channels_last)
    fast.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    torch.manual_seed(1)  # the same dropout mask for both (training mode)
    expected = model(x)
    torch.manual_seed(1)
    output = fast(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(output, expected, rtol=1e-10, atol=1e-10)
    expected.square().sum().backward()
    output.square().sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    fast_grads = torch.cat([p.grad.flatten() for p in fast.parameters()])
    assert float((grads - fast_grads).norm() / grads.norm()) < 1e-9


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_channels_last_float32_inference(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        output = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "features_only"), [("resnet18", True)])
def test_torch_compile_captures_one_graph(name: str, features_only: bool) -> None:
    torch._dynamo.reset()
    model = create_model(name, num_classes=5, features_only=features_only).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # raises on any graph break
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected, output = model(x), compiled(x)
    # the "eager" backend runs the captured graph with the same eager kernels on the same tensors
    if features_only:
        assert output.keys() == expected.keys()
        for key in expected:
            assert torch.equal(output[key], expected[key])
    else:
        assert torch.equal(output, expected)
