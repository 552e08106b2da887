"""Cascade R-CNN: per-stage target assignment vs a slow exact loop, the stage pipeline (refined boxes
detached and re-matched, gradient scaling), inference (last stage's boxes, averaged scores), errors, a tiny
overfit run and the refinement it learns (box IoU with the ground truth rises stage by stage)."""

from __future__ import annotations

import doctest
import importlib
import math
from fractions import Fraction

import pytest
import torch
from overfit import steps_to_near_perfect
from torch.nn import functional as F

from tolerances import LIBM_ULPS, assert_within, eps, gamma, unit_roundoff
from visionkit.data.shapes import ShapesConfig, ShapesDataset
from visionkit.errors import ConfigError
from visionkit.models import create_model
from visionkit.models.detectors import CascadeRCNN, CascadeRoIHeads, PostProcess, RoIHeads
from visionkit.models.detectors.cascade_rcnn import scale_gradient
from visionkit.models.heads import FastRCNNPredictor, TwoMLPHead
from visionkit.ops.boxes import box_iou
from visionkit.ops.multiscale_roi_align import MultiScaleRoIAlign

THRESHOLDS = (0.5, 0.6, 0.7)
WEIGHTS = ((10.0, 10.0, 5.0, 5.0), (20.0, 20.0, 10.0, 10.0), (30.0, 30.0, 15.0, 15.0))
EMPTY = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
SMALL = {"num_classes": 3, "width_multiplier": 0.35, "fpn_channels": 32, "representation_size": 64,
         "anchor_sizes": (16, 32, 64, 128, 256), "rpn_pre_nms_top_n": (200, 200),
         "rpn_post_nms_top_n": (50, 50), "box_batch_size_per_image": 64}  # fmt: skip


def _cascade(num_classes: int = 3, **options) -> CascadeRoIHeads:
    torch.manual_seed(0)
    pooler = MultiScaleRoIAlign(("p2", "p3"), 3, 1, aligned=True, strides=(4, 8))
    stages = [
        RoIHeads(
            pooler,
            TwoMLPHead(4 * 9, 16),
            FastRCNNPredictor(16, num_classes, class_agnostic=True),
            num_classes=num_classes,
            fg_iou_threshold=t,
            bg_iou_threshold=t,
            batch_size_per_image=32,
            box_coder_weights=w,
        )
        for t, w in zip(THRESHOLDS, WEIGHTS, strict=True)
    ]
    return CascadeRoIHeads(stages, **options)


def _exact_iou(a: list[float], b: list[float]) -> Fraction:
    a, b = [Fraction(v) for v in a], [Fraction(v) for v in b]
    iw = max(Fraction(0), min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(Fraction(0), min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else Fraction(0)


def _reference_targets(boxes: torch.Tensor, target: dict, threshold: float, weights) -> list:
    """The stage's assignment, box by box: best gt by exact IoU (first on ties), positive at IoU >=
    threshold, label = class + 1, targets (tx, ty, tw, th) in exact arithmetic (log in float64)."""
    rows = []
    gts, classes = target["boxes"].tolist(), target["labels"].tolist()
    for box in boxes.tolist():
        ious = [_exact_iou(gt, box) for gt in gts]
        best = max(range(len(gts)), key=lambda g: (ious[g], -g)) if gts else None
        if best is None or ious[best] < Fraction(threshold):
            rows.append((0, None, ious))
            continue
        p, g = [Fraction(v) for v in box], [Fraction(v) for v in gts[best]]
        pw, ph, gw, gh = p[2] - p[0], p[3] - p[1], g[2] - g[0], g[3] - g[1]
        tx = weights[0] * ((g[0] + g[2]) - (p[0] + p[2])) / 2 / pw
        ty = weights[1] * ((g[1] + g[3]) - (p[1] + p[3])) / 2 / ph
        tw, th = weights[2] * math.log(gw / pw), weights[3] * math.log(gh / ph)
        rows.append((classes[best] + 1, (float(tx), float(ty), tw, th), ious))
    return rows


def _ambiguous(ious: list[Fraction], threshold: float, band: float) -> bool:
    """An IoU within ``band`` of the threshold, or two near-equal best IoUs: float32 may decide either way."""
    near = any(abs(float(iou) - threshold) <= band for iou in ious)
    ordered = sorted(ious, reverse=True)
    return near or (len(ordered) > 1 and ordered[0] != ordered[1] and float(ordered[0] - ordered[1]) <= band)


def _random_boxes(count: int, generator: torch.Generator, size: int = 64) -> torch.Tensor:
    xy = torch.randint(0, size - 8, (count, 2), generator=generator)
    wh = torch.randint(4, 40, (count, 2), generator=generator)
    return torch.cat((xy, (xy + wh).clamp(max=size)), dim=1).float()


# IoU of float32 boxes: one subtraction per side (u each), products and the union sum (a few u), one
# division: within γ₁₂ relative of the exact IoU ≤ 1. Boxes closer than that to a decision are skipped.
BAND = gamma(12, torch.float32)


def _best(ious: list[Fraction]) -> int:
    return max(range(len(ious)), key=lambda g: (ious[g], -g))


def _delta_bounds(box: list[float], gt: list[float], weights, wanted) -> torch.Tensor:
    """|float32 encode − exact| for float32 corners (any values). Centre ``c = fl(x1 + fl(0.5·fl(x2 − x1)))``
    is within ``E = u·(w/2 + |c|)·(1 + u)`` of exact; ``d = fl(gc − pc)`` within ``E_g + E_p + u·(|d| + E_g
    + E_p)``; ``tx = fl(fl(wx·d) / fl(pw))`` then adds three roundings (γ₃) — so
    ``|tx' − tx| ≤ (wx / pw)·E_d·(1 + γ₃) + γ₃·|tx|``. ``tw = fl(ww·log(fl(fl(gw) / fl(pw))))``: the ratio is
    within γ₃ relative, which moves log by ≤ γ₄; log adds LIBM_ULPS·ε·|log|; the product rounds once.
    The reference's own float64 rounding (4·ε₆₄ relative) is added."""
    u, g3, g4 = unit_roundoff(torch.float32), gamma(3, torch.float32), gamma(4, torch.float32)
    bounds = []
    for axis in (0, 1):
        p_side, g_side = box[axis + 2] - box[axis], gt[axis + 2] - gt[axis]
        p_centre, g_centre = box[axis] + p_side / 2, gt[axis] + g_side / 2
        e_p, e_g = u * (p_side / 2 + abs(p_centre)) * (1 + u), u * (g_side / 2 + abs(g_centre)) * (1 + u)
        e_d = e_p + e_g + u * (abs(g_centre - p_centre) + e_p + e_g)
        value = wanted[axis]
        bounds.append(
            weights[axis] / p_side * e_d * (1 + g3) + g3 * abs(value) + 4 * eps(torch.float64) * abs(value)
        )
    for axis in (2, 3):
        value, weight = wanted[axis], weights[axis]
        log_error = g4 + LIBM_ULPS * eps(torch.float32) * (abs(value) / weight + g4)
        bounds.append(weight * log_error * (1 + u) + u * abs(value) + 4 * eps(torch.float64) * abs(value))
    return torch.tensor(bounds, dtype=torch.float64)


def _check_against_reference(labels, box_targets, positive, boxes, target, threshold, weights) -> int:
    reference = _reference_targets(boxes, target, threshold, weights)
    checked = 0
    for row, (label, wanted, ious) in enumerate(reference):
        if _ambiguous(ious, threshold, BAND):
            continue
        checked += 1
        assert int(labels[row]) == label and bool(positive[row]) == (label > 0), (row, ious)
        if wanted is None:
            assert box_targets[row].tolist() == [0.0, 0.0, 0.0, 0.0]
            continue
        assert_within(box_targets[row], torch.tensor(wanted, dtype=torch.float64),
                      _delta_bounds(boxes[row].tolist(), target["boxes"][_best(ious)].tolist(), weights,
                                    wanted))  # fmt: skip
    return checked


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_stage_targets_match_the_slow_exact_reference(stage: int) -> None:
    heads = _cascade()
    generator = torch.Generator().manual_seed(stage)
    boxes, targets = [], []
    for count in (60, 45):
        gt = _random_boxes(3, generator)
        # proposals around the ground truth (high IoU), and anywhere (low IoU)
        jitter = torch.randint(-4, 5, (count // 3, 4), generator=generator).float()
        near = (gt.repeat(count // 9 + 1, 1)[: count // 3] + jitter).clamp(0, 64)
        near[:, 2:] = torch.maximum(near[:, 2:], near[:, :2] + 2)
        boxes.append(torch.cat((near, _random_boxes(count - count // 3, generator))))
        targets.append({"boxes": gt, "labels": torch.randint(0, 3, (3,), generator=generator)})
    boxes.append(_random_boxes(10, generator))
    targets.append(EMPTY)
    labels, box_targets, positive = heads.label(stage, boxes, targets)
    offsets = [0, 60, 105, 115]
    checked = 0
    for image in range(3):
        rows = slice(offsets[image], offsets[image + 1])
        checked += _check_against_reference(labels[rows], box_targets[rows], positive[rows], boxes[image],
                                            targets[image], THRESHOLDS[stage], WEIGHTS[stage])  # fmt: skip
    assert checked >= 110 and int(positive.sum()) >= 5  # almost every box decided, positives present


def _pipeline_inputs(generator: torch.Generator):
    features = {"p2": torch.randn(2, 4, 16, 16, generator=generator, requires_grad=True),
                "p3": torch.randn(2, 4, 8, 8, generator=generator, requires_grad=True)}  # fmt: skip
    gt = torch.tensor([[4.0, 6.0, 30.0, 40.0], [34.0, 20.0, 60.0, 50.0]])
    near = gt.repeat(8, 1) + torch.randint(-5, 6, (16, 4), generator=generator).float()
    proposals = [torch.cat((near.clamp(0, 64), _random_boxes(20, generator))), _random_boxes(12, generator)]
    targets = [{"boxes": gt, "labels": torch.tensor([0, 2])}, EMPTY]
    return features, proposals, targets


def test_later_stages_take_the_detached_refined_boxes_and_rematch_them_at_their_threshold() -> None:
    heads = _cascade().train()
    # large deltas so that refinement really moves the boxes between stages
    for stage in heads.stages:
        torch.nn.init.normal_(stage.box_predictor.bbox_pred.weight, std=0.3)
    features, proposals, targets = _pipeline_inputs(torch.Generator().manual_seed(0))
    outputs = heads.run_stages(features, proposals, [(64, 64), (64, 64)], targets)
    assert len(outputs) == 3
    for index in (1, 2):
        previous, current = outputs[index - 1], outputs[index]
        assert all(torch.equal(a, b) for a, b in zip(current.boxes, previous.refined, strict=True))
        assert not any(b.requires_grad for b in current.boxes)
        for boxes in current.boxes:  # clipped, non-empty
            assert bool((boxes >= 0).all() and (boxes <= 64).all())
            assert bool(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all())
        counts = [b.shape[0] for b in current.boxes]
        checked = 0
        for image, rows in enumerate(torch.arange(sum(counts)).split(counts)):
            checked += _check_against_reference(current.labels[rows], current.box_targets[rows],
                                                current.positive[rows], current.boxes[image], targets[image],
                                                THRESHOLDS[index], WEIGHTS[index])  # fmt: skip
        assert checked >= sum(counts) - 2
    # the stage-2 loss reaches the shared features but not stage 1's layers (boxes detached)
    loss = RoIHeads.loss(outputs[1].logits, outputs[1].deltas, outputs[1].labels, outputs[1].box_targets,
                         outputs[1].positive)  # fmt: skip
    sum(loss.values()).backward()
    assert all(p.grad is None for p in heads.stages[0].parameters())
    assert features["p2"].grad is not None and float(features["p2"].grad.abs().sum()) > 0


def test_losses_are_weighted_per_stage_and_the_gradient_into_the_features_is_scaled() -> None:
    def losses_and_grad(**options):
        heads = _cascade(**options).train()
        features, proposals, targets = _pipeline_inputs(torch.Generator().manual_seed(1))
        torch.manual_seed(5)  # the same stage-1 sample on both runs
        _, losses = heads(features, proposals, [(64, 64), (64, 64)], targets)
        sum(losses.values()).backward()
        return losses, features["p2"].grad

    weighted, grad_half = losses_and_grad(gradient_scale=0.5)
    plain, grad_one = losses_and_grad(stage_loss_weights=(1.0, 1.0, 1.0), gradient_scale=1.0)
    assert set(weighted) == {f"{k}_stage{s}" for k in ("classification", "box_regression") for s in (1, 2, 3)}
    for name, value in weighted.items():
        factor = {"1": 1.0, "2": 0.5, "3": 0.25}[name[-1]]
        assert torch.equal(value, factor * plain[name])  # powers of two: exact
    assert weighted["box_regression_stage1"].item() > 0
    # the same losses with weights 1 / 1 / 1: the features' gradient is exactly halved by a 0.5 scale
    # (every term is scaled by a power of two before the same sums in the same order)
    _, grad_half_plain = losses_and_grad(stage_loss_weights=(1.0, 1.0, 1.0), gradient_scale=0.5)
    assert float(grad_one.abs().sum()) > 0 and torch.equal(grad_half_plain, grad_one * 0.5)
    assert _cascade().gradient_scale == 1 / 3 and not torch.equal(grad_half, grad_half_plain)


def test_scale_gradient_is_the_identity_forward_and_scales_backward() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    y = scale_gradient(x, 0.25)
    assert torch.equal(y, x)
    upstream = torch.randn(3, 4)
    y.backward(upstream)
    assert torch.equal(x.grad, upstream * 0.25)


@pytest.mark.parametrize("test_stages", [1, 2, 3])
def test_inference_boxes_from_the_last_stage_scores_averaged(test_stages: int) -> None:
    heads = _cascade(test_stages=test_stages).eval()
    features, proposals, _ = _pipeline_inputs(torch.Generator().manual_seed(2))
    with torch.no_grad():
        outputs = heads.run_stages(features, proposals, [(64, 64), (64, 64)], num_stages=test_stages)
        settings = PostProcess(score_threshold=0.0, nms_threshold=1.0, detections_per_image=1000)
        detections, losses = heads(features, proposals, [(64, 64), (64, 64)], postprocess=settings)
    assert losses == {} and len(outputs) == test_stages
    offsets = [0, proposals[0].shape[0]]
    for image, detection in enumerate(detections):
        boxes = outputs[-1].refined[image]
        assert detection["boxes"].shape[0] == boxes.shape[0] * 3  # every (box, class): nothing suppressed
        for box, label, score in zip(
            detection["boxes"], detection["labels"], detection["scores"], strict=True
        ):
            row = int(torch.nonzero((boxes == box).all(dim=1))[0])
            probabilities = [F.softmax(out.logits[offsets[image] + row].double(), dim=0)[int(label) + 1]
                             for out in outputs]  # fmt: skip
            # float32 softmax (exp within LIBM_ULPS, a sum of K + 1 terms, one division) per stage, then a
            # sum of n terms and a division: a few dozen u of a value ≤ 1
            bound = gamma(4 * (test_stages + 8), torch.float32)
            assert abs(float(score) - float(sum(probabilities) / test_stages)) <= bound


def test_bad_configuration_is_named() -> None:
    with pytest.raises(ConfigError, match=r"stage_iou_thresholds=\(0.5, 1.2\)"):
        create_model("cascade_rcnn_plain_fpn", stage_iou_thresholds=(0.5, 1.2))
    with pytest.raises(ConfigError, match="one entry per stage"):
        create_model("cascade_rcnn_plain_fpn", stage_iou_thresholds=(0.5, 0.6))
    with pytest.raises(ConfigError, match="test_stages=4"):
        create_model("cascade_rcnn_plain_fpn", test_stages=4)
    with pytest.raises(ConfigError, match="stage_loss_weights"):
        _cascade(stage_loss_weights=(1.0, -1.0, 1.0))
    pooler = MultiScaleRoIAlign(("p2",), 3, 1, strides=(4,))
    specific = RoIHeads(pooler, TwoMLPHead(36, 8), FastRCNNPredictor(8, 2), num_classes=2)
    with pytest.raises(ConfigError, match=r"stages\[0\]: expected a class-agnostic"):
        CascadeRoIHeads([specific], stage_loss_weights=(1.0,))
    heads = _cascade()
    with pytest.raises(ConfigError, match="test_stages=-1"):
        heads.test_stages = -1


def test_builders_reuse_the_faster_rcnn_parts() -> None:
    model = create_model("cascade_rcnn_mobilenet_v2_fpn", **SMALL)
    assert isinstance(model, CascadeRCNN)
    stages = model.roi_heads.stages
    assert [s.matcher.high_threshold for s in stages] == list(THRESHOLDS)
    assert [s.box_coder_weights for s in stages] == list(WEIGHTS)
    assert all(s.pooler is stages[0].pooler for s in stages)
    assert len({id(s.box_head) for s in stages}) == 3
    assert stages[0].box_predictor.bbox_pred.out_features == 4


def test_negative_images_train_with_zero_box_loss() -> None:
    torch.manual_seed(0)
    model = create_model("cascade_rcnn_mobilenet_v2_fpn", **SMALL).train()
    losses = model([torch.rand(3, 64, 64), torch.rand(3, 48, 64)], [dict(EMPTY), dict(EMPTY)])
    for stage in (1, 2, 3):
        assert losses[f"box_regression_stage{stage}"].item() == 0.0
        assert losses[f"classification_stage{stage}"].item() > 0.0


@pytest.mark.parametrize(
    "name",
    ["visionkit.models.detectors.cascade_rcnn", "visionkit.models.detectors.roi_heads",
     "visionkit.models.heads.box_head"],
)  # fmt: skip
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0 and result.attempted > 0


def _shapes(count: int = 2, seed: int = 1):
    config = ShapesConfig(image_size=64, min_size=14, max_size=30, max_objects=2)
    dataset = ShapesDataset(count, seed=seed, config=config)
    images, targets = zip(*[dataset[i] for i in range(count)], strict=True)
    return list(images), list(targets)


def stage_ious(model: CascadeRCNN, images, targets) -> list[torch.Tensor]:
    """For every RPN proposal with IoU >= 0.5 with a ground-truth box: its IoU with that box after 0, 1,
    2, 3 refinements (the quality the cascade is meant to raise)."""
    per_stage = model.eval().stage_boxes(images)
    result = [[] for _ in per_stage]
    for image, target in enumerate(targets):
        iou = box_iou(target["boxes"], per_stage[0][image])
        if iou.numel() == 0:
            continue
        best, gt = iou.max(dim=0)
        rows = best >= 0.5
        for stage, boxes in enumerate(per_stage):
            matched = box_iou(target["boxes"], boxes[image]).gather(0, gt[None])[0]
            result[stage].append(matched[rows])
    return [torch.cat(parts) for parts in result]


@pytest.mark.slow
def test_tiny_overfit_reaches_near_perfect_ap_and_refines_boxes_stage_by_stage() -> None:
    torch.manual_seed(0)
    model = create_model("cascade_rcnn_mobilenet_v2_fpn", **SMALL)
    images, targets = _shapes(2)
    steps, history = steps_to_near_perfect(model, images, targets, num_classes=3)
    assert steps is not None, f"AP50 < 0.99 after {len(history)} steps"
    total = [sum(losses.values()) for losses in history]
    assert min(total[-5:]) < 0.5 * total[0]
    ious = stage_ious(model, images, targets)
    means = [float(v.mean()) for v in ious]
    assert ious[0].numel() > 0 and means[3] > means[0], means


def test_builder_forwards_every_rpn_option_to_faster_rcnn_parts() -> None:
    """The RPN sampler settings reach the RPN (the builder once dropped them, as issue 13 warned)."""
    model = create_model(
        "cascade_rcnn_plain_fpn", num_classes=3, rpn_batch_size_per_image=64, rpn_positive_fraction=0.25
    )
    assert (model.rpn.batch_size_per_image, model.rpn.positive_fraction) == (64, 0.25)
