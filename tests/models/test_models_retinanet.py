"""RetinaNet: head layout, prior, losses against a literal reference, contracts, negatives, overfitting."""

from __future__ import annotations

import math

import pytest
import torch
from overfit import steps_to_near_perfect

from visionkit.data.shapes import ShapesConfig, ShapesDataset
from visionkit.errors import ConfigError
from visionkit.metrics.detection.coco import evaluate_coco
from visionkit.models import create_model, list_models
from visionkit.models.detectors import RetinaNet, retinanet_loss
from visionkit.models.heads import RetinaNetHead, flatten_level_outputs
from visionkit.ops.anchors import AnchorGenerator
from visionkit.ops.matcher import Matcher

SMALL = {"num_classes": 3, "width_multiplier": 0.35, "fpn_channels": 32, "head_convs": 1,
         "anchor_sizes": (16, 32, 64, 128, 256)}  # fmt: skip


def _small_model(**overrides) -> RetinaNet:
    torch.manual_seed(0)
    return create_model("retinanet_mobilenet_v2_fpn", **{**SMALL, **overrides})


def _shapes(count: int = 2, seed: int = 1, **config) -> tuple[list[torch.Tensor], list[dict]]:
    options = {"image_size": 64, "min_size": 14, "max_size": 30, "max_objects": 2, **config}
    dataset = ShapesDataset(count, seed=seed, config=ShapesConfig(**options))
    images, targets = zip(*[dataset[i] for i in range(count)], strict=True)
    return list(images), list(targets)


def test_flattening_follows_the_anchor_generator_order() -> None:
    # level output [B, A*V, H, W]: entry (h, w, a) lands at row (h * W + w) * A + a, the anchors' order
    batch, anchors, values, height, width = 1, 3, 2, 2, 4
    output = torch.arange(batch * anchors * values * height * width, dtype=torch.float32)
    output = output.view(batch, anchors * values, height, width)
    flat = flatten_level_outputs([output], values)
    for h in range(height):
        for w in range(width):
            for a in range(anchors):
                for v in range(values):
                    assert flat[0, (h * width + w) * anchors + a, v] == output[0, a * values + v, h, w]
    generator = AnchorGenerator(((8, 16, 32),), ((1.0,),))
    grid = generator(torch.zeros(1, 3, 16, 32), [torch.zeros(1, 1, height, width)])[0]
    centres = (grid[:, :2] + grid[:, 2:]) / 2
    assert torch.equal(centres[(1 * width + 2) * anchors + 1], torch.tensor([16.0, 8.0]))  # cell (h=1, w=2)


def test_class_bias_starts_at_the_prior_probability() -> None:
    head = RetinaNetHead(8, num_anchors=9, num_classes=4, channels=8, num_convs=2, prior_probability=0.01)
    assert torch.allclose(torch.sigmoid(head.classification.output.bias), torch.full((36,), 0.01))
    with torch.no_grad():
        logits, deltas = head([torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2)])
    assert logits.shape == (2, (16 + 4) * 9, 4) and deltas.shape == (2, (16 + 4) * 9, 4)
    assert (
        abs(float(torch.sigmoid(logits).mean()) - 0.01) < 0.003
    )  # small weights: probability ≈ π everywhere


def _reference_loss(logits, deltas, anchors, target, alpha=0.25, gamma=2.0):
    """Literal per-anchor loops: IoU, 0.5/0.4 matching with low-quality matches, focal loss, L1."""
    boxes, labels = target["boxes"].double(), target["labels"]

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union

    table = [[iou(g.tolist(), a.tolist()) for a in anchors.double()] for g in boxes]
    matches = []
    for n in range(len(anchors)):
        column = [table[m][n] for m in range(len(boxes))]
        best = max(range(len(boxes)), key=lambda m: (column[m], -m)) if column else -1
        quality = column[best] if column else 0.0
        matches.append(best if quality >= 0.5 else (-2 if quality >= 0.4 else -1))
    for m in range(len(boxes)):
        top = max(table[m])
        for n in range(len(anchors)):
            if top > 0 and table[m][n] == top:
                column = [table[k][n] for k in range(len(boxes))]
                matches[n] = max(range(len(boxes)), key=lambda k: (column[k], -k))
    focal = regression = 0.0
    foreground = sum(1 for m in matches if m >= 0)
    for n, match in enumerate(matches):
        if match == -2:
            continue
        for k in range(logits.shape[1]):
            p = 1 / (1 + math.exp(-float(logits[n, k])))
            y = 1.0 if match >= 0 and int(labels[match]) == k else 0.0
            p_t = p if y else 1 - p
            alpha_t = alpha if y else 1 - alpha
            focal += -alpha_t * (1 - p_t) ** gamma * math.log(p_t)
        if match >= 0:
            a, g = anchors[n].double().tolist(), boxes[match].tolist()
            aw, ah, gw, gh = a[2] - a[0], a[3] - a[1], g[2] - g[0], g[3] - g[1]
            t = [((g[0] + g[2]) - (a[0] + a[2])) / 2 / aw, ((g[1] + g[3]) - (a[1] + a[3])) / 2 / ah,
                 math.log(gw / aw), math.log(gh / ah)]  # fmt: skip
            regression += sum(abs(float(deltas[n, i]) - t[i]) for i in range(4))
    return focal / max(1, foreground), regression / max(1, foreground)


def test_loss_equals_the_literal_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    anchor_generator = AnchorGenerator(((12, 24),), ((0.5, 1.0, 2.0),))
    anchors = anchor_generator(torch.zeros(2, 3, 48, 48), [torch.zeros(2, 1, 6, 6)])
    num_anchors = anchors[0].shape[0]
    logits = torch.randn(2, num_anchors, 3, generator=generator)
    deltas = torch.randn(2, num_anchors, 4, generator=generator) * 0.2
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 20.0, 18.0], [20.0, 20.0, 44.0, 40.0], [22.0, 18.0, 40.0, 44.0]]),
         "labels": torch.tensor([0, 2, 1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]  # fmt: skip
    losses = retinanet_loss(logits, deltas, anchors, targets, Matcher(0.5, 0.4, True))
    expected = [_reference_loss(logits[i], deltas[i], anchors[i], targets[i]) for i in range(2)]
    assert losses["classification"].item() == pytest.approx(sum(e[0] for e in expected) / 2, rel=1e-5)
    assert losses["box_regression"].item() == pytest.approx(sum(e[1] for e in expected) / 2, rel=1e-5)


def test_negative_images_give_exactly_zero_box_loss_and_still_backpropagate() -> None:
    model = _small_model().train()
    images, _ = _shapes(2)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model(images, [dict(empty), dict(empty)])
    assert losses["box_regression"].item() == 0.0
    assert torch.isfinite(losses["classification"]) and losses["classification"].item() > 0
    sum(losses.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_crowd_regions_are_left_out_of_training() -> None:
    model = _small_model().train()
    images, targets = _shapes(1)
    crowd_only = {**targets[0], "iscrowd": torch.ones_like(targets[0]["labels"])}
    torch.manual_seed(0)
    losses = model(images, [crowd_only])
    assert losses["box_regression"].item() == 0.0


def test_degenerate_ground_truth_raises_before_the_forward_pass() -> None:
    model = _small_model().train()
    calls = []
    model.backbone.register_forward_hook(lambda *args: calls.append(1))
    images, targets = _shapes(2)
    targets[1] = {
        **targets[1],
        "boxes": torch.tensor([[10.0, 10.0, 10.0, 30.0]]),
        "labels": torch.tensor([1]),
    }
    with pytest.raises(ValueError, match=r"targets\[1\] \(image_id 1\) box 0 \[10.0, 10.0, 10.0, 30.0\]"):
        model(images, targets)
    targets[1] = {**targets[1], "boxes": torch.tensor([[1.0, float("nan"), 5.0, 9.0]])}
    with pytest.raises(ValueError, match="non-finite"):
        model(images, targets)
    targets[1] = {**targets[1], "boxes": torch.tensor([[1.0, 2.0, 5.0, 9.0]]), "labels": torch.tensor([3])}
    with pytest.raises(ValueError, match=r"labels'\] must lie in \[0, 3\)"):
        model(images, targets)
    assert calls == []
    with pytest.raises(TypeError, match=r"images\[0\] must be a float tensor"):
        model.eval()([(images[0] * 255).to(torch.uint8)])


def test_evaluation_contract_and_metrics_take_the_outputs_unchanged() -> None:
    model = _small_model(score_threshold=0.0, detections_per_image=7).eval()
    images = [torch.rand(3, 64, 48), torch.rand(3, 50, 70)]
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for detection, image in zip(detections, images, strict=True):
        assert set(detection) == {"boxes", "scores", "labels"}
        count = detection["boxes"].shape[0]
        assert 0 < count <= 7 and detection["boxes"].dtype == torch.float32
        assert detection["scores"].shape == (count,) and detection["labels"].dtype == torch.int64
        assert bool((detection["scores"][:-1] >= detection["scores"][1:]).all())
        assert bool((detection["boxes"][:, 2] <= image.shape[2]).all())
        assert bool((detection["boxes"][:, 3] <= image.shape[1]).all())
        assert bool((detection["boxes"] >= 0).all())
    _, targets = _shapes(2)
    result = evaluate_coco(detections, targets, num_classes=3)
    assert 0.0 <= result.as_dict()["AP"] <= 1.0


@pytest.mark.slow
def test_tiny_overfit_run_losses_decrease_and_the_images_reach_near_perfect_ap() -> None:
    model = _small_model()
    images, targets = _shapes(2)
    steps, history = steps_to_near_perfect(model, images, targets, num_classes=3)
    assert steps is not None, f"AP50 < 0.99 after {len(history)} steps"
    assert history[-1]["classification"] < 0.25 * history[0]["classification"]
    assert history[-1]["box_regression"] < 0.5 * history[0]["box_regression"]


def test_registry_builders_and_unknown_arguments() -> None:
    assert {"retinanet_mobilenet_v2_fpn", "retinanet_resnet50_fpn"} <= set(list_models("retinanet*"))
    model = create_model("retinanet_resnet50_fpn", num_classes=5, fpn_channels=32, head_convs=1)
    assert model.head.classification.num_classes == 5 and model.neck.out_names == [
        "p3",
        "p4",
        "p5",
        "p6",
        "p7",
    ]
    assert model.anchor_generator.num_anchors_per_location() == [9] * 5
    with pytest.raises(TypeError, match="not_an_option"):
        create_model("retinanet_mobilenet_v2_fpn", not_an_option=1)
    with pytest.raises(ValueError, match="nms_method"):
        create_model("retinanet_mobilenet_v2_fpn", nms_method="fast")


@pytest.mark.parametrize("method", ["hard", "soft_linear", "soft_gaussian"])
def test_post_processing_suppresses_or_decays_overlapping_same_class_boxes(method: str) -> None:
    from visionkit.models.detectors.postprocess import PostProcess, postprocess_detections

    boxes = torch.tensor(
        [[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [1.0, 0.0, 11.0, 10.0], [40, 40, 50, 50]]
    )
    scores, labels = torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 0, 1, 0])
    settings = PostProcess(nms_method=method, nms_threshold=0.5, soft_nms_sigma=0.5, score_threshold=0.05,
                           detections_per_image=10)  # fmt: skip
    result = postprocess_detections(boxes, scores, labels, (64, 64), settings)
    iou = 90.0 / 110.0
    if method == "hard":  # box 1 is suppressed by box 0 (same class, IoU 0.82 > 0.5); box 2 is another class
        assert result["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])
        assert result["labels"].tolist() == [0, 1, 0]
    else:  # Soft-NMS keeps box 1 with a decayed score
        decayed = 0.8 * (1 - iou) if method == "soft_linear" else 0.8 * math.exp(-(iou**2) / 0.5)
        assert sorted(result["scores"].tolist(), reverse=True) == pytest.approx(
            sorted([0.9, 0.7, 0.6, decayed], reverse=True)
        )
    assert bool((result["scores"][:-1] >= result["scores"][1:]).all())


# ------------------------------------------------------------------ fpn=False: the single-level baseline (§9)
def _anchor_shapes(model: RetinaNet, image: torch.Tensor) -> set[tuple[float, float]]:
    """The distinct (width, height) of every anchor the model lays on ``image``'s padded batch."""
    batch, _ = model.preprocess([image])
    anchors = model.anchor_generator(batch, model.levels(batch))[0]
    return {(round(float(w), 3), round(float(h), 3)) for w, h in anchors[:, 2:] - anchors[:, :2]}


def test_single_level_has_every_pyramid_anchor_on_c5_and_the_same_head() -> None:
    pyramid, single = _small_model().eval(), _small_model(fpn=False).eval()
    assert pyramid.feature_names == ["p3", "p4", "p5", "p6", "p7"]
    assert single.feature_names == ["p5"] and single.neck.strides == {"p5": 32}
    # independently of the builder: 5 sizes × 2^(i/3), i = 0..2, × 3 ratios on the one level
    sizes = sorted(s * 2 ** (i / 3) for s in SMALL["anchor_sizes"] for i in range(3))
    assert sorted(single.anchor_generator.sizes[0]) == pytest.approx(sizes)
    assert single.anchor_generator.num_anchors_per_location() == [len(sizes) * 3]
    image = torch.rand(3, 64, 64)
    assert _anchor_shapes(single, image) == _anchor_shapes(pyramid, image)
    # the same head but for its two output convolutions (45 anchors instead of 9 per location)
    differ = {
        name
        for name, p in single.head.state_dict().items()
        if p.shape != pyramid.head.state_dict()[name].shape
    }
    assert differ == {
        "classification.output.weight", "classification.output.bias", "regression.output.weight",
        "regression.output.bias",
    }  # fmt: skip
    assert single.head.classification.output.out_channels == 45 * SMALL["num_classes"]


def test_single_level_neck_is_the_projection_and_smoothing_of_c5_only() -> None:
    single = _small_model(fpn=False).eval()
    batch, _ = single.preprocess([torch.rand(3, 64, 96)])
    with torch.no_grad():
        c5 = single.backbone(batch)["c5"]
        expected = single.neck.output_convs[0](single.neck.lateral_convs[0](c5))
        assert torch.equal(single.extract_features(batch)["p5"], expected)
    assert len(single.neck.lateral_convs) == 1 and not hasattr(single.neck, "p6")


def test_fpn_option_values_are_checked_by_name() -> None:
    with pytest.raises(ConfigError, match=r"^fpn='no': expected true"):
        _small_model(fpn="no")
    with pytest.raises(ConfigError, match=r"^anchor_sizes=\(\)"):
        _small_model(fpn=False, anchor_sizes=())
    assert _small_model(fpn=False, anchor_sizes=(16, 32)).anchor_generator.num_anchors_per_location() == [18]
