"""Epilogue fusion (visionkit.deploy.epilogue): one oneDNN kernel computes ``act(conv(x) + b [+ other])``.

The bounds. Against the exact (float64) value ``y = W ∗ x + b [+ o]``, one float32 evaluation of the
convolution with its bias is within ``γ(K + 1)·(|W| ∗ |x| + |b|)`` (``K`` the fan-in; any summation order,
fused multiply-adds allowed: tests/models/network_error.py), adding ``o`` rounds once more, ``u·|ŷ|``; so both
the fused kernel and the separate modules are within ``γ(K + 2)·(|W| ∗ |x| + |b| + |o|)`` of ``y``. ReLU and
ReLU6 are exact and 1-Lipschitz; LeakyReLU (slope ≤ 1) is 1-Lipschitz and rounds its product once more,
``u·|act(y)|``. Whole networks: each evaluation — the fused kernels (inference) or the modules (gradients on,
which is when the bound is computed) — has the same local rounding bounds at the same operations, so the
first-order bound of tests/test_deploy_fuse.py holds for the kernels' output too.
"""

from __future__ import annotations

import copy

import pytest
import torch
from fold_bounds import fold_errors, randomize_norms
from network_error import first_order_output_bound, without_inplace
from torch import nn

from running_error import assert_bounded
from tolerances import gamma, unit_roundoff
from visionkit.deploy.epilogue import FusedConv2d, fuse_epilogues, onednn_available
from visionkit.deploy.fuse import ConvAct, fuse_model
from visionkit.models import create_model

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this PyTorch build has no oneDNN kernels")
OUTPUTS = [(sample, k) for sample in range(2) for k in range(5)]
F32 = torch.float32


def _exact(block: FusedConv2d, x: torch.Tensor, other: torch.Tensor | None):
    """``(act(y), bound)`` of the module docstring, in float64."""
    with torch.no_grad():
        return _exact_values(block, x, other)


def _exact_values(block: FusedConv2d, x: torch.Tensor, other: torch.Tensor | None):
    conv = block.conv
    args = (conv.stride, conv.padding, conv.dilation, conv.groups)
    w, b = conv.weight.double(), conv.bias.double() if conv.bias is not None else None
    y = nn.functional.conv2d(x.double(), w, b, *args)
    magnitude = nn.functional.conv2d(x.double().abs(), w.abs(), b.abs() if b is not None else None, *args)
    if other is not None:
        y, magnitude = y + other.double(), magnitude + other.double().abs()
    fan_in = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
    bound = gamma(fan_in + 2, F32) * magnitude
    if block.activation is not None:
        y = block.activation.double()(y.clone())
    if isinstance(block.activation, nn.LeakyReLU):
        bound = bound + unit_roundoff(F32) * y.abs()
    return y, bound


CASES = [  # (C_in, C_out, kernel, stride, padding, dilation, groups)
    (8, 16, 3, 1, 1, 1, 1),
    (8, 16, 3, 1, 1, 1, 1, False),  # no bias
    (8, 8, 3, 2, 1, 1, 8),  # depthwise, strided
    (6, 12, 1, 1, 0, 1, 1),
    (4, 8, 3, 1, 2, 2, 2),  # dilated, grouped
    (3, 5, 7, 2, 3, 1, 1),  # a stem
]
ACTIVATIONS = [None, nn.ReLU(), nn.ReLU6(), nn.LeakyReLU(0.1)]


@needs_onednn
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda a: type(a).__name__)
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_kernel_and_modules_within_the_bound_of_the_exact_value(case, activation, residual, channels_last):
    torch.manual_seed(0)
    c_in, c_out, k, s, p, d, g, *bias = case
    conv = nn.Conv2d(c_in, c_out, k, s, p, d, g, bias=bias[0] if bias else True)
    block = FusedConv2d(conv, activation, residual=residual).eval()
    x = 3 * torch.randn(2, c_in, 22, 13)[:, :, ::2]  # a strided view (channels_last below: a copy)
    with torch.no_grad():
        shape = block.conv(x).shape
        other = 3 * torch.randn(shape) if residual else None
        if channels_last:
            block = block.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        fast = block(x, other) if residual else block(x)
        assert block._fast(x, other)  # the kernel ran
    with torch.enable_grad():
        x.requires_grad_(True)
        slow = block(x, other) if residual else block(x)
        assert not block._fast(x, other)  # with gradients the modules run
    expected, bound = _exact(block, x.detach(), other)
    assert_bounded(fast, expected, bound)
    assert_bounded(slow.detach(), expected, bound)
    if channels_last:
        assert fast.is_contiguous(memory_format=torch.channels_last)


def test_gradients_flow_through_the_modules_in_float64() -> None:
    block = FusedConv2d(nn.Conv2d(3, 4, 3, padding=1).double(), nn.LeakyReLU(0.1), residual=True)
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    other = torch.randn(1, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x, other))


@needs_onednn
def test_the_modules_run_where_the_kernel_would_differ() -> None:
    """Broadcast ``other``, an empty batch, float64, ``padding="same"``: the modules, with their semantics."""
    block = FusedConv2d(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), residual=True).eval()
    x = torch.randn(2, 2, 6, 6)
    with torch.no_grad():
        for inputs in [(x, torch.randn(4, 1, 1)), (x[:0], torch.randn(0, 4, 6, 6))]:
            assert not block._fast(*inputs)
            assert torch.equal(block(*inputs), torch.relu(block.conv(inputs[0]) + inputs[1]))
        other = torch.randn(2, 4, 6, 6)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the user asked for bfloat16 convolutions
            assert not block._fast(x, other)
            assert torch.equal(block(x, other), torch.relu(block.conv(x) + other))
        assert not block.double()._fast(x.double(), torch.randn(2, 4, 6, 6, dtype=torch.float64))
        same = FusedConv2d(nn.Conv2d(2, 4, 3, padding="same"), nn.ReLU()).eval()
        assert not same._fast(x, None) and same(x).shape == (2, 4, 6, 6)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match=r"conv must be an nn\.Conv2d, got Linear"):
        FusedConv2d(nn.Linear(2, 2))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="activation SiLU has no oneDNN post-op"):
        FusedConv2d(nn.Conv2d(2, 2, 1), nn.SiLU())
    with pytest.raises(TypeError, match="residual=True needs the tensor `other`"):
        FusedConv2d(nn.Conv2d(2, 2, 1), residual=True)(torch.randn(1, 2, 3, 3))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "darknet53", "googlenet"])
def test_fused_network_kernels_equal_the_unfused_network(name: str) -> None:
    torch.manual_seed(0)
    model = without_inplace(create_model(name, num_classes=5).eval())
    with torch.no_grad():
        randomize_norms(model, torch.Generator().manual_seed(1))
    fused = without_inplace(fuse_model(model, epilogue=True))
    x = torch.randn(2, 3, 64, 64)
    expected, bound_unfused = first_order_output_bound(copy.deepcopy(model), x, OUTPUTS, F32)
    errors = fold_errors(model, fused)
    _, bound_fused = first_order_output_bound(copy.deepcopy(fused), x, OUTPUTS, F32, errors)
    with torch.no_grad():
        got = fused(x)  # the oneDNN kernels (inference)
    pick = lambda t: torch.stack([t[i] for i in OUTPUTS])  # noqa: E731
    assert_bounded(pick(got), pick(expected), bound_unfused + bound_fused)
    assert not any(isinstance(m, ConvAct) for m in fused.modules())


def test_what_resnet18_and_mobilenet_v2_fuse() -> None:
    """ResNet-18: the stem's conv + ReLU, and per basic block conv1 + ReLU and conv2 + shortcut + ReLU
    (8 blocks); MobileNetV2: every conv + ReLU6 and the projection + shortcut of the 10 blocks with one."""
    resnet = fuse_model(create_model("resnet18", num_classes=5), epilogue=True)
    chains = resnet.fusion_report.epilogues
    assert len(chains) == 17 and chains[0] == ("conv1",)
    assert sum(len(c) == 3 for c in chains) == 8 and sum(len(c) == 2 for c in chains) == 8
    mobile = fuse_model(create_model("mobilenet_v2", num_classes=5), epilogue=True)
    residual = [m for m in mobile.modules() if isinstance(m, FusedConv2d) and m.residual]
    assert len(residual) == 10 and all(m.activation is None for m in residual)
    assert isinstance(mobile.features, nn.Sequential)  # a backbone's stages stay indexable


class _OneConv(nn.Module):
    """A 1×1 convolution ``conv`` inside ``body(self, x)``."""

    def __init__(self, body) -> None:
        super().__init__()
        self.conv, self.body = nn.Conv2d(2, 2, 1), body

    def forward(self, x):
        return self.body(self, x)


def _used_twice(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = net.conv(x)
    return torch.relu(y + x) * y


def _in_place_add(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = net.conv(x)
    y += x
    return torch.nn.functional.relu(y)


def test_a_conv_whose_output_is_used_twice_is_not_fused() -> None:
    net = _OneConv(_used_twice)
    _, joined = fuse_epilogues(net, torch.fx.symbolic_trace(net).graph)
    assert joined == [] and type(net.conv) is nn.Conv2d


def test_functional_relu_and_in_place_add_are_joined() -> None:
    net = _OneConv(_in_place_add).eval()
    x = torch.randn(1, 2, 4, 4)
    expected = net(x)
    fused = fuse_model(net, epilogue=True)
    assert fused.fusion_report.epilogues == [("conv", "add", "relu")]  # fx records `y += x` as an addition
    assert isinstance(fused.conv, FusedConv2d) and fused.conv.residual
    with torch.no_grad():
        assert_bounded(fused(x), expected, 2 * _exact(fused.conv, x, x)[1])


def test_export_writes_the_ordinary_operators(tmp_path) -> None:
    """Tracing for ONNX runs the modules: the graph has Conv, Add and Relu, which any runtime reads."""
    pytest.importorskip("onnx")
    import onnx

    from visionkit.deploy.onnx import export_onnx

    fused = fuse_model(create_model("resnet18", num_classes=5), epilogue=True)
    path = export_onnx(fused, tmp_path, example_size=(64, 64))["model"]
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("Conv") == 20 and ops.count("Add") == 8 and ops.count("Relu") == 17


def test_docstring_examples_run() -> None:
    import doctest

    from visionkit.deploy import epilogue

    assert doctest.testmod(epilogue).failed == 0


def _detectors_and_segmenters() -> list[str]:
    from visionkit.models import list_models
    from visionkit.models.detectors.base import Detector
    from visionkit.models.segmentation.fcn import FCN

    with torch.device("meta"):
        return [name for name in list_models() if isinstance(create_model(name), (Detector, FCN))]


@pytest.mark.parametrize("name", _detectors_and_segmenters())
def test_every_detector_and_segmenter_fuses_and_keeps_its_methods(name: str) -> None:
    """Rewritten modules keep their class, methods and attributes (a detector asks its neck for
    ``output_shape()``); the fused model runs, and its convolutions + activations are joined."""
    from visionkit.models.detectors.base import Detector

    torch.manual_seed(0)
    model = create_model(name, num_classes=3).eval()
    fused = fuse_model(model, epilogue=True)
    assert type(fused) is type(model) and fused.fusion_report.epilogues
    kernels = [m for m in fused.modules() if isinstance(m, FusedConv2d)]
    assert kernels and all(m.activation is not None or m.residual for m in kernels)
    with torch.no_grad():
        if isinstance(model, Detector):
            assert fused.feature_shapes == model.feature_shapes
            (out,) = fused([torch.rand(3, 96, 128)])
            assert set(out) >= {"boxes", "scores", "labels"}
        else:
            assert fused(torch.rand(1, 3, 96, 128)).shape == model(torch.rand(1, 3, 96, 128)).shape
