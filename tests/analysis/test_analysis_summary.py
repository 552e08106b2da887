"""summary(): the handbook's numbers (§12, §13, §14, §28, §36), published model MACs, every layer rule
against its formula, receptive field against a brute-force gradient reference, and honest
"uncounted" reporting."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visionkit.analysis import summary
from visionkit.models import create_model
from visionkit.nn import DepthwiseSeparableConv, InceptionModule


def _conv(in_channels: int, out_channels: int, kernel_size: int, padding: int = 0) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)


def test_handbook_alexnet_figures() -> None:
    conv1 = summary(nn.Conv2d(3, 96, 11, stride=4), (1, 3, 227, 227))  # the paper's 96-filter conv1
    assert conv1.total_params == (11 * 11 * 3 + 1) * 96 == 34_944
    assert conv1.layers[0].output_shape == (1, 96, 55, 55)
    with torch.device("meta"):
        model = create_model("alexnet")
    result = summary(model, device="meta")
    assert result.layer("classifier.1").params == (6 * 6 * 256 + 1) * 4096 == 37_752_832  # fc6
    assert result.layer("classifier.6").params == 4096 * 1000 + 1000 == 4_097_000  # fc8
    assert result.total_params == 61_100_840 and result.uncounted == []


class NaiveInception(nn.Module):
    """The handbook's module without 1×1 reductions: 1×1/64, 3×3/128, 5×5/32 and 3×3 max-pool."""

    def __init__(self) -> None:
        super().__init__()
        self.branch1, self.branch2, self.branch3 = (
            _conv(192, 64, 1),
            _conv(192, 128, 3, 1),
            _conv(192, 32, 5, 2),
        )
        self.pool = nn.MaxPool2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.pool(x)], dim=1)


def test_handbook_inception_example_with_correct_sums() -> None:
    naive = summary(NaiveInception(), (1, 192, 28, 28))
    assert naive.total_params == 387_072  # the handbook prints 153,600 (wrong)
    assert naive.layers[-1].output_shape is not None
    reduced_module = InceptionModule(192, 64, 96, 128, 16, 32, 32, conv_block=_conv)
    reduced = summary(reduced_module, (1, 192, 28, 28))
    convs_in_handbook_sum = sum(row.params for row in reduced.layers if not row.name.startswith("branch4"))
    assert convs_in_handbook_sum == 157_184  # the handbook prints 15,872 (wrong)
    assert reduced.total_params == 157_184 + 192 * 32  # plus the pool projection the handbook omits
    with torch.no_grad():
        assert reduced_module(torch.zeros(1, 192, 28, 28)).shape[1] == 64 + 128 + 32 + 32 == 256
        assert NaiveInception()(torch.zeros(1, 192, 28, 28)).shape[1] == 64 + 128 + 32 + 192 == 416


def test_handbook_depthwise_separable_ratio() -> None:
    standard = summary(_conv(192, 256, 3, 1), (1, 192, 28, 28)).total_macs
    separable = summary(
        DepthwiseSeparableConv(192, 256, 3, norm_layer=None, activation_layer=None), (1, 192, 28, 28)
    )
    assert standard == 3 * 3 * 192 * 256 * 28 * 28
    assert separable.total_macs == 3 * 3 * 192 * 28 * 28 + 192 * 256 * 28 * 28
    assert round(separable.total_macs / standard, 4) == 0.1150 == round((3 * 3 + 256) / (3 * 3 * 256), 4)


@pytest.mark.parametrize("channels", [8, 64])
def test_handbook_vgg_three_3x3_versus_one_7x7(channels: int) -> None:
    stack = nn.Sequential(*[nn.Sequential(_conv(channels, channels, 3, 1), nn.ReLU()) for _ in range(3)])
    three = summary(stack, (1, channels, 20, 20))
    one = summary(_conv(channels, channels, 7, 3), (1, channels, 20, 20))
    assert three.total_params == 27 * channels**2 and one.total_params == 49 * channels**2
    assert three.layers[-1].receptive_field == one.layers[-1].receptive_field == 7
    assert [row.receptive_field for row in three.layers if row.type == "Conv2d"] == [3, 5, 7]


@pytest.mark.parametrize(
    ("name", "macs", "rounded"),
    [
        ("resnet50", 4_089_184_256, "4.089"),
        ("mobilenet_v2", 300_774_272, "0.30"),
        ("vgg16", 15_470_264_320, "15.47"),
    ],
)
def test_published_model_macs(name: str, macs: int, rounded: str) -> None:
    with torch.device("meta"):
        model = create_model(name)
    result = summary(model, (1, 3, 224, 224), device="meta")
    assert result.total_macs == macs and result.total_flops == 2 * macs
    assert f"{macs / 1e9:.{len(rounded.split('.')[1])}f}" == rounded
    assert result.uncounted == []
    assert result.total_other_ops > 0  # BN, ReLU, pooling, adds are counted, separately from MACs


def test_mobilenet_v1_paper_figures() -> None:
    with torch.device("meta"):
        model = create_model("mobilenet_v1")
    result = summary(model, device="meta")
    assert result.total_params == 4_231_976 and round(result.total_macs / 1e6) == 569


class Everything(nn.Module):
    """One of each counted layer/op, with the expected MACs / other ops written out by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.grouped = nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=4)  # 8x8 out
        self.norm = nn.BatchNorm2d(16)
        self.act = nn.ReLU6()
        self.pool = nn.MaxPool2d(2)  # 4x4 out
        self.up = nn.ConvTranspose2d(16, 4, 2, stride=2)  # 8x8 out
        self.nearest = nn.Upsample(scale_factor=2, mode="nearest")  # 16x16
        self.bilinear = nn.Upsample(scale_factor=0.5, mode="bilinear")  # 8x8
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.act(self.norm(self.grouped(x))))
        y = self.bilinear(self.nearest(self.up(y)))
        y = y + y  # counted add between modules
        z = self.fc(self.gap(y).flatten(1))
        return z @ torch.ones(6, 5)  # counted matmul


def test_every_rule_against_its_formula() -> None:
    result = summary(Everything(), (2, 8, 8, 8))
    rows = {row.name: row for row in result.layers}
    assert rows["grouped"].macs == 2 * 16 * 8 * 8 * (8 // 4) * 9
    assert rows["norm"].other_ops == 2 * (2 * 16 * 8 * 8)
    assert rows["act"].other_ops == 2 * 16 * 8 * 8
    assert rows["pool"].other_ops == 2 * 16 * 4 * 4 * 4
    assert rows["up"].macs == (2 * 16 * 4 * 4) * 4 * 4  # every input element scatters to out/groups × k²
    assert rows["nearest"].other_ops == 0 and rows["bilinear"].other_ops == 4 * 2 * 4 * 8 * 8
    assert rows["gap"].other_ops == 2 * 4 * 8 * 8
    assert rows["fc"].macs == 2 * 6 * 4
    assert rows["<model> (add)"].other_ops == 2 * 4 * 8 * 8
    assert rows["<model> (matmul)"].macs == 2 * 5 * 6
    assert result.uncounted == []
    expected_macs = sum(rows[k].macs for k in ("grouped", "up", "fc", "<model> (matmul)"))
    assert result.total_macs == expected_macs and result.total_flops == 2 * expected_macs


def _brute_force_receptive_field(stack: nn.Sequential, size: int) -> int:
    """Gradient of one output pixel w.r.t. the input: the non-zero extent is the receptive field."""
    x = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    for module in stack:
        if isinstance(module, nn.Conv2d):
            nn.init.constant_(module.weight, 1.0)
    y = stack.double()(x + 1.0)
    y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
    rows = (x.grad[0, 0].abs().sum(dim=1) > 0).nonzero()
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize(
    "layers",
    [
        [(3, 1, 1), (3, 1, 1), (3, 1, 1)],
        [(7, 2, 1), ("pool", 3, 2), (3, 1, 1), (3, 2, 1)],
        [(3, 1, 2), (3, 2, 1), (5, 1, 3), (1, 1, 1)],
    ],
)
def test_receptive_field_against_gradient_reference(layers: list[tuple]) -> None:
    modules: list[nn.Module] = []
    for kernel, stride, dilation in layers:
        if kernel == "pool":
            modules.append(nn.AvgPool2d(stride, dilation))  # ("pool", kernel, stride)
        else:
            modules += [nn.Conv2d(1, 1, kernel, stride, dilation=dilation, bias=False), nn.ReLU()]
    stack = nn.Sequential(*modules)
    result = summary(stack, (1, 1, 96, 96))
    assert result.layers[-1].receptive_field == _brute_force_receptive_field(stack, 96)
    strides = [m.stride for m in modules if hasattr(m, "stride")]
    product = 1
    for stride in strides:
        product *= stride[0] if isinstance(stride, tuple) else stride
    assert result.layers[-1].effective_stride == product


def test_uncounted_is_reported_never_silent() -> None:
    class Custom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))
            self.custom = Custom()
            self.fc = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.fft(self.custom(self.fc(x)) * self.scale).real

    result = summary(Odd(), (2, 3))
    text = " | ".join(result.uncounted)
    assert "custom (Custom)" in text and "torch.fft.fft" in text and "Odd" in text
    assert "uncounted: " in str(result) and "torch.fft.fft" in str(result)


def test_shared_module_counted_once_and_mode_restored() -> None:
    layer = nn.Linear(4, 4)
    model = nn.Sequential(layer, nn.ReLU(), layer).train()
    result = summary(model, (1, 4))
    assert result.total_params == 20 and sum(row.params for row in result.layers) == 20
    assert result.total_macs == 2 * 16 and model.training


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="input_size"):
        summary(nn.Linear(2, 2), (1, 0))
    with pytest.raises(TypeError, match=r"nn\.Module"):
        summary("resnet50", (1, 3, 8, 8))  # type: ignore[arg-type]


def test_to_dict_and_rich_table() -> None:
    result = summary(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), (1, 3, 8, 8))
    data = result.to_dict()
    assert (
        data["total_macs"] == 4 * 6 * 6 * 27 and data["layers"][0]["flops"] == 2 * data["layers"][0]["macs"]
    )
    assert result.to_rich_table().row_count == 3  # two layers + totals
