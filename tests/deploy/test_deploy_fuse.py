"""Layer fusion (visionkit.deploy.fuse): the fused model computes the same function as the unfused one.

The bound. In exact arithmetic a folded layer is the same function (``W·s ∗ x + b·s + t`` is
``s·(W ∗ x + b) + t``) and a merged 1×1 convolution's slices are its branches, so the exact fused network
*is* the exact unfused network. Each float32 evaluation is within the first-order rounding bound of
tests/models/network_error.py of that exact network, taken on its own operations: the unfused one with its
batch norms (``γ(6)`` per element), the fused one with its convolutions and, as parameter perturbations,
``|W'₃₂ − W·s|`` and ``|b'₃₂ − (b·s + t)|`` of each folded layer — the float32 parameter against the float64
fold (``fold_batch_norm``'s own computation, in float64) plus that float64 fold's own error, at most
``γ₆₄(8)`` of the magnitudes it combines (``var + eps``, ``sqrt``, ``/``, ``×W``; ``b·s``, ``μ·s``, two
additions). So ``|fused − unfused| <= bound(unfused) + bound(fused)``, checked on 2 images × 5 logits of
every registered classifier.
"""

from __future__ import annotations

import copy

import pytest
import torch
from fold_bounds import fold_errors, randomize_norms
from network_error import first_order_output_bound, without_inplace
from torch import nn

from running_error import assert_bounded
from visionkit.deploy.fuse import ConvAct, fold_batch_norm, fuse_model
from visionkit.models import create_model, list_models
from visionkit.models.detectors.base import Detector
from visionkit.models.segmentation.fcn import FCN

OUTPUTS = [(sample, k) for sample in range(2) for k in range(5)]


def _is_classifier(name: str) -> bool:
    with torch.device("meta"):
        return not isinstance(create_model(name), (Detector, FCN))


def _assert_fused_equal(model: nn.Module, x: torch.Tensor, outputs=OUTPUTS) -> nn.Module:
    model = without_inplace(model.eval())
    fused = without_inplace(fuse_model(model))
    expected, bound_unfused = first_order_output_bound(copy.deepcopy(model), x, outputs, torch.float32)
    got, bound_fused = first_order_output_bound(
        copy.deepcopy(fused), x, outputs, torch.float32, fold_errors(model, fused)
    )
    pick = lambda t: torch.stack([t[i] for i in outputs])  # noqa: E731
    assert_bounded(pick(got), pick(expected), bound_unfused + bound_fused)
    return fused


@pytest.mark.parametrize("name", list_models())
def test_fused_classifier_equals_unfused(name: str) -> None:
    if not _is_classifier(name):
        pytest.skip(f"{name} is not a classifier")
    torch.manual_seed(0)
    model = create_model(name, num_classes=5)
    with torch.no_grad():
        randomize_norms(model, torch.Generator().manual_seed(1))
    channels = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    fused = _assert_fused_equal(model, torch.randn(2, channels, 64, 64))
    norms = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    left = sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    folded = len(fused.fusion_report.folded)
    assert norms - left == folded  # each fold removed one norm, and nothing else did
    if name in ("resnet18", "resnet50", "mobilenet_v2", "googlenet", "vgg11_bn", "darknet53"):
        assert left == 0  # every batch norm of these follows a convolution directly
    if name == "googlenet":  # nine Inception modules, three sibling 1×1 convolutions each
        assert [len(members) for _, members in fused.fusion_report.merged] == [3] * 9


def test_fold_conv_transpose_linear_and_groups() -> None:
    """ConvTranspose2d (grouped, strided) + BN, Linear + BatchNorm1d, a grouped conv + BN + ReLU6."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
            self.up_bn = nn.BatchNorm2d(6)
            self.conv = nn.Conv2d(6, 6, 3, padding=1, groups=3, bias=False)
            self.bn = nn.BatchNorm2d(6)
            self.act = nn.ReLU6()
            self.fc = nn.Linear(6, 7)
            self.fc_bn = nn.BatchNorm1d(7)

        def forward(self, x):
            y = self.act(self.bn(self.conv(self.up_bn(self.up(x)))))
            return self.fc_bn(self.fc(y.mean((2, 3))))

    net = Net()
    with torch.no_grad():
        randomize_norms(net, torch.Generator().manual_seed(1))
    fused = _assert_fused_equal(net, torch.randn(2, 4, 5, 5), [(s, k) for s in range(2) for k in range(7)])
    assert fused.fusion_report.folded == [("up", "up_bn"), ("conv", "bn", "act"), ("fc", "fc_bn")]
    assert isinstance(fused.conv, ConvAct) and isinstance(fused.act, nn.Identity)


def test_not_folded_when_the_conv_output_is_used_twice() -> None:
    """A convolution whose output also feeds something else keeps its batch norm (folding would change
    that other consumer), and a batch norm before a convolution (pre-activation) is left alone."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)
            self.pre, self.conv2 = nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3)

        def forward(self, x):
            y = self.conv(x)
            return self.conv2(self.pre(self.bn(y) + y))

    fused = fuse_model(Net())
    assert fused.fusion_report.folded == [] and isinstance(fused.bn, nn.BatchNorm2d)


def test_detector_backbone_is_fused_and_untraceable_parts_reported() -> None:
    model = create_model("retinanet_resnet50_fpn", num_classes=3)
    fused = fuse_model(model)
    assert type(fused) is type(model)  # in place: the detector keeps its class and methods
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.backbone.modules())
    assert "<model>" in fused.fusion_report.untraced  # the detector's forward checks its inputs


def test_fold_batch_norm_against_a_hand_computation() -> None:
    """One output channel by hand in float64: ``W'[c] = W[c]·γ/√(σ²+ε)``, ``b' = β − μ·γ/√(σ²+ε)``."""
    conv, bn = nn.Conv2d(2, 2, 1, bias=False).double(), nn.BatchNorm2d(2, eps=0.25).double().eval()
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -4.0]]).view(2, 2, 1, 1))
        bn.running_mean.copy_(torch.tensor([1.0, -2.0]))
        bn.running_var.copy_(torch.tensor([3.75, 0.0]))  # sqrt(4) = 2 and sqrt(0.25) = 0.5: exact
        bn.weight.copy_(torch.tensor([2.0, 1.0]))
        bn.bias.copy_(torch.tensor([0.5, 1.0]))
    fused = fold_batch_norm(conv, bn)
    assert torch.equal(fused.weight.view(2, 2), torch.tensor([[1.0, 2.0], [6.0, -8.0]], dtype=torch.float64))
    assert torch.equal(fused.bias, torch.tensor([0.5 - 1.0, 1.0 + 4.0], dtype=torch.float64))


def test_docstring_examples_run() -> None:
    import doctest

    from visionkit.deploy import fuse

    assert doctest.testmod(fuse).failed == 0
