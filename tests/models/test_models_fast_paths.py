"""The documented fast paths give the same numbers: channels_last memory format, and torch.compile
(the whole backbone is captured as one graph — ``fullgraph=True`` — so Inductor can fuse it; the
Inductor code itself is checked for equality by benchmarks/bench_models.py --compile, too slow to
compile inside the unit tests on 2 CPU cores)."""

from __future__ import annotations

import copy

import pytest
import torch
from layerwise import assert_layers_agree
from network_error import first_order_output_bound, without_inplace

from running_error import assert_bounded
from visionkit.models import create_model

OUTPUTS = [(sample, k) for sample in range(2) for k in range(5)]


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_channels_last_forward_and_backward_match(name: str) -> None:
    """A training step in float64, contiguous against channels_last (other kernels, other summation
    orders): every layer's output and gradients given the same input (tests/models/layerwise.py), and
    the network's outputs within twice the first-order bound of tests/models/network_error.py (batch
    norm in training mode included). (float64 depthwise convolutions in channels_last take a slow
    kernel, hence the small input.)"""
    torch.manual_seed(0)
    kwargs = {"width_multiplier": 0.5} if name == "mobilenet_v2" else {}
    model = without_inplace(create_model(name, num_classes=5, **kwargs).double())
    fast = without_inplace(
        create_model(name, num_classes=5, **kwargs).double().to(memory_format=torch.channels_last)
    )
    fast.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    torch.manual_seed(1)  # the same dropout mask for all runs (training mode)
    expected, bounds = first_order_output_bound(copy.deepcopy(model), x, OUTPUTS, torch.float64)
    torch.manual_seed(1)
    output = fast(x.contiguous(memory_format=torch.channels_last))
    assert_bounded(
        torch.stack([output[i] for i in OUTPUTS]), torch.stack([expected[i] for i in OUTPUTS]), 2 * bounds
    )
    assert_layers_agree(model, fast, x, torch.channels_last)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_channels_last_float32_inference(name: str) -> None:
    """Evaluation in float32: every layer in channels_last against the contiguous one on the same input,
    within twice the layer's rounding bound (tests/models/layerwise.py)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert_layers_agree(model, fast, torch.randn(2, 3, 64, 64), torch.channels_last)


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
