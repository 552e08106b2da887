"""darknet's letterbox and multi-scale training in ResizedInput, against references written from darknet's
own definitions (pjreddie/darknet: ``letterbox_image`` in src/image.c, ``train_detector`` in
examples/detector.c)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.tolerances import assert_within, binomial_interval, gamma, unit_roundoff

from visionkit.errors import ConfigError
from visionkit.models import create_model
from visionkit.models.detectors import ResizedInput
from visionkit.models.detectors.resize import (
    letterbox,
    letterbox_geometry,
    letterbox_to_original,
    multiscale_size,
)


def darknet_letterbox_geometry(im_h: int, im_w: int, w: int, h: int) -> tuple[int, int, int, int]:
    """darknet's ``letterbox_image(im, w, h)``, line by line: the comparison of the two float (C ``float``)
    ratios, the C integer divisions (truncation; all operands are positive), and ``embed_image`` at
    ``((w - new_w) / 2, (h - new_h) / 2)`` in int arithmetic. Returns ``(new_h, new_w, dy, dx)``."""
    new_w, new_h = im_w, im_h
    if np.float32(w) / np.float32(im_w) < np.float32(h) / np.float32(im_h):
        new_w = w
        new_h = c_divide(im_h * w, im_w)
    else:
        new_h = h
        new_w = c_divide(im_w * h, im_h)
    return new_h, new_w, c_divide(h - new_h, 2), c_divide(w - new_w, 2)


def c_divide(a: int, b: int) -> int:
    """C's ``int / int``: the quotient truncated toward zero (exact integer arithmetic)."""
    quotient = abs(a) // abs(b)
    return quotient if (a >= 0) == (b > 0) else -quotient


def test_geometry_is_darknets_on_random_sizes_squares_and_odd_margins() -> None:
    generator = np.random.default_rng(0)
    cases = [(416, 416, 416), (300, 500, 416), (500, 300, 416), (333, 500, 416), (1, 7, 5), (7, 1, 5)]
    cases += [tuple(int(v) for v in generator.integers(1, 1200, 3)) for _ in range(3000)]
    odd = 0
    for height, width, size in cases:
        reference = darknet_letterbox_geometry(height, width, size, size)
        if min(reference[:2]) == 0:  # darknet would make an empty image; visionkit keeps one pixel
            assert letterbox_geometry(height, width, size)[:2] == tuple(max(1, v) for v in reference[:2])
            continue
        assert letterbox_geometry(height, width, size) == reference, (height, width, size)
        odd += (size - reference[0]) % 2 or (size - reference[1]) % 2
    assert odd > 100  # odd margins (the extra pixel at the bottom / right) were exercised


def test_image_is_the_resized_image_centred_on_grey() -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 61, 100)
    boxed, _ = letterbox(image, {}, 64)
    new_h, new_w, top, left = letterbox_geometry(61, 100, 64)  # 39 x 64, top 12, 13 rows below
    assert (new_h, new_w, top, left) == (39, 64, 12, 0)
    resized = F.interpolate(image[None], (39, 64), mode="bilinear", align_corners=False, antialias=True)[0]
    assert torch.equal(boxed[:, top : top + new_h, left : left + new_w], resized)
    grey = torch.ones(64, 64, dtype=torch.bool)
    grey[top : top + new_h] = False
    assert bool((boxed[:, grey] == 0.5).all()) and int(grey.sum()) == 64 * (64 - 39)


def random_boxes(generator: torch.Generator, count: int, height: int, width: int) -> torch.Tensor:
    corners = torch.rand(count, 4, generator=generator) * torch.tensor([width, height, width, height])
    return torch.cat([corners[:, :2].minimum(corners[:, 2:]), corners[:, :2].maximum(corners[:, 2:])], 1)


@pytest.mark.parametrize(
    "shape", [(61, 100, 64), (100, 61, 64), (480, 640, 416), (640, 427, 320), (50, 50, 96)]
)
def test_boxes_follow_the_image_and_come_back(shape: tuple[int, int, int]) -> None:
    height, width, size = shape
    generator = torch.Generator().manual_seed(height * width)
    boxes = random_boxes(generator, 200, height, width)
    boxes[0] = torch.tensor([0.0, 0.0, width, height])  # the whole image: the whole letterboxed content
    _, target = letterbox(torch.rand(3, height, width), {"boxes": boxes, "labels": torch.zeros(200)}, size)
    new_h, new_w, top, left = letterbox_geometry(height, width, size)
    # reference in float64 from darknet's definition, x · new_w / w + dx (boxes are float32: exact inputs)
    offsets = torch.tensor([left, top] * 2, dtype=torch.float64)
    scaled = boxes.double() * torch.tensor([new_w / width, new_h / height] * 2, dtype=torch.float64)
    exact = scaled + offsets
    # float32 side: factor s rounded, b·s rounded, + d rounded: b·s·((1+δ)³ − 1) + d·δ, so
    # |err| <= γ3·|b·s| + u·d; the float64 reference (the same three roundings) adds γ3(f64)·(|b·s| + d)
    u = unit_roundoff(torch.float32)
    bound = gamma(3, torch.float32) * scaled.abs() + u * offsets
    bound = bound + gamma(3, torch.float64) * (scaled.abs() + offsets)
    assert_within(target["boxes"], exact, bound, "letterboxed boxes")
    assert torch.equal(
        target["boxes"][0], torch.tensor([left, top, left + new_w, top + new_h], dtype=torch.float32)
    )
    # back: (y − d) / f with the same float32 factor f: b·(1+δ₁)(1+δ₃)(1+δ₄) + δ₂(|y₁| + d)(1+δ₃)(1+δ₄)/f,
    # so |b̂ − b| <= γ3·|b| + u·(1 + γ2)·(|y1| + d) / f (y1 = b·f ≈ the scaled box); clipping only helps
    back = letterbox_to_original(target["boxes"], height, width, size)
    factors = torch.tensor([new_w / width, new_h / height] * 2, dtype=torch.float32).double()
    y1 = boxes.double().abs() * factors * (1 + u)
    bound = (
        gamma(3, torch.float32) * boxes.double().abs()
        + u * (1 + gamma(2, torch.float32)) * (y1 + offsets) / factors
    )
    assert_within(back, boxes, bound, "boxes through letterbox and back")


def test_area_and_masks_follow_and_callers_target_is_untouched() -> None:
    masks = torch.zeros(1, 40, 80, dtype=torch.bool)
    masks[0, 10:30, 20:60] = True
    target = {"boxes": torch.tensor([[20.0, 10, 60, 30]]), "area": torch.tensor([800.0]), "masks": masks}
    _, out = letterbox(torch.rand(3, 40, 80), target, 160)  # x2, top (160 - 80) // 2 = 40
    assert torch.equal(out["boxes"], torch.tensor([[40.0, 60, 120, 100]]))
    assert torch.equal(out["area"], torch.tensor([3200.0]))
    assert out["masks"].shape == (1, 160, 160) and int(out["masks"].sum()) == 3200
    assert bool(out["masks"][0, 60:100, 40:120].all())
    assert torch.equal(target["boxes"], torch.tensor([[20.0, 10, 60, 30]]))


def small_yolo() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("yolov3_plain", num_classes=3, score_threshold=0.0)


def test_detections_are_the_letterboxed_run_mapped_back() -> None:
    detector = small_yolo().eval()
    model = ResizedInput(detector, 96, letterbox=True).eval()
    for image in (torch.rand(3, 50, 130), torch.rand(3, 140, 70)):
        with torch.no_grad():
            found = model([image])[0]
            want = detector([letterbox(image, {}, 96)[0]])[0]
        height, width = image.shape[1:]
        assert found["boxes"].numel() > 0
        assert torch.equal(found["boxes"], letterbox_to_original(want["boxes"], height, width, 96))
        assert torch.equal(found["scores"], want["scores"]) and torch.equal(found["labels"], want["labels"])
        assert bool((found["boxes"][:, 2] <= width).all() and (found["boxes"][:, 3] <= height).all())


def test_training_letterboxes_the_targets_with_the_images() -> None:
    detector = small_yolo().train()
    model = ResizedInput(detector, 64, letterbox=True).train()
    images = [torch.rand(3, 40, 80), torch.rand(3, 90, 60)]
    targets = [{"boxes": torch.tensor([[10.0, 5, 50, 30]]), "labels": torch.tensor([1])}] * 2
    torch.manual_seed(1)
    losses = model(images, targets)
    pairs = [letterbox(i, t, 64) for i, t in zip(images, targets, strict=True)]
    torch.manual_seed(1)
    want = detector([p[0] for p in pairs], [p[1] for p in pairs])
    assert losses.keys() == want.keys() and all(torch.equal(losses[k], want[k]) for k in losses)


def seen_sizes(
    model: ResizedInput, batches: int, shapes: tuple = ((48, 64), (64, 40))
) -> list[tuple[int, int]]:
    """The image size the wrapped detector receives in each of ``batches`` training batches."""
    sizes: list[tuple[int, int]] = []

    def record(_: torch.nn.Module, args: tuple) -> None:
        assert len({tuple(image.shape[1:]) for image in args[0]}) == 1  # one size for the whole batch
        sizes.append(tuple(args[0][0].shape[1:]))

    handle = model.detector.register_forward_pre_hook(record)
    target = {"boxes": torch.tensor([[4.0, 4, 20, 24]]), "labels": torch.tensor([0])}
    for _ in range(batches):
        model([torch.rand(3, *shape) for shape in shapes], [target] * len(shapes))
    handle.remove()
    return sizes


def test_multiscale_draws_one_size_per_period_from_seed_and_period() -> None:
    model = ResizedInput(small_yolo(), 64, letterbox=True, multiscale=(32, 96), multiscale_every=3, seed=5)
    sizes = seen_sizes(model.train(), 12)
    expected = [multiscale_size(5, batch // 3, 32, 96) for batch in range(12)]
    assert [s for s, _ in sizes] == expected and all(h == w for h, w in sizes)
    assert len(set(expected)) > 1  # the size does change between periods
    assert int(model.multiscale_batches) == 12
    model.eval()
    assert model.working_size() == 64  # evaluation at the base size


def test_multiscale_resumes_from_the_state_dict_and_reshapes_a_plain_resize() -> None:
    straight = ResizedInput(small_yolo(), 64, 96, multiscale=(32, 128), multiscale_every=2, seed=1).train()
    same = ((48, 64), (48, 64))  # a plain resize keeps the aspect ratio: one shape per batch
    expected = seen_sizes(straight, 10, same)
    first = ResizedInput(small_yolo(), 64, 96, multiscale=(32, 128), multiscale_every=2, seed=1).train()
    head = seen_sizes(first, 5, same)
    resumed = ResizedInput(small_yolo(), 64, 96, multiscale=(32, 128), multiscale_every=2, seed=1).train()
    resumed.load_state_dict(first.state_dict())
    assert head + seen_sizes(resumed, 5, same) == expected
    for (height, width), batch in zip(expected, range(10), strict=True):  # shorter side = drawn size,
        drawn = multiscale_size(1, batch // 2, 32, 128)  # the cap scaled alike (96/64), here not reached
        assert (height, width) == (drawn, round(64 * drawn / 48))


def test_multiscale_sizes_are_uniform_over_the_multiples_of_32() -> None:
    draws = [multiscale_size(0, index, 320, 608) for index in range(1000)]  # darknet's 416 network
    choices = list(range(320, 609, 32))
    assert set(draws) == set(choices)
    # 10 counts checked at once, each with a false-failure probability of 1e-7: 1e-6 in all (union bound)
    low, high = binomial_interval(len(draws), 1 / len(choices), 1e-7)
    assert all(low <= draws.count(size) <= high for size in choices), [draws.count(s) for s in choices]
    assert multiscale_size(1, 0, 320, 608) == multiscale_size(1, 0, 320, 608)


def test_bad_settings_are_named() -> None:
    with pytest.raises(ConfigError, match="max_size=96: not with letterbox"):
        ResizedInput(small_yolo(), 64, 96, letterbox=True)
    with pytest.raises(ConfigError, match=r"multiscale=\(40, 96\): expected multiples of 32"):
        ResizedInput(small_yolo(), 64, multiscale=(40, 96))
    with pytest.raises(ConfigError, match=r"multiscale=\(96, 64\)"):
        ResizedInput(small_yolo(), 64, multiscale=(96, 64))
    with pytest.raises(ConfigError, match="multiscale_every=0"):
        ResizedInput(small_yolo(), 64, multiscale=(32, 64), multiscale_every=0)
    text = repr(ResizedInput(small_yolo(), 64, letterbox=True, multiscale=(32, 96)))
    assert "letterbox=True, multiscale=(32, 96), multiscale_every=10" in text
