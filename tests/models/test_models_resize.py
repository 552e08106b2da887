"""ResizedInput: a detector run at a working scale; data and detections in the images' own coordinates."""

from __future__ import annotations

import pytest
import torch

from visionkit.data.transforms import Resize
from visionkit.models import create_model
from visionkit.models.detectors import ResizedInput

SMALL = {
    "num_classes": 3,
    "width_multiplier": 0.35,
    "fpn_channels": 16,
    "score_threshold": 0.0,
}


def small_detector(name: str = "retinanet_mobilenet_v2_fpn") -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **SMALL)


@pytest.mark.parametrize("name", ["retinanet_mobilenet_v2_fpn", "fasterrcnn_mobilenet_v2_fpn"])
def test_detections_are_the_resized_run_mapped_back(name: str) -> None:
    detector = small_detector(name).eval()
    model = ResizedInput(detector, min_size=64, max_size=100).eval()
    for image in (torch.rand(3, 90, 150), torch.rand(3, 120, 80)):  # one at a time: batches pad
        detection = model([image])[0]
        small = Resize(64, 100)(image, {})[0]
        want = detector([small])[0]
        sx, sy = image.shape[2] / small.shape[2], image.shape[1] / small.shape[1]
        expected = want["boxes"] * torch.tensor([sx, sy, sx, sy])
        expected[:, 0::2] = expected[:, 0::2].clamp(0, image.shape[2])
        expected[:, 1::2] = expected[:, 1::2].clamp(0, image.shape[1])
        assert torch.equal(detection["boxes"], expected)  # the same float32 product and clamp
        assert torch.equal(detection["scores"], want["scores"]) and torch.equal(
            detection["labels"], want["labels"]
        )
        assert detection["boxes"].numel() > 0  # score_threshold 0: something to map back


def test_training_scales_targets_with_the_images_and_leaves_callers_targets_alone() -> None:
    detector = small_detector().train()
    model = ResizedInput(detector, min_size=48).train()
    images = [torch.rand(3, 96, 128)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0]]), "labels": torch.tensor([1])}]
    torch.manual_seed(1)
    losses = model(images, targets)
    small, small_target = Resize(48)(images[0], targets[0])
    assert torch.equal(small_target["boxes"], torch.tensor([[5.0, 10.0, 30.0, 40.0]]))
    torch.manual_seed(1)
    want = detector([small], [small_target])
    assert losses.keys() == want.keys()
    for key in losses:  # the same detector on the same resized data and seed: identical
        assert torch.equal(losses[key], want[key])
    assert torch.equal(targets[0]["boxes"], torch.tensor([[10.0, 20.0, 60.0, 80.0]]))  # untouched


def test_bad_input_is_named() -> None:
    model = ResizedInput(small_detector(), min_size=32)
    with pytest.raises(ValueError, match="non-empty list"):
        model([])
    with pytest.raises(ValueError, match="2 images but 1 targets"):
        model.train()([torch.rand(3, 40, 40)] * 2, [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}])
    with pytest.raises(ValueError, match="training needs targets"):
        model.train()([torch.rand(3, 40, 40)])
    with pytest.raises(ValueError, match="min_size <= max_size"):
        ResizedInput(small_detector(), min_size=64, max_size=32)
    assert "min_size=32, max_size=None" in repr(model)


def test_docstring_example() -> None:
    import doctest

    import visionkit.models.detectors.resize as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
