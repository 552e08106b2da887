"""FCN alignment: the crops follow from the layer geometry (Caffe's published 19, 5/27, 5/9/31 recomputed),
and a single-pixel impulse at every position of odd and even sizes comes back centred where it went in.

The impulse probes make the network a chain of selections, so every value is exact: a one-channel VGG16
geometry whose convolutions are centre taps (``1.0``), max-pools as built, and the bilinear upsamplings
(dyadic weights: sums and products of them are exact in float32). Class ``c`` of the probe is scored from one
path only (the top, pool4, pool3). An impulse at ``p`` falls into one pooling cell of stride ``S`` — the
``S`` input pixels ``S·⌊(p + pad − 1)/S⌋ − pad + 1 ..`` — and that path's response must be exactly symmetric
about the cell's centre and peak there: a crop off by one pixel anywhere breaks the symmetry (checked by
the negative control). ResNet / MobileNet grids are centred on pixels (offset 0): with centre taps an
impulse at a multiple of ``S`` reaches exactly one position at stride ``S``, and the odd upsampling
kernels put its peak back on the very pixel.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from visionkit.models import create_model
from visionkit.models.segmentation import FCN, Frame, VGGEncoder
from visionkit.models.segmentation.alignment import align_crops, sequential_frames, transposed_frame
from visionkit.models.segmentation.encoders import VGG_CONFIGS

PATHS = ("fc7", "pool4", "pool3")
PATH_STRIDE = {"fc7": 32, "pool4": 16, "pool3": 8}


@pytest.mark.parametrize(
    ("name", "crops", "final"),
    [("fcn32s_vgg16", [], 19), ("fcn16s_vgg16", [(0, 5)], 27), ("fcn8s_vgg16", [(0, 5), (0, 9)], 31)],
)
def test_caffe_geometry_gives_the_published_crops(name: str, crops: list, final: int) -> None:
    """voc-fcn*s/net.py: crop(score_pool4, upscore2) = 5, crop(score_pool3, upscore_pool4) = 9, and the
    final crop(upscore, data) = 19 / 27 / 31 (the offsets Caffe's coord_map computes for those nets)."""
    with torch.device("meta"):
        model = create_model(name, alignment="caffe")
    assert model.skip_offsets == crops and model.final_crop == final
    assert [up.kernel_size for up in model.upsample] == {19: [64], 27: [4, 32], 31: [4, 4, 16]}[final]


def test_frames_by_hand() -> None:
    """conv1_1 padded by 100: centre of position j is j − 99; each 2×2 pool adds S/2; fc6 (7×7, no pad) adds
    3·32; a transposed conv of kernel k and stride f subtracts (S/f)(k − 1)/2."""
    encoder = VGGEncoder(VGG_CONFIGS[16], alignment="caffe")
    assert encoder.levels["pool3"].frame == Frame(8, -99 + 0.5 * (1 + 2 + 4))
    assert encoder.levels["pool4"].frame == Frame(16, -91.5)
    assert encoder.levels["fc7"].frame == Frame(32, -83.5 + 96)
    assert transposed_frame(Frame(32, 12.5), kernel=64, factor=32) == Frame(1, -19.0)
    assert align_crops(Frame(8, -23.5), Frame(8, -95.5)) == (0, 9)
    with pytest.raises(ValueError, match="not aligned"):
        align_crops(Frame(8, 0.0), Frame(8, 3.0))
    layers = [nn.Conv2d(1, 1, 3, stride=2, padding=1), nn.Conv2d(1, 1, 1, stride=2), nn.MaxPool2d(3, 2, 1)]
    assert [frame.offset for frame in sequential_frames(layers)] == [0.0, 0.0, 0.0]  # ResNet-style: on pixels


def _vgg_probe(alignment: str) -> FCN:
    """A one-channel VGG16 geometry FCN-8s whose convolutions are centre taps; class c = one path only."""
    config = [1 if isinstance(item, int) else item for item in VGG_CONFIGS[16]]
    encoder = VGGEncoder(config, fc_channels=1, alignment=alignment, dropout=0.0)
    model = FCN(encoder, 3, top="fc7", skips=("pool4", "pool3"), image_mean=(0, 0, 0), image_std=(1, 1, 1))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.zero_()
                module.bias.zero_()
                centre = module.kernel_size[0] // 2
                module.weight[:, 0, centre, centre] = 1.0
        for index, layer in enumerate([model.score_top, *model.score_skips.values()]):
            layer.weight.zero_()
            layer.weight[index] = 1.0  # class index <- this path only
    return model.eval()


def _cell_centre(position: int, stride: int, alignment: str) -> float:
    """Centre of the pooling cell of ``stride`` containing input pixel ``position``, from the pooling
    geometry alone: conv1_1 padded by ``pad`` puts pixel p at feature position p + pad − 1, and 2×2 pools
    group feature positions ``S·j .. S·j + S − 1``."""
    shift = 99 if alignment == "caffe" else 0
    return stride * ((position + shift) // stride) - shift + (stride - 1) / 2


def _check_symmetric_peak(response: torch.Tensor, centre: float, axis: int) -> None:
    size = response.shape[axis]
    for index in range(size):
        mirror = round(2 * centre - index)
        if 0 <= mirror < size:
            assert torch.equal(response.select(axis, index), response.select(axis, mirror)), (index, mirror)
    peak = response.amax(dim=1 - axis)
    nearest = [min(max(math.floor(centre), 0), size - 1), min(max(math.ceil(centre), 0), size - 1)]
    assert all(peak[i] == peak.max() for i in nearest), (centre, peak.tolist())


def _impulses(height: int, width: int, positions: list[tuple[int, int]]) -> torch.Tensor:
    images = torch.zeros(len(positions), 3, height, width)
    for index, (y, x) in enumerate(positions):
        images[index, 0, y, x] = 1.0
    return images


def _check_vgg_impulses(model: FCN, alignment: str, height: int, width: int, positions) -> None:
    for start in range(0, len(positions), 256):
        chunk = positions[start : start + 256]
        with torch.no_grad():
            responses = model(_impulses(height, width, chunk))
        for response, (y, x) in zip(responses, chunk, strict=True):
            for channel, path in enumerate(PATHS):
                stride = PATH_STRIDE[path]
                assert response[channel].max() > 0
                _check_symmetric_peak(response[channel], _cell_centre(y, stride, alignment), axis=0)
                _check_symmetric_peak(response[channel], _cell_centre(x, stride, alignment), axis=1)


@pytest.mark.parametrize("alignment", ["same", "caffe"])
def test_impulse_at_every_position_comes_back_to_its_cell_centre(alignment: str) -> None:
    model = _vgg_probe(alignment)
    height, width = 35, 34  # odd and even; more than one cell at stride 32
    grid = [(y, x) for y in range(height) for x in range(width)]
    _check_vgg_impulses(model, alignment, height, width, grid)
    for height, width in [(1, 1), (2, 3), (33, 64), (70, 65)]:  # every row and column position
        sweep = [(y, y * (width - 1) // max(height - 1, 1)) for y in range(height)]
        sweep += [(x * (height - 1) // max(width - 1, 1), x) for x in range(width)]
        _check_vgg_impulses(model, alignment, height, width, sweep)


def test_impulse_check_detects_a_one_pixel_misalignment() -> None:
    """Negative control: the same probe with the final crop one pixel off fails the check."""
    model = _vgg_probe("same")
    model.final_crop += 1
    with pytest.raises(AssertionError):
        _check_vgg_impulses(model, "same", 35, 34, [(y, 17) for y in range(35)])


def _centre_tap_probe(model: FCN) -> FCN:
    """Every conv a centre tap averaging its input channels (the first conv reads channel 0), BN an identity
    up to the positive factor 1/sqrt(1 + eps); class c scored from one path only."""
    model.image_mean.zero_()
    model.image_std.fill_(1.0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()
                centre_y, centre_x = module.kernel_size[0] // 2, module.kernel_size[1] // 2
                columns = 1 if module.in_channels == 3 else module.weight.shape[1]
                module.weight[:, :columns, centre_y, centre_x] = 1.0 / columns
            elif isinstance(module, nn.BatchNorm2d):
                module.reset_parameters()
        for index, layer in enumerate([model.score_top, *model.score_skips.values()]):
            layer.weight.zero_()
            layer.weight[index] = 1.0 / layer.in_channels
    return model.eval()


@pytest.mark.parametrize(
    ("name", "options"), [("fcn8s_resnet50", {}), ("fcn8s_mobilenet_v2", {"width_multiplier": 0.35})]
)
def test_backbone_fcn_impulses_peak_on_their_own_pixel(name: str, options: dict) -> None:
    """Offset-0 grids (odd kernels padded by k // 2) and odd upsampling kernels: an impulse at a multiple of
    the path's stride peaks on exactly that pixel, at odd (65) and even (80) sizes."""
    torch.manual_seed(0)
    model = _centre_tap_probe(create_model(name, num_classes=3, **options))
    assert [up.kernel_size for up in model.upsample] == [3, 3, 15]
    for height, width in [(65, 80), (33, 48)]:
        for channel, stride in enumerate((32, 16, 8)):
            positions = [(y, x) for y in range(0, height, stride) for x in range(0, width, stride)]
            with torch.no_grad():
                responses = model(_impulses(height, width, positions))[:, channel]
            for response, (y, x) in zip(responses, positions, strict=True):
                flat = int(response.argmax())
                assert divmod(flat, width) == (y, x), (name, stride, (y, x), divmod(flat, width))
