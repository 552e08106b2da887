"""RefineDet: hard negative mining, the ARM and ODM losses (two-step regression, negative anchor filtering)
against a slow literal loop, inference from the refined anchors with filtering, errors, tiny overfit."""

from __future__ import annotations

import doctest
import importlib
import math

import pytest
import torch
from overfit import steps_to_near_perfect

from tolerances import gamma
from visionkit.data.shapes import ShapesConfig, ShapesDataset
from visionkit.errors import ConfigError, InputShapeError
from visionkit.models import create_model
from visionkit.models.detectors import RefineDet, refinedet_loss
from visionkit.models.detectors.refinedet import hard_negatives, refine
from visionkit.ops.anchors import AnchorGenerator
from visionkit.ops.boxes import box_iou, clip_boxes_to_image
from visionkit.ops.matcher import Matcher

EMPTY = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
SMALL = {"num_classes": 3, "width_multiplier": 0.35, "fpn_channels": 32, "anchor_sizes": (16, 32, 64, 128)}
WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def test_hard_negatives_take_the_largest_losses_among_candidates() -> None:
    generator = torch.Generator().manual_seed(0)
    for trial in range(20):
        count = int(torch.randint(1, 60, (1,), generator=generator))
        losses = torch.rand(count, generator=generator)
        candidates = torch.rand(count, generator=generator) < 0.6
        wanted = int(torch.randint(0, 40, (1,), generator=generator))
        chosen = hard_negatives(losses, candidates, wanted)
        pool = sorted((float(losses[i]), i) for i in range(count) if candidates[i])
        expected = {i for _, i in pool[::-1][:wanted]}  # distinct random values: no ties
        assert set(torch.nonzero(chosen).flatten().tolist()) == expected, trial
    assert not bool(hard_negatives(torch.rand(5), torch.zeros(5, dtype=torch.bool), 3).any())


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _smooth_l1(d: float) -> float:
    return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5


def _encode(g: list[float], p: list[float]) -> list[float]:
    pw, ph, gw, gh = p[2] - p[0], p[3] - p[1], g[2] - g[0], g[3] - g[1]
    return [10 * ((g[0] + g[2]) - (p[0] + p[2])) / 2 / pw, 10 * ((g[1] + g[3]) - (p[1] + p[3])) / 2 / ph,
            5 * math.log(gw / pw), 5 * math.log(gh / ph)]  # fmt: skip


def _decode(d: list[float], a: list[float]) -> list[float]:
    aw, ah = a[2] - a[0], a[3] - a[1]
    cx, cy = a[0] + aw / 2 + d[0] / 10 * aw, a[1] + ah / 2 + d[1] / 10 * ah
    w, h = (
        aw * math.exp(min(d[2] / 5, math.log(1000 / 16))),
        ah * math.exp(min(d[3] / 5, math.log(1000 / 16))),
    )
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _mined(losses: list[float], candidates: list[bool], count: int) -> set[int]:
    ranked = sorted((i for i in range(len(losses)) if candidates[i]), key=lambda i: -losses[i])
    return set(ranked[:count])


def _reference(arm_obj, arm_deltas, odm_logits, odm_deltas, anchors, targets, refine_anchors, filtering):
    """The losses literally, anchor by anchor, in Python floats (the matcher has its own reference tests)."""
    matcher = Matcher(0.5, 0.5, True)
    sums = {"arm_classification": 0.0, "arm_box_regression": 0.0, "odm_classification": 0.0,
            "odm_box_regression": 0.0}  # fmt: skip
    terms = {name: 0 for name in sums}
    arm_pos = odm_pos = 0
    for image, target in enumerate(targets):
        gt, classes = target["boxes"].double(), target["labels"].tolist()
        a = anchors[image].tolist()
        n = len(a)
        matches = matcher(box_iou(gt, anchors[image].double())).tolist()
        obj = arm_obj[image].tolist()
        bce = [
            -math.log(_sigmoid(obj[i])) if matches[i] >= 0 else -math.log(1 - _sigmoid(obj[i]))
            for i in range(n)
        ]
        positives = [i for i in range(n) if matches[i] >= 0]
        mined = _mined(bce, [m == -1 for m in matches], 3 * max(len(positives), 1))
        sums["arm_classification"] += sum(bce[i] for i in set(positives) | mined)
        terms["arm_classification"] += len(positives) + len(mined)
        for i in positives:
            t = _encode(gt[matches[i]].tolist(), a[i])
            sums["arm_box_regression"] += sum(
                _smooth_l1(float(arm_deltas[image, i, j]) - t[j]) for j in range(4)
            )
            terms["arm_box_regression"] += 4
        arm_pos += len(positives)
        refined = [_decode(arm_deltas[image, i].tolist(), a[i]) for i in range(n)] if refine_anchors else a
        keep = [not (filtering and 1 - _sigmoid(obj[i]) > 0.99) for i in range(n)]
        matches = matcher(box_iou(gt, torch.tensor(refined, dtype=torch.float64))).tolist()
        positives = [i for i in range(n) if matches[i] >= 0 and keep[i]]
        ce = []
        for i in range(n):
            logits = odm_logits[image, i].tolist()
            label = classes[matches[i]] + 1 if i in positives else 0
            ce.append(math.log(sum(math.exp(v) for v in logits)) - logits[label])
        mined = _mined(ce, [matches[i] == -1 and keep[i] for i in range(n)], 3 * max(len(positives), 1))
        sums["odm_classification"] += sum(ce[i] for i in set(positives) | mined)
        terms["odm_classification"] += len(positives) + len(mined)
        for i in positives:
            t = _encode(gt[matches[i]].tolist(), refined[i])
            sums["odm_box_regression"] += sum(
                _smooth_l1(float(odm_deltas[image, i, j]) - t[j]) for j in range(4)
            )
            terms["odm_box_regression"] += 4
        odm_pos += len(positives)
    divisors = {"arm": max(arm_pos, 1), "odm": max(odm_pos, 1)}
    return {k: v / divisors[k[:3]] for k, v in sums.items()}, terms, odm_pos


def _inputs(seed: int):
    generator = torch.Generator().manual_seed(seed)
    anchors = AnchorGenerator(((16,), (32,)), ((0.5, 1.0, 2.0),) * 2, strides=(8, 16))(
        torch.zeros(2, 3, 64, 64, dtype=torch.float64),
        [torch.zeros(2, 1, 8, 8, dtype=torch.float64), torch.zeros(2, 1, 4, 4, dtype=torch.float64)],
    )
    count = anchors[0].shape[0]
    arm_obj = torch.randn(2, count, generator=generator, dtype=torch.float64) * 3
    arm_deltas = torch.randn(2, count, 4, generator=generator, dtype=torch.float64) * 0.5
    odm_logits = torch.randn(2, count, 4, generator=generator, dtype=torch.float64)
    odm_deltas = torch.randn(2, count, 4, generator=generator, dtype=torch.float64) * 0.5
    gt = torch.tensor([[4.0, 6.0, 24.0, 30.0], [30.0, 28.0, 62.0, 60.0], [8.0, 40.0, 20.0, 52.0]])
    targets = [{"boxes": gt.double(), "labels": torch.tensor([0, 2, 1])}, EMPTY]
    return arm_obj, arm_deltas, odm_logits, odm_deltas, anchors, targets


@pytest.mark.parametrize(("refine_anchors", "filtering"), [(True, True), (True, False), (False, True)])
def test_losses_equal_the_slow_literal_loop(refine_anchors: bool, filtering: bool) -> None:
    arm_obj, arm_deltas, odm_logits, odm_deltas, anchors, targets = _inputs(0)
    losses = refinedet_loss(arm_obj, arm_deltas, odm_logits, odm_deltas, anchors, targets,
                            Matcher(0.5, 0.5, True), refine_anchors=refine_anchors,
                            negative_filtering=filtering)  # fmt: skip
    expected, terms, odm_positives = _reference(arm_obj, arm_deltas, odm_logits, odm_deltas, anchors, targets,
                                                refine_anchors, filtering)  # fmt: skip
    assert odm_positives > 0
    for name, value in expected.items():
        # float64 on both sides: each term is within ~30 roundings / libm calls of its exact value (log-sum-
        # exp over 4 logits, encode, smooth L1), then a sum of ``terms[name]`` non-negative terms in any
        # order and a division: γ(terms + 32) of the total, twice (both sides).
        bound = 2 * gamma(terms[name] + 32, torch.float64) * value
        assert abs(losses[name].item() - value) <= bound, (name, losses[name].item(), value)


def test_negative_filtering_removes_anchors_from_the_odm_and_changes_the_loss() -> None:
    arm_obj, arm_deltas, odm_logits, odm_deltas, anchors, targets = _inputs(1)
    arguments = (arm_deltas, odm_logits, odm_deltas, anchors, targets, Matcher(0.5, 0.5, True))
    # every anchor confidently background in the ARM: nothing reaches the ODM
    everything = refinedet_loss(torch.full_like(arm_obj, -10.0), *arguments)
    assert everything["odm_classification"].item() == 0.0 and everything["odm_box_regression"].item() == 0.0
    assert everything["arm_classification"].item() > 0.0
    unfiltered = refinedet_loss(torch.full_like(arm_obj, -10.0), *arguments, negative_filtering=False)
    assert unfiltered["odm_classification"].item() > 0.0
    # the threshold: background probability 1 - sigmoid(-4.5) = 0.989 stays, sigmoid(4.6) = 0.990 goes
    assert refinedet_loss(torch.full_like(arm_obj, -4.5), *arguments)["odm_classification"].item() > 0.0
    assert refinedet_loss(torch.full_like(arm_obj, -4.6), *arguments)["odm_classification"].item() == 0.0


def test_refined_anchors_are_the_detached_arm_offsets_applied_to_the_anchors() -> None:
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0], [8.0, 4.0, 40.0, 20.0]], dtype=torch.float64)
    deltas = torch.tensor(
        [[1.0, -2.0, 0.5, -0.5], [0.0, 3.0, 1.0, 2.0]], dtype=torch.float64, requires_grad=True
    )
    refined = refine(deltas, anchors)
    assert not refined.requires_grad
    for row in range(2):
        expected = torch.tensor(_decode(deltas[row].tolist(), anchors[row].tolist()), dtype=torch.float64)
        # decode: a division, an exp (libm) and a few roundings per coordinate of magnitude ≤ 64
        torch.testing.assert_close(refined[row], expected, rtol=0, atol=64 * gamma(8, torch.float64))


def _model(**options) -> RefineDet:
    torch.manual_seed(0)
    return create_model("refinedet_mobilenet_v2", **{**SMALL, **options})


def test_inference_decodes_from_the_refined_anchors_and_drops_filtered_ones() -> None:
    model = _model(score_threshold=0.0, nms_threshold=1.0, detections_per_image=10**4, topk_candidates=10**4)
    for conv in model.odm_deltas:  # ODM offsets 0: the detections are the refined anchors themselves
        torch.nn.init.zeros_(conv.weight), torch.nn.init.zeros_(conv.bias)
    model.eval()
    image = torch.rand(3, 64, 64)
    with torch.no_grad():
        detections = model([image])[0]
        batch, _ = model.preprocess([image])
        _, arm_deltas, _, _, anchors = model.outputs(batch, model.extract_features(batch))
    refined = clip_boxes_to_image(refine(arm_deltas[0], anchors[0]), (64, 64))
    assert detections["boxes"].shape[0] > 0
    assert bool((box_iou(detections["boxes"], refined).max(dim=1).values > 1 - 1e-6).all())
    # anchors the ARM calls background with probability > 0.99 never come out
    for conv in model.arm_objectness:
        torch.nn.init.zeros_(conv.weight), torch.nn.init.constant_(conv.bias, -5.0)
    with torch.no_grad():
        assert model([image])[0]["boxes"].shape[0] == 0
        model.negative_filtering = False
        assert model([image])[0]["boxes"].shape[0] > 0


def test_negative_images_give_zero_box_losses() -> None:
    model = _model().train()
    losses = model([torch.rand(3, 64, 64)], [dict(EMPTY)])
    assert losses["arm_box_regression"].item() == 0.0 and losses["odm_box_regression"].item() == 0.0
    assert losses["arm_classification"].item() > 0.0 and losses["odm_classification"].item() > 0.0


def _conv(inputs: int, outputs: int, kernel: int) -> int:
    return inputs * outputs * kernel * kernel + outputs


def _authors_parameters(num_classes: int) -> int:
    """Parameters of the authors' RefineDet VGG16 (``VGG16_VOC2012_320.py`` / ``_512.py`` with
    ``model_libs.py``: no batch norm), counted layer by layer from that layer list: VGG16's 13 convs, fc6
    3×3 and fc7 1×1 of 1024, conv6_1 1×1 256, conv6_2 3×3 512, two L2Norm scale vectors, TCBs of 256 (two
    3×3 convs, a 2×2 stride-2 deconvolution from the level above, a 3×3 conv), ARM 3×3 convs of 3 anchors ×
    (4 offsets, 2 softmax scores), ODM 3×3 convs of 3 × (4, num_classes + 1)."""
    vgg = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512)]
    vgg += [(512, 512)] * 5
    sources = [512, 512, 1024, 512]  # conv4_3, conv5_3, fc7, conv6_2
    total = sum(_conv(i, o, 3) for i, o in vgg)
    total += _conv(512, 1024, 3) + _conv(1024, 1024, 1) + _conv(1024, 256, 1) + _conv(256, 512, 3)
    total += 512 + 512
    total += sum(_conv(c, 256, 3) for c in sources) + 8 * _conv(256, 256, 3) + 3 * _conv(256, 256, 2)
    total += sum(_conv(c, 3 * 4, 3) + _conv(c, 3 * 2, 3) for c in sources)
    total += 4 * (_conv(256, 3 * 4, 3) + _conv(256, 3 * (num_classes + 1), 3))
    return total


PAPER_SIZES = [("refinedet320_vgg16", 320, [40, 20, 10, 5]), ("refinedet512_vgg16", 512, [64, 32, 16, 8])]


@pytest.mark.parametrize(("name", "size", "grids"), PAPER_SIZES)
def test_vgg16_builders_at_the_papers_two_sizes(name: str, size: int, grids: list[int]) -> None:
    with torch.device("meta"):  # shapes only: no weights, no arithmetic
        model = create_model(name, num_classes=20)
        features = model.extract_features(torch.zeros(1, 3, size, size))
    assert model.input_size == size
    assert [tuple(f.shape[1:]) for f in features.values()] == [
        (512, grids[0], grids[0]), (512, grids[1], grids[1]), (1024, grids[2], grids[2]),
        (512, grids[3], grids[3]),
    ]  # fmt: skip
    levels = [torch.zeros(1, 1, g, g) for g in grids]
    anchors = model.anchor_generator(torch.zeros(1, 3, size, size), levels)[0]
    assert anchors.shape == (3 * sum(g * g for g in grids), 4)  # 6,375 at 320, 16,320 at 512
    assert anchors.shape[0] == {320: 6375, 512: 16320}[size]
    # anchors 32 / 64 / 128 / 256 (4 × the stride), ratios 1/2, 1, 2, centred at the cell centres
    widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    start = 0
    for grid, stride in zip(grids, (8, 16, 32, 64), strict=True):
        level = slice(start, start + 3 * grid * grid)
        assert sorted(set((heights[level] / widths[level]).round(decimals=1).tolist())) == [0.5, 1.0, 2.0]
        square = (heights[level] == widths[level]).nonzero().flatten()
        assert bool((widths[level][square] == 4 * stride).all())
        centres = (anchors[level][:, :2] + anchors[level][:, 2:]) / 2
        assert centres[:, 0].min().item() == stride / 2 and centres[:, 1].max().item() == size - stride / 2
        start += 3 * grid * grid
    # the authors' layers: no batch norm in VGG16, fc6 dilated by 3, L2Norm 10 / 8, the extra 256 / 512
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model.neck.fc[0].dilation == (3, 3) and model.neck.fc[0].out_channels == 1024
    assert [model.neck.extra[0].out_channels, model.neck.extra[2].out_channels] == [256, 512]
    assert set(model.neck.norms) == {"s3", "s4"} and model.tcb.upsample[0].kernel_size == (4, 4)


def test_vgg16_parameters_equal_the_authors_model_but_for_the_documented_differences() -> None:
    authors = _authors_parameters(20)  # VOC: 20 classes + background
    assert authors == 34_440_884
    sources = [512, 512, 1024, 512]
    sigmoid = sum(_conv(c, 3, 3) - _conv(c, 6, 3) for c in sources)  # one ARM logit per anchor, not two
    deconv = 3 * (_conv(256, 256, 4) - _conv(256, 256, 2))  # the paper's 4×4 deconvolution
    for name in ("refinedet320_vgg16", "refinedet512_vgg16", "refinedet_vgg16"):
        with torch.device("meta"):
            model = create_model(name, num_classes=20)
            released = create_model(name, num_classes=20, deconv_kernel=2)
        assert sum(p.numel() for p in model.parameters()) == authors + sigmoid + deconv == 36_731_048
        assert sum(p.numel() for p in released.parameters()) == authors + sigmoid == 34_371_752


def test_vgg16_forward_and_gradients_to_every_parameter() -> None:
    torch.manual_seed(0)
    model = create_model("refinedet320_vgg16", num_classes=3, input_size=64).train()  # small: cheap
    assert model.neck.norms["s3"].weight.unique().tolist() == [10.0]  # L2Norm scales of conv4_3, conv5_3
    assert model.neck.norms["s4"].weight.unique().tolist() == [8.0]
    image = torch.rand(3, 48, 80)
    target = {"boxes": torch.tensor([[4.0, 6.0, 40.0, 30.0]]), "labels": torch.tensor([1])}
    losses = model([image, torch.rand(3, 64, 64)], [target, dict(EMPTY)])
    assert sorted(losses) == ["arm_box_regression", "arm_classification", "odm_box_regression",
                              "odm_classification"]  # fmt: skip
    assert all(bool(torch.isfinite(v)) and v.item() > 0 for v in losses.values())
    sum(losses.values()).backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None]  # every parameter is in the graph
    assert not silent, silent[:5]
    assert bool(model.backbone.features[0].weight.grad.abs().sum() > 0)  # through VGG16 to its first conv
    model.eval()
    with torch.no_grad():
        detections = model([image])[0]
    boxes = detections["boxes"]
    assert boxes.shape[0] > 0 and bool((boxes[:, 2] <= 80).all() and (boxes[:, 3] <= 48).all())


def test_input_size_warps_images_targets_and_detections() -> None:
    """The model with ``input_size`` equals the model without it on the warped image, targets scaled."""
    torch.manual_seed(0)
    model = create_model("refinedet_plain", num_classes=3, score_threshold=0.0, input_size=96)
    image = torch.rand(3, 64, 128)
    target = {"boxes": torch.tensor([[8.0, 4.0, 40.0, 36.0], [70.0, 20.0, 120.0, 60.0]]),
              "labels": torch.tensor([0, 2])}  # fmt: skip
    warped = torch.nn.functional.interpolate(image[None], size=(96, 96), mode="bilinear")[0]
    scale = torch.tensor([96 / 128, 96 / 64, 96 / 128, 96 / 64])
    scaled = {"boxes": target["boxes"] * scale, "labels": target["labels"]}
    model.train()
    with_size = model([image], [target])
    model.input_size = 0
    by_hand = model([warped], [scaled])
    for name, value in with_size.items():
        assert value.item() == by_hand[name].item(), name  # the same arithmetic on the same tensors
    model.eval()
    with torch.no_grad():
        expected = model([warped])[0]
        model.input_size = 96
        detections = model([image])[0]
    assert detections["boxes"].shape[0] > 0
    torch.testing.assert_close(detections["scores"], expected["scores"], rtol=0, atol=0)
    back = clip_boxes_to_image(expected["boxes"] / scale, (64, 128))
    torch.testing.assert_close(detections["boxes"], back, rtol=0, atol=0)


def test_bad_configuration_is_named() -> None:
    with pytest.raises(ConfigError, match=r"anchor_sizes=\(16, 32\): expected one size per level"):
        create_model("refinedet_plain", anchor_sizes=(16, 32))
    with pytest.raises(ConfigError, match=r"filter_threshold=1\.5"):
        create_model("refinedet_plain", filter_threshold=1.5)
    with pytest.raises(ConfigError, match="iou_threshold=0"):
        create_model("refinedet_plain", iou_threshold=0)
    with pytest.raises(ConfigError, match="neg_pos_ratio=-1"):
        create_model("refinedet_plain", neg_pos_ratio=-1)
    with pytest.raises(ConfigError, match=r"input_size=-1: expected an integer >= 0"):
        create_model("refinedet_plain", input_size=-1)
    with pytest.raises(ConfigError, match=r"deconv_kernel=3: expected an even integer >= 2"):
        create_model("refinedet_plain", deconv_kernel=3)
    with pytest.raises(ConfigError, match=r"anchor_offset=1\.5"):
        create_model("refinedet_plain", anchor_offset=1.5)
    model = create_model("refinedet_plain", input_size=64).eval()  # bad images are named before any warp
    with pytest.raises(InputShapeError, match=r"images\[1\] must have shape \[3, H, W\].*got \[1, 32, 32\]"):
        model([torch.rand(3, 32, 32), torch.rand(1, 32, 32)])


def test_docstring_examples_run() -> None:
    result = doctest.testmod(importlib.import_module("visionkit.models.detectors.refinedet"))
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.slow
def test_tiny_overfit_reaches_near_perfect_ap() -> None:
    model = _model()
    config = ShapesConfig(image_size=64, min_size=14, max_size=30, max_objects=2)
    dataset = ShapesDataset(2, seed=1, config=config)
    images, targets = (list(x) for x in zip(*[dataset[i] for i in range(2)], strict=True))
    steps, history = steps_to_near_perfect(model, images, targets, num_classes=3)
    assert steps is not None, f"AP50 < 0.99 after {len(history)} steps"
    total = [sum(losses.values()) for losses in history]
    assert min(total[-5:]) < 0.5 * total[0]
