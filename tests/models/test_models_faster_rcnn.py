"""Faster R-CNN: RoI pooler levels, RPN proposals and loss vs literal references, sampling, contracts."""

from __future__ import annotations

import math

import pytest
import torch
from overfit import steps_to_near_perfect
from torch.nn import functional as F

from visionkit.data.shapes import ShapesConfig, ShapesDataset
from visionkit.metrics.detection.coco import evaluate_coco
from visionkit.models import create_model, list_models
from visionkit.models.detectors import (
    FasterRCNN,
    RegionProposalNetwork,
    RoIHeads,
    rpn_loss,
)
from visionkit.models.heads import FastRCNNPredictor, RPNHead, TwoMLPHead
from visionkit.ops.anchors import AnchorGenerator
from visionkit.ops.box_coder import decode_boxes
from visionkit.ops.boxes import box_iou
from visionkit.ops.matcher import Matcher
from visionkit.ops.multiscale_roi_align import MultiScaleRoIAlign
from visionkit.ops.roi_align import roi_align
from visionkit.ops.roi_pool import roi_pool

SMALL = {"num_classes": 3, "width_multiplier": 0.35, "fpn_channels": 32, "representation_size": 64,
         "anchor_sizes": (16, 32, 64, 128, 256), "rpn_pre_nms_top_n": (200, 200),
         "rpn_post_nms_top_n": (50, 50), "box_batch_size_per_image": 64}  # fmt: skip
EMPTY = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}


def _small_model(**overrides) -> FasterRCNN:
    torch.manual_seed(0)
    return create_model("fasterrcnn_mobilenet_v2_fpn", **{**SMALL, **overrides})


def _shapes(count: int = 2, seed: int = 1) -> tuple[list[torch.Tensor], list[dict]]:
    config = ShapesConfig(image_size=64, min_size=14, max_size=30, max_objects=2)
    dataset = ShapesDataset(count, seed=seed, config=config)
    images, targets = zip(*[dataset[i] for i in range(count)], strict=True)
    return list(images), list(targets)


@pytest.mark.parametrize("op", ["align", "pool"])
def test_pooler_takes_each_roi_from_the_fpn_level_of_its_size(op: str) -> None:
    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(2, 4, 256 // 2**k, 256 // 2**k, generator=generator) for k in (2, 3, 4, 5)]
    proposals = [torch.tensor([[0.0, 0.0, 40.0, 40.0], [10.0, 10.0, 230.0, 240.0]]),
                 torch.tensor([[5.0, 5.0, 120.0, 125.0]])]  # fmt: skip
    names = ("p2", "p3", "p4", "p5")
    pooler = MultiScaleRoIAlign(names, 7, 2, aligned=True, op=op, strides=(4, 8, 16, 32))
    pooled = pooler(dict(zip(names, features, strict=True)), proposals, [(256, 256)])
    # FPN eq. 1: k = floor(4 + log2(sqrt(area) / 224)) clamped to [2, 5]
    for row, (image, box) in enumerate([(0, proposals[0][0]), (0, proposals[0][1]), (1, proposals[1][0])]):
        side = math.sqrt(float((box[2] - box[0]) * (box[3] - box[1])))
        level = min(5, max(2, math.floor(4 + math.log2(side / 224) + 1e-6)))
        rois = torch.cat((torch.tensor([float(image)]), box))[None]
        feature, scale = features[level - 2], 1 / 2**level
        expected = (
            roi_align(feature, rois, 7, scale, 2, aligned=True)
            if op == "align"
            else roi_pool(feature, rois, 7, scale)
        )
        # the pooler calls the same op on the same RoI and level: bit-identical
        assert torch.equal(pooled[row : row + 1], expected)


def _tiny_rpn(batch_size: int = 256, positive_fraction: float = 0.5) -> RegionProposalNetwork:
    torch.manual_seed(0)
    generator = AnchorGenerator(((16,), (32,)), ((0.5, 1.0, 2.0),) * 2)
    return RegionProposalNetwork(generator, RPNHead(4, 3), batch_size_per_image=batch_size,
                                 positive_fraction=positive_fraction, pre_nms_top_n=(40, 30),
                                 post_nms_top_n=(20, 10))  # fmt: skip


def test_rpn_proposals_are_clipped_detached_and_limited() -> None:
    rpn = _tiny_rpn()
    batch = torch.zeros(2, 3, 64, 64)
    features = [torch.randn(2, 4, 16, 16), torch.randn(2, 4, 8, 8)]
    rpn.train()
    proposals, losses = rpn(batch, [(64, 64), (40, 60)], features, [EMPTY, EMPTY])
    assert set(losses) == {"rpn_objectness", "rpn_box_regression"}
    assert losses["rpn_box_regression"].item() == 0.0  # negatives only
    for boxes, (height, width) in zip(proposals, [(64, 64), (40, 60)], strict=True):
        assert 0 < boxes.shape[0] <= 20 and not boxes.requires_grad
        assert (
            bool((boxes[:, 2] <= width).all())
            and bool((boxes[:, 3] <= height).all())
            and bool((boxes >= 0).all())
        )
        assert bool((boxes[:, 2] > boxes[:, 0]).all())
    rpn.eval()
    proposals, losses = rpn(batch, [(64, 64), (64, 64)], features)
    assert losses == {} and all(p.shape[0] <= 10 for p in proposals)


def test_rpn_loss_equals_the_literal_reference_when_every_anchor_is_sampled() -> None:
    generator = torch.Generator().manual_seed(0)
    anchors = AnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),))(
        torch.zeros(2, 3, 48, 48), [torch.zeros(2, 1, 4, 4)]
    )
    count = anchors[0].shape[0]
    objectness = torch.randn(2, count, generator=generator)
    deltas = torch.randn(2, count, 4, generator=generator) * 0.1
    first = {
        "boxes": torch.tensor([[2.0, 3.0, 30.0, 20.0], [20.0, 18.0, 46.0, 47.0]]),
        "labels": torch.tensor([0, 1]),
    }
    targets = [first, EMPTY]
    matcher = Matcher(0.7, 0.3, True)
    losses = rpn_loss(
        objectness, deltas, anchors, targets, matcher, batch_size_per_image=10**6, positive_fraction=1.0
    )
    bce, smooth, sampled = 0.0, 0.0, 0
    for image in range(2):
        gt = targets[image]["boxes"]
        matches = matcher(box_iou(gt, anchors[image]))  # the matcher has its own reference tests
        for n in range(count):
            if matches[n] == -2:
                continue
            sampled += 1
            y, x = float(matches[n] >= 0), float(objectness[image, n])
            bce += -(y * math.log(1 / (1 + math.exp(-x))) + (1 - y) * math.log(1 - 1 / (1 + math.exp(-x))))
            if matches[n] >= 0:
                a, g = anchors[image][n].tolist(), gt[matches[n]].tolist()
                aw, ah = a[2] - a[0], a[3] - a[1]
                t = [((g[0] + g[2]) - (a[0] + a[2])) / 2 / aw, ((g[1] + g[3]) - (a[1] + a[3])) / 2 / ah,
                     math.log((g[2] - g[0]) / aw), math.log((g[3] - g[1]) / ah)]  # fmt: skip
                for i in range(4):
                    d = abs(float(deltas[image, n, i]) - t[i])
                    smooth += 0.5 * d * d * 9 if d < 1 / 9 else d - 0.5 / 9
    assert losses["rpn_objectness"].item() == pytest.approx(bce / sampled, rel=1e-5)
    assert losses["rpn_box_regression"].item() == pytest.approx(smooth / sampled, rel=1e-5)


def _roi_heads(num_classes: int = 3) -> RoIHeads:
    torch.manual_seed(0)
    pooler = MultiScaleRoIAlign(("p2", "p3"), 3, 1, aligned=True, strides=(4, 8))
    box_head, predictor = TwoMLPHead(4 * 9, 16), FastRCNNPredictor(16, num_classes)
    return RoIHeads(
        pooler, box_head, predictor, num_classes=num_classes, batch_size_per_image=32, positive_fraction=0.25
    )


def test_second_stage_sampling_adds_ground_truth_and_encodes_targets() -> None:
    heads = _roi_heads()
    proposals = [
        torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 12.0], [30.0, 30.0, 60.0, 60.0]] * 20)
    ]
    gt = {
        "boxes": torch.tensor([[0.0, 0.0, 10.0, 11.0], [40.0, 40.0, 60.0, 62.0]]),
        "labels": torch.tensor([2, 0]),
    }
    kept, labels, box_targets, positive = heads.sample(proposals, [gt])
    # 42 candidates reach IoU >= 0.5 (40 proposals + the 2 ground-truth boxes), 20 do not:
    # 8 positives (25 % of 32) and all 20 negatives are sampled
    assert int(positive.sum()) == 8 and labels.numel() == 28
    assert set(labels[positive].tolist()) <= {1, 3} and bool((labels[~positive] == 0).all())
    decoded = decode_boxes(box_targets[positive], kept[0][positive], heads.box_coder_weights)
    matched = gt["boxes"][
        (labels[positive] == 1).long()
    ]  # label 3 = class 2 = gt 0; label 1 = class 0 = gt 1
    torch.testing.assert_close(decoded.float(), matched, rtol=0, atol=1e-4)
    _, labels, _, positive = heads.sample([torch.tensor([[0.0, 0.0, 5.0, 5.0]])], [EMPTY])
    assert labels.tolist() == [0] and not bool(positive.any())


def test_second_stage_loss_of_negatives_is_zero_for_boxes() -> None:
    logits, deltas = torch.randn(5, 4, requires_grad=True), torch.randn(5, 16, requires_grad=True)
    losses = RoIHeads.loss(
        logits, deltas, torch.zeros(5, dtype=torch.int64), torch.zeros(5, 4), torch.zeros(5, dtype=torch.bool)
    )
    assert losses["box_regression"].item() == 0.0
    torch.testing.assert_close(
        losses["classification"], F.cross_entropy(logits, torch.zeros(5, dtype=torch.int64))
    )
    sum(losses.values()).backward()
    assert torch.equal(deltas.grad, torch.zeros_like(deltas))


def test_training_returns_named_finite_losses_and_negatives_give_zero_regression() -> None:
    model = _small_model().train()
    images, targets = _shapes(2)
    losses = model(images, targets)
    assert set(losses) == {"rpn_objectness", "rpn_box_regression", "classification", "box_regression"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    negatives = model(images, [dict(EMPTY), dict(EMPTY)])
    assert negatives["rpn_box_regression"].item() == 0.0 and negatives["box_regression"].item() == 0.0
    assert negatives["classification"].item() > 0.0


def test_degenerate_ground_truth_raises_before_the_forward_pass() -> None:
    model = _small_model().train()
    calls = []
    model.backbone.register_forward_hook(lambda *args: calls.append(1))
    images, targets = _shapes(2)
    targets[0] = {
        **targets[0],
        "boxes": torch.tensor([[30.0, 10.0, 20.0, 30.0]]),
        "labels": torch.tensor([0]),
    }
    with pytest.raises(ValueError, match=r"targets\[0\] \(image_id 0\) box 0 \[30.0, 10.0, 20.0, 30.0\]"):
        model(images, targets)
    assert calls == []


@pytest.mark.parametrize("roi_op", ["align", "pool"])
def test_evaluation_contract_and_metrics_take_the_outputs_unchanged(roi_op: str) -> None:
    model = _small_model(roi_op=roi_op, score_threshold=0.0, detections_per_image=9).eval()
    images = [torch.rand(3, 64, 48), torch.rand(3, 50, 70)]
    with torch.no_grad():
        detections = model(images)
    for detection, image in zip(detections, images, strict=True):
        count = detection["boxes"].shape[0]
        assert set(detection) == {"boxes", "scores", "labels"} and 0 < count <= 9
        assert detection["labels"].dtype == torch.int64 and bool((detection["labels"] < 3).all())
        assert bool((detection["scores"][:-1] >= detection["scores"][1:]).all())
        assert bool((detection["boxes"][:, 2] <= image.shape[2]).all()) and bool(
            (detection["boxes"] >= 0).all()
        )
    _, targets = _shapes(2)
    assert 0.0 <= evaluate_coco(detections, targets, num_classes=3).as_dict()["AP50"] <= 1.0


@pytest.mark.slow
def test_tiny_overfit_run_losses_decrease_and_the_images_reach_near_perfect_ap() -> None:
    model = _small_model()
    images, targets = _shapes(2)
    steps, history = steps_to_near_perfect(model, images, targets, num_classes=3)
    assert steps is not None, f"AP50 < 0.99 after {len(history)} steps"
    total = [sum(losses.values()) for losses in history]
    assert min(total[-5:]) < 0.5 * total[0]


def test_registry_builders_and_unknown_arguments() -> None:
    assert {"fasterrcnn_mobilenet_v2_fpn", "fasterrcnn_resnet50_fpn"} <= set(list_models("fasterrcnn*"))
    model = create_model("fasterrcnn_resnet50_fpn", num_classes=4, fpn_channels=32, representation_size=64)
    assert model.roi_heads.box_predictor.cls_score.out_features == 5
    assert model.neck.out_names == ["p2", "p3", "p4", "p5", "p6"]
    with pytest.raises(TypeError, match="bogus"):
        create_model("fasterrcnn_mobilenet_v2_fpn", bogus=True)
    with pytest.raises(ValueError, match="op must be"):
        create_model("fasterrcnn_mobilenet_v2_fpn", roi_op="warp")
