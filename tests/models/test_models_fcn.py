"""FCN models: bilinear upsampling at init, convolutionalised VGG16 equal to the classifier, the contract of
every registered FCN (any input size, gradients, bad input) and loading pretrained weights.

Tolerances: the bilinear comparison against ``F.interpolate`` evaluates the same 4-term weighted sum (2-D)
in another association: each side is within ``γ₄·Σ|wᵢvᵢ|`` of the exact sum (Higham), so the two within
twice that (the weights are exact dyadic numbers on both sides). The classifier comparison is derived
beside it.
"""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from tolerances import assert_within, gamma
from visionkit.errors import CheckpointError, InputShapeError
from visionkit.models import create_model, get_model_builder, list_models
from visionkit.models.segmentation import FCN, ScoreUpsample, bilinear_kernel, convolutionalize_vgg_state_dict

F64 = torch.float64
FCN_NAMES = list_models("fcn*")
#: options that make each registered FCN cheap on a CPU
SMALL = {"width_multiplier": 0.35, "widths": (4, 8, 8, 16, 16)}


def _options(name: str) -> dict:
    accepted = inspect.signature(get_model_builder(name)).parameters
    return {key: value for key, value in SMALL.items() if key in accepted}


def test_registered_names() -> None:
    expected = {"fcn32s_vgg16", "fcn16s_vgg16", "fcn8s_vgg16", "fcn8s_resnet50", "fcn8s_mobilenet_v2"}
    assert expected | {"fcn8s_small"} <= set(FCN_NAMES)


@pytest.mark.parametrize("size", range(1, 17))
def test_bilinear_kernel_is_the_authors_formula(size: int) -> None:
    """surgery.upsample_filt: factor = (size + 1) // 2, centre factor − 1 (odd) or factor − 0.5 (even)."""
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 else factor - 0.5
    expected = torch.tensor(
        [
            [(1 - abs(y - centre) / factor) * (1 - abs(x - centre) / factor) for x in range(size)]
            for y in range(size)
        ],
        dtype=F64,
    )
    kernel = bilinear_kernel(size, F64)
    assert torch.equal(kernel, expected)  # one product of the same two factors on both sides
    assert torch.equal(kernel, kernel.flip(0)) and torch.equal(kernel, kernel.T)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_upsampling_at_init_is_bilinear_interpolation_away_from_the_border(factor: int) -> None:
    """Kernel 2f, stride f, crop f/2: output o reads input (o + 0.5)/f − 0.5, as ``align_corners=False``.
    The first and last f/2 + f outputs see the zero outside the input (a transposed conv does not clamp)."""
    torch.manual_seed(factor)
    y, x = torch.meshgrid(torch.arange(9, dtype=F64), torch.arange(11, dtype=F64), indexing="ij")
    smooth = torch.stack([torch.sin(y / 3) * torch.cos(x / 4), 0.3 * y - 0.2 * x + 1])[None]
    upsampled = ScoreUpsample(2, factor)(smooth)
    crop = factor // 2
    ours = upsampled[..., crop : crop + 9 * factor, crop : crop + 11 * factor]
    reference = F.interpolate(smooth, scale_factor=factor, mode="bilinear", align_corners=False)
    margin = factor + factor // 2
    inner = (..., slice(margin, -margin), slice(margin, -margin))
    bound = 2 * gamma(4, F64) * smooth.abs().max()  # Σ|wᵢ| = 1 for interior outputs
    assert_within(ours[inner], reference[inner], bound)
    # a linear ramp is reproduced exactly where both neighbours exist (interpolating a line)
    line = F.interpolate(smooth[:, 1:], scale_factor=factor, mode="bilinear", align_corners=False)
    assert_within(ours[:, 1:][inner], line[inner], bound)


def test_upsampling_is_per_class_and_fixed_unless_learned() -> None:
    fixed = ScoreUpsample(3, 2)
    assert "weight" in dict(fixed.named_buffers()) and not list(fixed.parameters())
    one = torch.zeros(1, 3, 4, 4)
    one[0, 1, 2, 2] = 1.0
    out = fixed(one)
    assert out[0, 0].abs().sum() == 0 and out[0, 2].abs().sum() == 0  # no channel mixing
    learned = ScoreUpsample(3, 2, trainable=True)
    assert [name for name, _ in learned.named_parameters()] == ["weight"]
    assert torch.equal(learned.weight, fixed.weight)


@pytest.mark.parametrize("name", FCN_NAMES)
def test_output_matches_input_size_for_any_size(name: str) -> None:
    """Shapes only (the meta device computes none): every size from 1 to 34 (one to two cells of the
    coarsest stride), either side of 64, and non-square inputs."""
    with torch.device("meta"):
        model = create_model(name, num_classes=5).eval()
        for height, width in [(s, s) for s in range(1, 35)] + [
            (63, 64),
            (65, 65),
            (1, 64),
            (97, 3),
            (224, 225),
        ]:
            assert model(torch.empty(2, 3, height, width)).shape == (2, 5, height, width)


@pytest.mark.slow
@pytest.mark.parametrize("name", FCN_NAMES)
def test_contract_every_trainable_parameter_learns(name: str) -> None:
    """Logits (N, C, H, W), finite; after one SGD step every trainable parameter has a non-zero gradient
    (the zero-initialised score layers pass no gradient to the encoder on the very first step)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **_options(name)).train()
    size = 33 if "vgg16" in name else 45
    images, masks = torch.rand(2, 3, size, size + 2), torch.randint(0, 3, (2, size, size + 2))
    masks[0, :4] = 255
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        logits = model(images)
        assert logits.shape == (2, 3, size, size + 2) and bool(torch.isfinite(logits).all())
        F.cross_entropy(logits, masks, ignore_index=255).backward()
        optimizer.step()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and bool(torch.isfinite(parameter.grad).all()), parameter_name
        assert parameter.grad.abs().sum() > 0, f"{name}: {parameter_name} got a zero gradient"


def test_bad_input_is_named() -> None:
    model = create_model("fcn8s_small").eval()
    with pytest.raises(InputShapeError, match=r"\(N, 3, H, W\).*\(3, 32, 32\)"):
        model(torch.rand(3, 32, 32))
    with pytest.raises(InputShapeError, match="1, 32, 32"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(InputShapeError, match="N, H, W >= 1"):
        model(torch.rand(1, 3, 0, 32))
    with pytest.raises(TypeError, match="uint8"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="skip scale"):
        FCN(model.encoder, 4, top="fc7", skips=("pool4",), skip_scales=(1.0, 2.0))
    with pytest.raises(ValueError, match="not among"):
        FCN(model.encoder, 4, top="c5")


def test_at_once_skip_scales_and_zero_score_layers() -> None:
    with torch.device("meta"):
        model = create_model("fcn8s_vgg16")
        assert model.skips == ("pool4", "pool3") and model.skip_scales == (0.01, 1e-4)
        assert create_model("fcn8s_small").skip_scales == (1.0, 1.0)
    small = create_model("fcn8s_small")
    for layer in [small.score_top, *small.score_skips.values()]:
        assert layer.weight.abs().sum() == 0 and layer.bias.abs().sum() == 0


def _fc_bound(weight: torch.Tensor, bias: torch.Tensor, inputs: torch.Tensor, input_error: torch.Tensor):
    """|conv − linear| per output when each evaluates Σₖ wₖxₖ + b (n + 1 terms, any order, FMA or not) on
    inputs that differ by at most ``input_error``: both within γₙ₊₁·Σ|terms| of the exact value on their own
    inputs (Higham 3.1), plus Σ|w|·input_error from the inputs (ReLU is 1-Lipschitz)."""
    n = weight.shape[1] + 1
    terms = weight.abs() @ (inputs.abs() + input_error) + bias.abs()
    return 2 * gamma(n, F64) * terms + weight.abs() @ input_error


def test_convolutionalised_vgg16_equals_the_classifier_at_the_centre() -> None:
    """A VGG16 classification state dict loads into fcn32s_vgg16; on a 224×224 image pool5 is 7×7 and the
    7×7 fc6 (padding 3) at the centre position sees all of it: the coarse scores there are the logits.

    pool5 is compared bitwise on a 64×64 image (the same convolutions and pools run on both sides; ceil-mode
    pooling changes nothing at even sizes); the head (fc6, fc7, score) on a 224-sized pool5 in float64
    against the classifier's Linear layers within the bound of :func:`_fc_bound`, layer by layer."""
    torch.manual_seed(0)
    classifier = create_model("vgg16", num_classes=10).eval()
    model = create_model("fcn32s_vgg16", num_classes=10).eval()
    converted = convolutionalize_vgg_state_dict(classifier.state_dict())
    renamed = {
        ("encoder." + k if not k.startswith("score") else k.replace("score", "score_top")): v
        for k, v in converted.items()
    }
    missing, unexpected = model.load_state_dict(renamed, strict=False)
    assert not unexpected and all(key.startswith(("upsample", "image_")) for key in missing)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        pool5 = model.encoder.features(image)
        assert torch.equal(pool5, classifier.forward_features(image)["c5"])
        pool5 = torch.rand(1, 512, 7, 7, dtype=F64) * 3  # what a 224×224 image gives (non-negative)
        head = model.encoder.to(F64)
        linear = [layer.to(F64) for layer in classifier.classifier if isinstance(layer, nn.Linear)]
        hidden6 = head.relu(head.fc6(pool5))
        hidden7 = head.relu(head.fc7(hidden6))
        fc6, fc7 = hidden6[0, :, 3, 3], hidden7[0, :, 3, 3]
        scores = model.score_top.to(F64)(hidden7)[0, :, 3, 3]
        flat = pool5.flatten()
        ref6 = F.linear(flat, linear[0].weight, linear[0].bias).relu()
        ref7 = F.linear(ref6, linear[1].weight, linear[1].bias).relu()
        logits = F.linear(ref7, linear[2].weight, linear[2].bias)
        zero = torch.zeros_like(flat)
        bound6 = _fc_bound(linear[0].weight, linear[0].bias, flat, zero)
        bound7 = _fc_bound(linear[1].weight, linear[1].bias, ref6, bound6)
        bound8 = _fc_bound(linear[2].weight, linear[2].bias, ref7, bound7)
    assert_within(fc6, ref6, bound6)
    assert_within(fc7, ref7, bound7)
    assert_within(scores, logits, bound8)
    assert (logits - logits.mean()).abs().max() > 100 * bound8.max()  # the check can tell classes apart


def test_load_pretrained_backbone_weights(tmp_path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "vgg.pth"
    classifier = create_model("vgg11", num_classes=7)
    torch.save(classifier.state_dict(), path)
    from visionkit.models.segmentation import VGGEncoder
    from visionkit.models.segmentation.encoders import VGG_CONFIGS

    encoder = VGGEncoder(VGG_CONFIGS[11])
    assert encoder.load_pretrained(path) == len(encoder.state_dict())
    assert torch.equal(encoder.fc6.weight, classifier.classifier[0].weight.reshape(4096, 512, 7, 7))
    with pytest.raises(CheckpointError, match="not a checkpoint of this VGG"):
        VGGEncoder([8, "M"] * 5, fc_channels=16).load_pretrained(path)
    backbone_path = tmp_path / "mobilenet.pth"
    torch.save(create_model("mobilenet_v2", width_multiplier=0.35).state_dict(), backbone_path)
    model = create_model("fcn8s_mobilenet_v2", width_multiplier=0.35)
    assert model.encoder.load_pretrained(backbone_path) > 100


@pytest.mark.parametrize("module", ["alignment", "upsample", "fcn", "encoders", "builders", "__init__"])
def test_docstring_examples(module: str) -> None:
    import doctest
    import importlib

    name = "visionkit.models.segmentation" + ("" if module == "__init__" else f".{module}")
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_small_fcn8s_overfits_four_shapes_images(seed: int) -> None:
    """The training outcome: train until training mIoU ≥ 0.9 (checked every 20 Adam steps), within a cap of
    600 steps — seeds 0–3 needed 40–240 under the native, avx2 and default kernels (this test: 40–180)."""
    from visionkit.data.segmentation import ShapesSegmentation
    from visionkit.data.shapes import ShapesConfig
    from visionkit.metrics.segmentation import segmentation_metrics

    torch.manual_seed(seed)
    data = ShapesSegmentation(4, seed=seed, config=ShapesConfig(image_size=64, min_size=12, max_size=28))
    images = torch.stack([data[i][0] for i in range(4)])
    masks = torch.stack([data[i][1] for i in range(4)])
    model = create_model("fcn8s_small")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    reached = None
    for step in range(1, 601):
        model.train()
        loss = F.cross_entropy(model(images), masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            with torch.no_grad():
                found = model.eval()(images).argmax(1)
            if segmentation_metrics(found, masks, 4).mean_iou >= 0.9:
                reached = step
                break
    assert reached is not None, f"training mIoU stayed below 0.9 for 600 steps (last loss {loss.item():.4f})"
