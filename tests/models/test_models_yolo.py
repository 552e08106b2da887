"""YOLOv3 / YOLOv2: the one-anchor assignment and the ignore rule against literal loops (ties, collisions,
empty images), the losses against a literal reference, decode ∘ encode = identity, darknet's reorg order,
output shapes at 320 / 416 / 608, registration, bad input, and tiny overfit runs."""

from __future__ import annotations

import math

import pytest
import torch
from overfit import steps_to_near_perfect
from test_models_detectors import detector_names

from tolerances import eps, sum_difference_bound
from visionkit.data.shapes import ShapesConfig, ShapesDataset
from visionkit.errors import CheckpointError, ConfigError, InputShapeError
from visionkit.models import create_model
from visionkit.models.detectors.yolo import (
    assign_targets,
    decode_predictions,
    flatten_levels,
    grid_priors,
    ignore_mask,
    reorg,
    yolov2_loss,
    yolov3_loss,
)

F64 = torch.float64
ANCHORS = [
    (6.0, 8.0),
    (12.0, 12.0),
    (8.0, 16.0),
    (20.0, 14.0),
    (12.0, 12.0),
    (24.0, 30.0),
    (40.0, 30.0),
    (30.0, 40.0),
    (60.0, 60.0),
]  # fmt: skip  (anchor 4 duplicates anchor 1: a tie)
LEVELS = [0, 0, 0, 1, 1, 1, 2, 2, 2]
SIZES, STRIDES = [(4, 4), (2, 2), (1, 1)], [8, 16, 32]


def _priors():
    return grid_priors(SIZES, STRIDES, torch.tensor(ANCHORS, dtype=F64), LEVELS)


def slow_assign(boxes, anchors=ANCHORS, levels=LEVELS, sizes=SIZES, strides=STRIDES, iou_threshold=1.0):
    """Literal darknet loop: best shape IoU over all anchors (strict > keeps the first on ties), the
    centre's cell (clamped into the grid), later ground truths overwrite a shared slot; with
    ``iou_threshold`` < 1 (darknet's later ``iou_thresh``) then every other anchor of IoU > threshold."""
    offsets, start = [], 0
    for level, (h, w) in enumerate(sizes):
        offsets.append(start)
        start += h * w * levels.count(level)
    slots = {}
    for m, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        w, h = x2 - x1, y2 - y1
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        best, best_iou, ious = -1, -1.0, []
        for t, (aw, ah) in enumerate(anchors):
            inter = min(w, aw) * min(h, ah)
            iou = inter / (w * h + aw * ah - inter)
            ious.append(iou)
            if iou > best_iou:
                best, best_iou = t, iou
        chosen = [best] + [t for t in range(len(anchors)) if t != best and ious[t] > iou_threshold]
        for anchor in chosen:
            level = levels[anchor]
            stride, (rows, cols) = strides[level], sizes[level]
            i = min(max(math.floor(cx / stride), 0), cols - 1)
            j = min(max(math.floor(cy / stride), 0), rows - 1)
            local = [t for t in range(len(anchors)) if levels[t] == level].index(anchor)
            index = offsets[level] + (j * cols + i) * levels.count(level) + local
            aw, ah = anchors[anchor]
            slots[index] = (m, [cx / stride - i, cy / stride - j, math.log(w / aw), math.log(h / ah)])
    return slots


def _random_boxes(generator, count, size=32.0):
    centres = torch.rand(count, 2, generator=generator, dtype=F64) * size
    wh = torch.rand(count, 2, generator=generator, dtype=F64) * 50 + 2
    return torch.cat([centres - wh / 2, centres + wh / 2], dim=1)


def _check_assignment(boxes, iou_threshold=1.0):
    assigned = assign_targets(boxes, _priors(), torch.tensor(ANCHORS, dtype=F64), LEVELS, iou_threshold)
    expected = slow_assign(boxes, iou_threshold=iou_threshold)
    got = {int(i): (int(g), o) for i, g, o in zip(assigned.index, assigned.gt, assigned.offsets, strict=True)}
    assert sorted(got) == sorted(expected)
    for index, (gt, offsets) in expected.items():
        assert got[index][0] == gt, index
        # x, y: the same float64 operations in the same order (exact); w, h: one log each side (libm /
        # SLEEF / VML within 1 ulp of the exact value, so within 2 ulp = 2ε·|value| of each other)
        assert got[index][1][:2].tolist() == offsets[:2]
        for k in (2, 3):
            assert abs(float(got[index][1][k]) - offsets[k]) <= 2 * eps(F64) * max(abs(offsets[k]), 1e-300)


def test_assignment_matches_the_literal_loop_on_random_boxes() -> None:
    generator = torch.Generator().manual_seed(0)
    for count in (1, 3, 8, 20):  # 20 boxes on 21 cells: collisions happen
        _check_assignment(_random_boxes(generator, count))


@pytest.mark.parametrize("iou_threshold", [0.0, 0.213, 0.5, 0.75])
def test_several_anchors_per_ground_truth_match_the_literal_loop(iou_threshold: float) -> None:
    generator = torch.Generator().manual_seed(1)
    for count in (1, 3, 8, 20):
        _check_assignment(_random_boxes(generator, count), iou_threshold)
    # 8×8 against 6×8 (IoU exactly 0.75, not above) and 12×12 (64/144): at 0.75 only the best anchor
    boxes = torch.tensor([[0.0, 0.0, 8.0, 8.0]], dtype=F64)
    _check_assignment(boxes, iou_threshold)
    one = assign_targets(boxes, _priors(), torch.tensor(ANCHORS, dtype=F64), LEVELS, 0.75)
    assert one.index.numel() == 1
    all_anchors = assign_targets(boxes, _priors(), torch.tensor(ANCHORS, dtype=F64), LEVELS, 0.0)
    assert all_anchors.index.numel() == len(ANCHORS) and set(all_anchors.gt.tolist()) == {0}


def test_assignment_ties_collisions_borders_and_empty_images() -> None:
    boxes = torch.tensor(
        [
            [2.0, 2.0, 14.0, 14.0],  # exactly anchors 1 and 4 (a tie): the lower index, level 0
            [0.0, 0.0, 8.0, 8.0],  # 8×8: IoU with 6×8 (0.75) vs 8×16 (0.5): anchor 0
            [20.0, 4.0, 36.0, 12.0],  # centre x = 28: stride-8 cell 3
            [24.0, 24.0, 40.0, 40.0],  # centre exactly at the image edge (32): clamped into the last cell
            [3.0, 3.0, 13.0, 13.0],  # same cell and anchor as box 0: the later box wins the slot
        ],
        dtype=F64,
    )
    _check_assignment(boxes)
    assigned = assign_targets(boxes, _priors(), torch.tensor(ANCHORS, dtype=F64), LEVELS)
    assert 0 not in assigned.gt.tolist() and 4 in assigned.gt.tolist()
    empty = assign_targets(torch.zeros(0, 4, dtype=F64), _priors(), torch.tensor(ANCHORS, dtype=F64), LEVELS)
    assert empty.index.numel() == 0 and empty.offsets.shape == (0, 4)


def test_decoding_the_assigned_targets_gives_the_boxes_back() -> None:
    # encode (assignment: σ(t)* offsets, log-space sizes) then decode with t = logit(σ(t)*)
    generator = torch.Generator().manual_seed(1)
    boxes = _random_boxes(generator, 6, size=30.0)
    priors = _priors()
    assigned = assign_targets(boxes, priors, torch.tensor(ANCHORS, dtype=F64), LEVELS)
    raw = torch.zeros(priors.cells.shape[0], 4, dtype=F64)
    xy = assigned.offsets[:, :2].clamp(1e-9, 1 - 1e-9)
    raw[assigned.index] = torch.cat([torch.log(xy / (1 - xy)), assigned.offsets[:, 2:]], dim=1)
    decoded = decode_predictions(raw, priors)[assigned.index]
    # per coordinate: log, logit (log + division), sigmoid (exp + division), exp, ≤ 8 rounded operations:
    # relative error ≤ 32ε of values whose magnitude is at most max|box|
    bound = 32 * eps(F64) * float(boxes.abs().max())
    torch.testing.assert_close(decoded, boxes[assigned.gt], rtol=0, atol=bound)


def _slow_iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_ignore_rule_matches_the_literal_loop() -> None:
    generator = torch.Generator().manual_seed(2)
    predicted = _random_boxes(generator, 200)
    boxes = _random_boxes(generator, 4)
    got = ignore_mask(predicted, boxes, 0.5)
    for n, box in enumerate(predicted.tolist()):
        best = max(_slow_iou(box, g) for g in boxes.tolist())
        if abs(best - 0.5) > 1e-12:  # both IoUs are within a few ulp of the exact one
            assert bool(got[n]) == (best > 0.5), n
    assert not ignore_mask(predicted, torch.zeros(0, 4, dtype=F64), 0.5).any()


def _bce(x, t):
    return max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _slow_decode(raw, priors, n):
    s = float(priors.strides[n])
    cx = (_sigmoid(raw[0]) + float(priors.cells[n, 0])) * s
    cy = (_sigmoid(raw[1]) + float(priors.cells[n, 1])) * s
    w, h = float(priors.anchors[n, 0]) * math.exp(raw[2]), float(priors.anchors[n, 1]) * math.exp(raw[3])
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _entropy(t):
    return -sum(v * math.log(v) for v in (t, 1 - t) if v > 0)


def _centre_terms(raw, goal, xy_loss):
    if xy_loss == "bce":  # darknet's gradient σ(t) − σ(t)*: cross-entropy of the logit, zero at the target
        return sum(_bce(raw[k], goal[k]) - _entropy(goal[k]) for k in (0, 1))
    return 0.5 * sum((_sigmoid(raw[k]) - goal[k]) ** 2 for k in (0, 1))


def _class_terms(logits, label, activation):
    if activation == "softmax":
        top = max(logits)
        return -(logits[label] - top - math.log(sum(math.exp(v - top) for v in logits)))
    return sum(_bce(v, float(k == label)) for k, v in enumerate(logits))


def _slow_giou_loss(a, b):
    """1 − GIoU from its definition: IoU − (C − U)/C, C the smallest enclosing box."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    enclosing = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return 1 - (w * h / union - (enclosing - union) / enclosing)


def slow_yolov3_loss(
    outputs, targets, hw, threshold, xy_loss="sse", activation="sigmoid", assign=1.0, box_loss="sse"
):
    """Literal loops over images and predictions: (box, objectness, classes), Σ|terms|, ignored count."""
    priors, totals, magnitude, ignored_count = _priors(), [0.0, 0.0, 0.0], 0.0, 0
    for raw_image, target in zip(outputs.tolist(), targets, strict=True):
        boxes, labels = target["boxes"].tolist(), target["labels"].tolist()
        slots = slow_assign(target["boxes"], iou_threshold=assign)
        for n, raw in enumerate(raw_image):
            decoded = _slow_decode(raw, priors, n)
            ignored = any(_slow_iou(decoded, g) > threshold for g in boxes)
            if n in slots:
                m, goal = slots[n]
                w, h = boxes[m][2] - boxes[m][0], boxes[m][3] - boxes[m][1]
                size = 0.5 * ((raw[2] - goal[2]) ** 2 + (raw[3] - goal[3]) ** 2)
                sse = (2 - w * h / (hw[0] * hw[1])) * (_centre_terms(raw, goal, xy_loss) + size)
                terms = [
                    sse if box_loss == "sse" else _slow_giou_loss(decoded, boxes[m]),
                    _bce(raw[4], 1.0),
                    _class_terms(raw[5:], labels[m], activation),
                ]
            else:
                terms = [0.0, 0.0 if ignored else _bce(raw[4], 0.0), 0.0]
                ignored_count += ignored
            for k in range(3):
                totals[k] += terms[k]
            magnitude += sum(abs(t) for t in terms)
            if n in slots and box_loss != "sse":  # 1 − GIoU: ≤ 30 rounded operations on values ≤ 2 (IoU,
                magnitude += 2.0  # ratios, the 1 − …), so its error is ≤ 32ε·2 whatever its own size
            if (
                n in slots and xy_loss == "bce"
            ):  # the rounding errors scale with BCE and entropy, not their gap
                magnitude += sum(_bce(raw[k], slots[n][1][k]) + _entropy(slots[n][1][k]) for k in (0, 1))
    return [t / len(targets) for t in totals], magnitude / len(targets), ignored_count


@pytest.mark.parametrize(
    ("xy_loss", "activation", "assign", "box_loss"),
    [
        ("sse", "sigmoid", 1.0, "sse"),
        ("bce", "sigmoid", 1.0, "sse"),
        ("sse", "softmax", 1.0, "sse"),
        ("sse", "sigmoid", 0.213, "sse"),
        ("sse", "sigmoid", 0.213, "giou"),
    ],
)
def test_yolov3_loss_equals_the_literal_reference(
    xy_loss: str, activation: str, assign: float, box_loss: str
) -> None:
    generator = torch.Generator().manual_seed(3)
    priors = _priors()
    outputs = torch.randn(2, priors.cells.shape[0], 5 + 3, generator=generator, dtype=F64)
    boxes = _random_boxes(generator, 5)
    targets = [
        {"boxes": boxes, "labels": torch.tensor([0, 1, 2, 1, 0])},
        {"boxes": torch.zeros(0, 4, dtype=F64), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    anchors = torch.tensor(ANCHORS, dtype=F64)
    got = yolov3_loss(
        outputs, priors, anchors, LEVELS, targets, (32, 32), 0.3, xy_loss, activation, assign, box_loss
    )
    expected, magnitude, ignored = slow_yolov3_loss(
        outputs, targets, (32, 32), 0.3, xy_loss, activation, assign, box_loss
    )
    assert ignored > 0  # the ignore rule takes part
    # both sides: per term ≤ 8 libm calls (2ε apart each) and ≤ 16 rounded operations, then sums of
    # ≤ 2·21·3·8 terms in different orders
    bound = 32 * eps(F64) * magnitude + sum_difference_bound(magnitude, 2 * 63 * 8, F64)
    for name, value in zip(("box", "objectness", "classification"), expected, strict=True):
        assert abs(float(got[name]) - value) <= bound, name
    assert float(got["objectness"]) > 0


def test_empty_images_give_only_objectness_negatives() -> None:
    model = create_model("yolov3_plain", num_classes=3, widths=(8, 8, 16, 16, 32), neck_widths=(8, 8, 8))
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model.train()([torch.rand(3, 64, 64), torch.rand(3, 40, 72)], [empty, dict(empty)])
    assert losses["box"].item() == 0.0 and losses["classification"].item() == 0.0
    assert math.isfinite(losses["objectness"].item()) and losses["objectness"].item() > 0
    v2 = create_model("yolov2_plain", num_classes=3, widths=(8, 8, 16, 16, 32), head_width=16)
    losses = v2.train()([torch.rand(3, 64, 64)], [empty])
    assert losses["box"].item() == losses["objectness"].item() == losses["classification"].item() == 0.0
    assert losses["noobjectness"].item() > 0


def test_yolov2_loss_uses_softmax_rescore_and_its_scales() -> None:
    anchors = torch.tensor([[8.0, 8.0], [20.0, 20.0]], dtype=F64)
    priors = grid_priors([(2, 2)], [16], anchors, [0, 0])
    outputs = torch.zeros(1, 8, 5 + 3, dtype=F64)
    target = {"boxes": torch.tensor([[4.0, 4.0, 12.0, 12.0]], dtype=F64), "labels": torch.tensor([2])}
    losses = yolov2_loss(
        outputs, priors, anchors, [target], (32, 32), scales={"object": 5.0, "noobject": 1.0}
    )
    # assigned: anchor 0 at cell (0, 0) → index 0; its decoded box (σ(0) = ½: centre 8, 8; 8×8) is the
    # box: IoU 1
    assert losses["objectness"].item() == pytest.approx(0.5 * 5 * (0.5 - 1.0) ** 2, abs=1e-15)
    assert losses["classification"].item() == pytest.approx(math.log(3), abs=1e-15)
    # the other 7 predictions: ½·σ(0)² each unless ignored (none overlaps the box by > 0.6)
    assert losses["noobjectness"].item() == pytest.approx(7 * 0.5 * 0.25, abs=1e-15)


def _literal_reorg(x, stride):
    """darknet's reorg_cpu(x, w, h, c, batch, stride, forward=0, out) as the reorg layer calls it."""
    batch, c, h, w = x.shape
    flat_in, out = x.flatten().tolist(), [0.0] * x.numel()
    out_c = c // (stride * stride)
    for b in range(batch):
        for k in range(c):
            for j in range(h):
                for i in range(w):
                    in_index = i + w * (j + h * (k + c * b))
                    c2, offset = k % out_c, k // out_c
                    w2, h2 = i * stride + offset % stride, j * stride + offset // stride
                    out_index = w2 + w * stride * (h2 + h * stride * (c2 + out_c * b))
                    out[in_index] = flat_in[out_index]
    return torch.tensor(out).view(batch, c * stride * stride, h // stride, w // stride)


def test_reorg_follows_darknet_and_space_to_depth_its_definition() -> None:
    x = torch.arange(2 * 8 * 4 * 6, dtype=torch.float32).view(2, 8, 4, 6)
    assert torch.equal(reorg(x, 2, "darknet"), _literal_reorg(x, 2))
    s2d = reorg(x, 2, "space_to_depth")
    for c in range(8):
        for dy in range(2):
            for dx in range(2):
                assert torch.equal(s2d[:, c * 4 + dy * 2 + dx], x[:, c, dy::2, dx::2])
    assert not torch.equal(s2d, reorg(x, 2, "darknet"))  # the two orders differ (weights depend on it)
    with pytest.raises(InputShapeError, match="divisible by 2"):
        reorg(torch.zeros(1, 8, 3, 4))
    with pytest.raises(ConfigError, match="reorg='shuffle'"):
        reorg(x, 2, "shuffle")


def test_output_layout_at_320_416_608() -> None:
    model = create_model("yolov3_plain", num_classes=2, widths=(4, 4, 8, 8, 8), neck_widths=(4, 4, 4)).eval()
    for size in (320, 416, 608):
        features = model.extract_features(torch.zeros(1, 3, size, size))
        outputs, _, per_level = model._outputs(features)
        grids = [size // 8, size // 16, size // 32]
        assert [features[n].shape[-1] for n in ("p3", "p4", "p5")] == grids
        assert per_level == [g * g * 3 for g in grids] and outputs.shape == (1, sum(per_level), 7)
    heavy = create_model("yolov3_darknet53", num_classes=80).eval()
    with torch.no_grad():
        levels = heavy.head(
            [heavy.extract_features(torch.zeros(1, 3, 320, 320))[n] for n in ("p3", "p4", "p5")]
        )
    assert [tuple(o.shape) for o in levels] == [(1, 255, 40, 40), (1, 255, 20, 20), (1, 255, 10, 10)]
    v2 = create_model("yolov2_darknet19", num_classes=20).eval()
    with torch.no_grad():
        (out,) = v2.head([v2.extract_features(torch.zeros(1, 3, 416, 416))["p5"]])
    assert tuple(out.shape) == (1, 125, 13, 13)  # 5 anchors × (5 + 20), 13 × 13 at 416


def test_flattening_order_matches_the_priors() -> None:
    output = torch.arange(2 * 3 * 6, dtype=torch.float32).view(1, 2 * 3, 2, 3)  # A=2, V=3, H=2, W=3
    flat = flatten_levels([output], [2])
    for y in range(2):
        for x in range(3):
            for a in range(2):
                assert torch.equal(flat[0, (y * 3 + x) * 2 + a], output[0, a * 3 : a * 3 + 3, y, x])
    priors = grid_priors([(2, 3)], [8], torch.tensor([[1.0, 1.0], [2.0, 2.0]]), [0, 0])
    assert priors.cells[(1 * 3 + 2) * 2 + 1].tolist() == [2.0, 1.0]
    assert priors.anchors[(1 * 3 + 2) * 2 + 1].tolist() == [2.0, 2.0]


def test_the_families_are_registered_and_picked_up_by_the_contract_test() -> None:
    names = set(detector_names())
    assert {
        "yolov3_darknet53",
        "yolov3_mobilenet_v2",
        "yolov3_plain",
        "yolov2_darknet19",
        "yolov2_plain",
    } <= names


def test_bad_options_are_named() -> None:
    with pytest.raises(ConfigError, match="same number of \\(width, height\\) pairs on each of the 3 scales"):
        create_model("yolov3_plain", num_classes=3, anchors=((10, 10), (20, 20)))
    with pytest.raises(ConfigError, match="positive finite"):
        create_model("yolov2_plain", num_classes=3, anchors=((10, 10), (20, -1), (3, 3), (4, 4), (5, 5)))
    with pytest.raises(ConfigError, match="fusion='add'"):
        create_model("yolov3_plain", num_classes=3, fusion="add")
    with pytest.raises(ConfigError, match=r"ignore_threshold=1\.5"):
        create_model("yolov3_plain", num_classes=3, ignore_threshold=1.5)
    with pytest.raises(ConfigError, match="class_activation='tanh'"):
        create_model("yolov3_plain", num_classes=3, class_activation="tanh")
    with pytest.raises(ConfigError, match="xy_loss='l2'"):
        create_model("yolov3_plain", num_classes=3, xy_loss="l2")
    with pytest.raises(ConfigError, match="neck_widths"):
        create_model("yolov3_plain", num_classes=3, neck_widths=(8, 8))
    with pytest.raises(ConfigError, match=r"assign_threshold=-0\.1"):
        create_model("yolov3_plain", num_classes=3, assign_threshold=-0.1)
    with pytest.raises(ConfigError, match=r"box_loss='l1': expected one of .* for YOLOv3"):
        create_model("yolov3_plain", num_classes=3, box_loss="l1")
    with pytest.raises(ConfigError, match=r"box_loss='sse': expected one of .* for RetinaNet"):
        create_model("retinanet_plain_fpn", num_classes=3, box_loss="sse")


def test_softmax_scores_sum_to_the_objectness() -> None:
    model = create_model("yolov3_plain", num_classes=3, class_activation="softmax")
    outputs = torch.randn(2, 5, 8, dtype=F64)
    # Σ_k σ(t_o)·softmax_k = σ(t_o): a sum of 3 rounded products of values ≤ 1
    torch.testing.assert_close(
        model.scores(outputs).sum(-1), torch.sigmoid(outputs[..., 4]), rtol=0, atol=16 * eps(F64)
    )


def test_sum_fusion_and_space_to_depth_build_and_train() -> None:
    for name, option in (("yolov3_plain", {"fusion": "sum"}), ("yolov2_plain", {"reorg": "space_to_depth"})):
        model = create_model(name, num_classes=2, widths=(8, 8, 16, 16, 32), **option).train()
        target = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])}
        losses = model([torch.rand(3, 64, 64)], [target])
        sum(losses.values()).backward()
        assert all(p.grad is not None for p in model.parameters())


def _shapes(count: int = 2, seed: int = 1):
    config = ShapesConfig(image_size=64, min_size=14, max_size=30, max_objects=2)
    dataset = ShapesDataset(count, seed=seed, config=config)
    images, targets = zip(*[dataset[i] for i in range(count)], strict=True)
    return list(images), list(targets)


@pytest.mark.parametrize("name", ["yolov3_plain", "yolov2_plain"])
def test_tiny_overfit_reaches_near_perfect_ap(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3)
    images, targets = _shapes()
    steps, history = steps_to_near_perfect(model, images, targets, 3, max_steps=400, lr=2e-3)
    assert steps is not None, history[-1]


def test_docstring_examples_run() -> None:
    import doctest

    from visionkit.models.backbones import darknet
    from visionkit.models.detectors.yolo import builders, common, darknet_weights, neck, yolov2, yolov3

    for module in (common, neck, yolov3, yolov2, builders, darknet, darknet_weights):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_darknet19_follows_table_6_of_the_paper() -> None:
    # YOLO9000 Table 6, written out: (filters, size) per convolution; BN (γ, β) after each, no conv bias;
    # the classifier a 1×1 conv to 1000 with bias
    table = [(32, 3), (64, 3), (128, 3), (64, 1), (128, 3), (256, 3), (128, 1), (256, 3), (512, 3), (256, 1),
             (512, 3), (256, 1), (512, 3), (1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)]  # fmt: skip
    expected, channels = 0, 3
    for filters, size in table:
        expected += size * size * channels * filters + 2 * filters
        channels = filters
    expected += 1024 * 1000 + 1000
    assert sum(p.numel() for p in create_model("darknet19").parameters()) == expected
    convs = [m for m in create_model("darknet19").modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19


# ------------------------------------------------------------------------------------ darknet .weights
def _tiny_v2():
    return create_model(
        "yolov2_plain", num_classes=1, widths=(1, 1, 1, 1, 2), head_width=2, passthrough_width=1
    )


def test_darknet_weights_round_trip(tmp_path) -> None:
    from visionkit.models.detectors.yolo.darknet_weights import load_darknet_weights, save_darknet_weights

    for name in ("yolov3_plain", "yolov2_plain"):
        torch.manual_seed(0)
        source = create_model(name, num_classes=2, widths=(4, 4, 8, 8, 8))
        for buffer in source.buffers():  # non-trivial running statistics
            if buffer.is_floating_point():
                buffer.uniform_(0.5, 2.0)
        save_darknet_weights(source, tmp_path / f"{name}.weights", seen=12345)
        torch.manual_seed(1)
        target = create_model(name, num_classes=2, widths=(4, 4, 8, 8, 8))
        header = load_darknet_weights(target, tmp_path / f"{name}.weights")
        assert header["seen"] == 12345
        for (key, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
            if "num_batches_tracked" not in key:
                assert torch.equal(a, b), key


def test_darknet_weights_layout_of_a_hand_built_file(tmp_path) -> None:
    import struct

    from visionkit.models.detectors.yolo.darknet_weights import darknet_layers, load_darknet_weights

    model = _tiny_v2()
    total = sum(
        (4 * conv.out_channels if norm is not None else conv.out_channels) + conv.weight.numel()
        for conv, norm in darknet_layers(model)
    )
    # a version-0.1 header: seen is an int32; then the values 0, 1, 2, ... in file order
    path = tmp_path / "hand.weights"
    path.write_bytes(struct.pack("<3ii", 0, 1, 0, 7) + struct.pack(f"<{total}f", *range(total)))
    assert load_darknet_weights(model, path) == {
        "major": 0,
        "minor": 1,
        "revision": 0,
        "seen": 7,
        "layers": 14,
    }
    stem, norm = model.backbone.stem[0], model.backbone.stem[1]  # 3 → 1 channels, 3×3, batch norm
    assert [norm.bias.item(), norm.weight.item(), norm.running_mean.item(), norm.running_var.item()] == [
        0,
        1,
        2,
        3,
    ]
    assert stem.weight.flatten().tolist() == [float(v) for v in range(4, 31)]  # [out, in, kh, kw] order
    output = model.head.blocks[0][0]  # the last layer: no batch norm, biases then kernels
    n = output.out_channels
    assert output.bias.tolist() == [
        float(v) for v in range(total - n - output.weight.numel(), total - output.weight.numel())
    ]
    assert output.weight.flatten()[-1].item() == total - 1
    # a file for another model is named: too short, and too long
    path.write_bytes(struct.pack("<3ii", 0, 1, 0, 7) + struct.pack(f"<{total - 1}f", *range(total - 1)))
    with pytest.raises(CheckpointError, match="truncated at layer 13 of 14"):
        load_darknet_weights(_tiny_v2(), path)
    path.write_bytes(struct.pack("<3ii", 0, 1, 0, 7) + struct.pack(f"<{total + 2}f", *range(total + 2)))
    with pytest.raises(CheckpointError, match="2 values left after"):
        load_darknet_weights(_tiny_v2(), path)
    with pytest.raises(CheckpointError, match="cannot open"):
        load_darknet_weights(_tiny_v2(), tmp_path / "missing.weights")


def test_darknet_cfg_layer_counts() -> None:
    from visionkit.models.detectors.yolo.darknet_weights import darknet_layers

    with torch.device("meta"):
        v3 = darknet_layers(create_model("yolov3_darknet53", num_classes=80))
        v2 = darknet_layers(create_model("yolov2_darknet19", num_classes=20))
    # yolov3.cfg: 75 [convolutional] layers, the 3 outputs without batch norm (255 = 3 × 85 filters)
    assert len(v3) == 75 and [i for i, (_, bn) in enumerate(v3) if bn is None] == [58, 66, 74]
    assert [v3[i][0].out_channels for i in (58, 66, 74)] == [255] * 3
    assert [v3[i][0].kernel_size for i in (52, 59, 60)] == [(1, 1), (1, 1), (1, 1)]  # set start, lateral, set
    # yolo-voc.cfg: 23 layers; layer 20 is the passthrough 1×1/64 on the 512-channel map
    assert len(v2) == 23 and v2[20][0].in_channels == 512 and v2[20][0].out_channels == 64
    assert v2[21][0].in_channels == 1280 and v2[22][0].out_channels == 125


def test_objectness_prior_sets_only_the_objectness_biases() -> None:
    model = create_model("yolov3_plain", num_classes=2, objectness_prior=0.01)
    for block in model.head.blocks:
        bias = block[-1].bias.view(3, 7)
        # the float32 bias b ≈ −4.6 is rounded (|Δb| ≤ 4.6u, changing σ by ≤ 4.6u relative), then exp (ε),
        # 1 + e (u) and 1 / (1 + e) (u): within 2.3ε + ε + ε < 8ε of 0.01
        expected = torch.full((3,), 0.01)
        torch.testing.assert_close(torch.sigmoid(bias[:, 4]), expected, rtol=8 * eps(torch.float32), atol=0)
        assert bias[:, 4].min() < -4 and bias[:, [0, 1, 2, 3, 5, 6]].abs().max() < 1
    with pytest.raises(ConfigError, match=r"objectness_prior=1\.0"):
        create_model("yolov2_plain", num_classes=2, objectness_prior=1.0)


@pytest.mark.parametrize("name", ["yolov3_plain", "yolov2_plain"])
def test_mixed_precision_training_step(name: str) -> None:
    # under autocast the head outputs bfloat16 while priors and targets are float32: the loss runs in float32
    model = create_model(name, num_classes=3, widths=(8, 8, 16, 16, 32)).train()
    images, targets = _shapes()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
    assert all(v.dtype == torch.float32 and bool(torch.isfinite(v)) for v in losses.values())
    sum(losses.values()).backward()


def test_five_anchors_per_scale() -> None:
    # the §18 "5 vs 3 anchors per scale" variant: 15 anchors, 5 per scale, sorted by area across scales
    anchors = [(4.0 * (k + 1), 3.0 * (k + 1)) for k in reversed(range(15))]
    model = create_model("yolov3_plain", num_classes=2, widths=(4, 4, 8, 8, 8), anchors=anchors)
    assert model.anchors_per_level == [5, 5, 5] and model.anchor_levels == [0] * 5 + [1] * 5 + [2] * 5
    assert model.anchors[:, 0].tolist() == [4.0 * (k + 1) for k in range(15)]
    assert [block[-1].out_channels for block in model.head.blocks] == [5 * 7] * 3
    target = {"boxes": torch.tensor([[4.0, 4.0, 60.0, 50.0]]), "labels": torch.tensor([1])}
    losses = model.train()([torch.rand(3, 64, 64)], [target])
    assert all(bool(torch.isfinite(v)) for v in losses.values())


@pytest.mark.parametrize(("xy_loss", "activation"), [("bce", "sigmoid"), ("sse", "softmax")])
def test_the_model_trains_with_its_own_loss_options(xy_loss: str, activation: str) -> None:
    """The model's training losses are ``yolov3_loss`` with the model's ``xy_loss`` and
    ``class_activation`` (a model built with options must not train with the paper's defaults)."""
    torch.manual_seed(0)
    model = create_model(
        "yolov3_plain",
        num_classes=3,
        widths=(8, 8, 16, 16, 32),
        neck_widths=(8, 8, 8),
        xy_loss=xy_loss,
        class_activation=activation,
    ).train()
    images, targets = _shapes()
    got = model(images, targets)
    batch, _ = model.preprocess(images, targets)
    outputs, priors, hw = model._loss_inputs(batch, model.extract_features(batch))
    args = (outputs, priors, model.anchors, model.anchor_levels, targets, hw, model.ignore_threshold)
    own = yolov3_loss(*args, xy_loss=xy_loss, class_activation=activation)
    paper = yolov3_loss(*args)
    for name in own:  # the same computation on the same tensors: equal to the bit
        assert torch.equal(got[name], own[name]), name
    changed = "box" if xy_loss == "bce" else "classification"
    assert not torch.equal(got[changed], paper[changed])


def test_one_scale_carries_every_anchor_on_stride_32() -> None:
    model = create_model("yolov3_plain", num_classes=3, scales=1, widths=(8, 8, 16, 16, 32)).train()
    assert model.anchors_per_level == [9] and model.feature_names == ["p5"]
    assert [s.stride for s in model.feature_shapes.values()] == [32]
    target = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])}
    losses = model([torch.rand(3, 64, 96)], [target])
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    detections = model.eval()([torch.rand(3, 64, 96)])
    assert detections[0]["boxes"].shape[1] == 4
    with pytest.raises(ConfigError, match="scales=2: expected 3"):
        create_model("yolov3_plain", num_classes=3, scales=2)


def test_darknet_width_multiplier_keeps_the_papers_depth() -> None:
    from visionkit.models.backbones.darknet import Darknet19, Darknet53

    full, small = Darknet53(), Darknet53(width_multiplier=0.125)
    convs = [sum(isinstance(m, torch.nn.Conv2d) for m in net.modules()) for net in (full, small)]
    assert convs == [52, 52]  # 52 convolutions + the classifier's fc = "53" at any width
    assert small.out_channels == {"c2": 16, "c3": 32, "c4": 64, "c5": 128}
    assert sum(isinstance(m, torch.nn.Conv2d) for m in Darknet19(width_multiplier=0.125).modules()) == 19
    model = create_model(
        "yolov3_darknet19", num_classes=3, width_multiplier=0.125, neck_widths=(16, 32, 64)
    ).train()
    target = {"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])}
    sum(model([torch.rand(3, 64, 64)], [target]).values()).backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="width_multiplier must be > 0"):
        Darknet53(width_multiplier=0.0)
