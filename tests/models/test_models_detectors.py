"""One contract test over every registered detector (what engine/detect.py relies on, and nothing more):
training returns finite named scalar losses whose gradients reach every trainable parameter (also on an
image without objects), evaluation returns one Detections per image in that image's pixels, the
post-processing settings switch through ``detector.postprocess``, and bad input is named."""

from __future__ import annotations

import inspect

import pytest
import torch

from visionkit.errors import ConfigError, InputShapeError
from visionkit.models import create_model, get_model_builder, list_models
from visionkit.models.detectors import Detector, PostProcess
from visionkit.structures import ShapeSpec


def detector_names() -> list[str]:
    names = []
    for name in list_models():
        parameters = inspect.signature(get_model_builder(name)).parameters
        if "num_classes" in parameters and "postprocess" not in parameters and "nms_method" in parameters:
            names.append(name)
    return names


#: options that make every family small enough for a CPU test (each builder takes the ones it has)
SMALL = {
    "fpn_channels": 16,
    "head_convs": 1,
    "representation_size": 32,
    "width_multiplier": 0.35,
    "widths": (8, 8, 16, 16, 32),
    "anchor_sizes": (16, 32, 64, 128, 256),
    "rpn_pre_nms_top_n": (100, 100),
    "rpn_post_nms_top_n": (50, 50),
    "box_batch_size_per_image": 32,
}


#: per family (name prefix): options that differ from SMALL (RefineDet has four levels; its images warped to
#: 64² inside the model instead of the VGG16 builders' 320² / 512²)
FAMILY_SMALL = {"refinedet": {"anchor_sizes": (16, 32, 64, 128), "input_size": 64}}


#: builder options that change a family's architecture: the contract holds for them too
VARIANTS = {"retinanet_plain_fpn-fpn=False": ("retinanet_plain_fpn", {"fpn": False})}


def cases(names: list[str]) -> list:
    """``(name, options)`` for every detector of ``names`` (no options) and every :data:`VARIANTS` entry."""
    return [pytest.param(n, {}, id=n) for n in names] + [
        pytest.param(name, options, id=key) for key, (name, options) in VARIANTS.items()
    ]


def small_detector(name: str, **overrides) -> Detector:
    accepted = inspect.signature(get_model_builder(name)).parameters
    torch.manual_seed(0)
    family = next((v for k, v in FAMILY_SMALL.items() if name.startswith(k)), {})
    options = {key: value for key, value in {**SMALL, **family, **overrides}.items() if key in accepted}
    return create_model(name, num_classes=3, **options)


IMAGES = [torch.rand(3, 64, 80), torch.rand(3, 72, 48)]
TARGETS = [
    {
        "boxes": torch.tensor([[8.0, 6.0, 40.0, 36.0], [30.0, 30.0, 60.0, 62.0]]),
        "labels": torch.tensor([1, 2]),
    },
    {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # a negative image
]


def test_every_detector_family_is_registered_per_backbone() -> None:
    names = detector_names()
    for family in ("retinanet", "fasterrcnn", "cascade_rcnn"):
        for backbone in ("resnet50", "mobilenet_v2", "vgg16", "plain"):
            assert f"{family}_{backbone}_fpn" in names
    for backbone in ("resnet50", "mobilenet_v2", "vgg16", "plain"):
        assert f"refinedet_{backbone}" in names
    assert {"refinedet320_vgg16", "refinedet512_vgg16"} <= set(names)


@pytest.mark.parametrize(("name", "options"), cases(detector_names()))
def test_training_contract(name: str, options: dict) -> None:
    model = small_detector(name, **options).train()
    assert isinstance(model, Detector) and model.num_classes == 3
    losses = model(IMAGES, TARGETS)
    assert isinstance(losses, dict) and losses
    for term, value in losses.items():
        assert value.dim() == 0 and bool(torch.isfinite(value)), term
    sum(losses.values()).backward()
    silent = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not silent, f"parameters without a gradient: {silent[:5]}"


# The heavy backbones (ResNet-50, VGG-16: 10–20 s each here) run the training contract only; evaluation is
# the family's code on the backbone's features, checked on the light backbones of each family.
@pytest.mark.parametrize(
    ("name", "options"), cases([n for n in detector_names() if "resnet50" not in n and "vgg16" not in n])
)
def test_evaluation_contract(name: str, options: dict) -> None:
    model = small_detector(name, score_threshold=0.0, detections_per_image=7, **options).eval()
    with torch.no_grad():
        detections = model(IMAGES)
    assert len(detections) == len(IMAGES)
    for detection, image in zip(detections, IMAGES, strict=True):
        assert set(detection) == {"boxes", "scores", "labels"}
        count = detection["boxes"].shape[0]
        assert detection["boxes"].shape == (count, 4) and detection["scores"].shape == (count,)
        assert 0 < count <= 7
        assert detection["labels"].dtype == torch.int64 and bool(
            ((detection["labels"] >= 0) & (detection["labels"] < 3)).all()
        )
        assert bool((detection["scores"][:-1] >= detection["scores"][1:]).all())
        boxes = detection["boxes"]
        assert bool((boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all())
        assert bool((boxes[:, 2] <= image.shape[2]).all() and (boxes[:, 3] <= image.shape[1]).all())


@pytest.mark.parametrize("name", ["retinanet_plain_fpn", "fasterrcnn_plain_fpn"])
def test_postprocess_switches_and_is_checked(name: str) -> None:
    model = small_detector(name, score_threshold=0.0).eval()
    assert model.postprocess == PostProcess(score_threshold=0.0)
    model.postprocess = model.postprocess.replace(detections_per_image=2, nms_method="soft_gaussian")
    with torch.no_grad():
        assert all(d["boxes"].shape[0] <= 2 for d in model(IMAGES))
    with pytest.raises(ConfigError, match="nms_method='fast'"):
        model.postprocess.replace(nms_method="fast")
    with pytest.raises(ConfigError, match="detections_per_image=0"):
        small_detector(name, detections_per_image=0)


@pytest.mark.parametrize("name", ["retinanet_plain_fpn", "fasterrcnn_plain_fpn"])
def test_wrong_input_is_named(name: str) -> None:
    model = small_detector(name).eval()
    with pytest.raises(
        InputShapeError, match=r"images\[1\] must have shape \[3, H, W\] with H, W >= 1, got \[1, 32, 32\]"
    ):
        model([torch.rand(3, 32, 32), torch.rand(1, 32, 32)])
    with pytest.raises(TypeError, match=r"images\[0\] must be a float tensor"):
        model([torch.zeros(3, 8, 8, dtype=torch.uint8)])


def test_feature_shapes_come_from_the_backbone_strides() -> None:
    model = small_detector("fasterrcnn_plain_fpn")
    assert model.feature_shapes == {f"p{k}": ShapeSpec(16, 2**k) for k in range(2, 7)}
    assert model.roi_heads.pooler.strides == [4, 8, 16, 32]
    assert model.rpn.anchor_generator.strides == (4, 8, 16, 32, 64)


def test_generated_builders_list_every_option_and_reject_unknown_ones() -> None:
    parameters = inspect.signature(get_model_builder("retinanet_mobilenet_v2_fpn")).parameters
    assert {"width_multiplier", "fpn_channels", "focal_gamma", "nms_method", "soft_nms_sigma"} <= set(
        parameters
    )
    assert "soft_nms_sigma" in inspect.signature(get_model_builder("fasterrcnn_vgg16_fpn")).parameters
    assert "rpn_pre_nms_top_n" in inspect.signature(get_model_builder("fasterrcnn_vgg16_fpn")).parameters
    with pytest.raises(TypeError, match="widht_multiplier"):
        create_model("retinanet_mobilenet_v2_fpn", widht_multiplier=0.5)
    with pytest.raises(ConfigError, match="one size per level"):
        create_model("retinanet_plain_fpn", anchor_sizes=(16, 32))
