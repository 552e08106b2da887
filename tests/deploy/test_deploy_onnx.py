"""ONNX export and ONNX Runtime parity (visionkit.deploy.onnx).

The bound. Eager PyTorch and ONNX Runtime evaluate the same network; each is within the first-order
rounding bound of tests/models/network_error.py of the exact network (any summation order: MLAS's
blocked NCHWc / im2col-GEMM kernels like oneDNN's; fused epilogues such as Conv+Add+ReLU only drop
roundings). One thing ONNX Runtime changes: its graph optimizer folds Conv + BatchNormalization in float32,
so its folded parameters are within ``γ₃₂(8)`` of the exact fold (tests/deploy/fold_bounds.py). If it does
not fold, it evaluates the batch norm as the eager model does. So
``|ort − eager| <= B(unfused) + max(B(unfused), B(folded, γ₃₂(8) parameter errors))``.

Detections: the graphs end at the raw head outputs; decoding, top-k, RoI Align and NMS are the detector's
own code in both runtimes (module docstring of visionkit.deploy.onnx). Given raw outputs that differ by at
most δ (measured over all of them; at sampled positions they are checked against the derived bound), a
score ``σ(z)`` moves by at most ``δ/4`` plus two ulps (the sigmoid's slope is at most 1/4; one libm ``exp``
and a division), and a decoded coordinate ``c ± w/2`` with ``c = dx·w_a + c_a``, ``w = e^{dw}·w_a`` by at most
``w_a·δ + (w/2)·expm1(δ)`` plus ``γ₃₂(8)`` of the magnitudes it combines; clipping to the image is
1-Lipschitz. The tests use images without near-ties (random weights), and check that both runtimes keep
the same detections in the same order.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from fold_bounds import fold_errors, randomize_norms
from network_error import first_order_output_bound, without_inplace
from torch import nn

from running_error import assert_bounded
from tolerances import eps, gamma
from visionkit.deploy.fuse import fuse_model
from visionkit.deploy.onnx import export_module, export_onnx, load_onnx_runtime, onnx_parts
from visionkit.errors import ExportError, InputShapeError
from visionkit.models import create_model

F32_FOLD = gamma(8, torch.float32)


def _ort_bound(model: nn.Module, x: torch.Tensor, outputs: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager output and the bound of ``|ort − eager|`` at ``outputs`` (module docstring)."""
    model = without_inplace(copy.deepcopy(model).eval())
    exact = torch.zeros_like(x)  # the input is exact; given, it makes the ops on it (normalization) tracked
    expected, unfused = first_order_output_bound(
        copy.deepcopy(model), x, outputs, torch.float32, input_error=exact
    )
    fused = without_inplace(fuse_model(model, horizontal=False))
    _, folded = first_order_output_bound(
        copy.deepcopy(fused), x, outputs, torch.float32, fold_errors(model, fused, F32_FOLD), exact
    )
    return expected, unfused + torch.maximum(unfused, folded)


def test_classifier_parity_two_sizes_and_batches(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("resnet_digits", num_classes=10).eval()
    with torch.no_grad():
        randomize_norms(model, torch.Generator().manual_seed(1))
    paths = export_onnx(model, tmp_path, example_size=(28, 28))
    assert set(paths) == {"model"} and (tmp_path / "export.json").is_file()
    runtime = load_onnx_runtime(model, tmp_path)
    for shape in [(2, 1, 28, 28), (1, 1, 36, 44)]:  # the export size, then another size and batch
        x = torch.rand(*shape)
        outputs = [(s, k) for s in range(shape[0]) for k in range(10)]
        expected, bound = _ort_bound(model, x, outputs)
        got = runtime(x)
        assert got.shape == expected.shape
        pick = [(got[i], expected[i].detach()) for i in outputs]
        assert_bounded(torch.stack([a for a, _ in pick]), torch.stack([b for _, b in pick]), bound)


class _Raw(nn.Module):
    """A detector's raw dense outputs (trunk + head) as one flat tensor per image, for the bound."""

    def __init__(self, parts) -> None:
        super().__init__()
        self.trunk, self.head = parts["trunk"][0], parts["head"][0]
        self.head_names = [self.trunk.names.index(n) for n in parts["head_names"]]

    def forward(self, batch):
        levels = self.trunk(batch)
        return torch.cat([o.flatten(1) for o in self.head(*(levels[i] for i in self.head_names))], 1)


def _raw_parity(model, runtime, images, count: int = 12) -> float:
    """Raw outputs of eager and ORT at ``count`` positions within the derived bound; returns δ, the largest
    difference over all raw outputs."""
    batch, _ = model.preprocess(images)
    parts = onnx_parts(model, (64, 64))
    names = model.feature_names if hasattr(model, "feature_names") else model.rpn_feature_names
    raw = _Raw({**parts, "head_names": names}).eval()
    inner = runtime.model
    levels = inner.backbone(batch)
    head = inner.head if hasattr(inner, "head") else inner.rpn.head
    ort_out = head([levels[n] for n in names])
    flat = [t for group in ort_out for t in (group if isinstance(group, list) else [group])]
    got = torch.cat([o.flatten(1) for o in flat], 1)
    with torch.no_grad():
        expected_all = raw(batch)
    generator = torch.Generator().manual_seed(0)
    positions = [(s, int(torch.randint(got.shape[1], (1,), generator=generator))) for s in range(2)
                 for _ in range(count // 2)]  # fmt: skip
    expected, bound = _ort_bound(raw, batch, positions)
    pick = lambda t: torch.stack([t[i] for i in positions])  # noqa: E731
    assert_bounded(pick(got), pick(expected.detach()), bound)
    return float((got - expected_all).abs().max())


#: per family, how far a score can move when the raw outputs move by at most δ: RetinaNet σ(z): δ/4 plus
#: two ulps (one exp, one division); YOLOv3 σ(t_o)·σ(c): δ/4 + δ/4 + (δ/4)² (a product of two factors in
#: [0, 1], each off by ≤ δ/4) plus four ulps (two sigmoids and the product); YOLOv2 σ(t_o)·softmax(c):
#: softmax moves each component by ≤ δ/2 in the ∞-norm (its Jacobian diag(p) − ppᵀ has row sums
#: 2pᵢ(1 − pᵢ) ≤ 1/2), so δ/4 + δ/2 + δ²/8, plus ulps of the sigmoid, the K-term normalizing sum
#: (γ(K) ≤ K ulps, K = 3 here) and the product. Faster R-CNN's score comes from its box head, δ/4 as
#: RetinaNet's (the test measures δ on the RPN outputs).
SCORE_BOUNDS = {
    "retinanet": lambda d: d / 4 + 2 * eps(torch.float32),
    "fasterrcnn": lambda d: d / 4 + 2 * eps(torch.float32),
    "cascade": lambda d: d / 4 + 2 * eps(torch.float32),
    "yolov3": lambda d: d / 2 + d * d / 16 + 4 * eps(torch.float32),
    "yolov2": lambda d: 3 * d / 4 + d * d / 8 + 8 * eps(torch.float32),
}


def _assert_same_detections(eager, ort, delta: float, largest_anchor: float, score_bound: float) -> None:
    for e, o in zip(eager, ort, strict=True):
        assert torch.equal(e["labels"], o["labels"])
        assert_bounded(o["scores"], e["scores"], score_bound)
        widths = torch.cat([e["boxes"][:, 2:] - e["boxes"][:, :2]] * 2, 1).abs()
        box_bound = (
            largest_anchor * delta
            + widths / 2 * math.expm1(delta) * 1.01
            + gamma(8, torch.float32) * (e["boxes"].abs() + 2 * largest_anchor)
        )
        assert_bounded(o["boxes"], e["boxes"], box_bound)


@pytest.mark.parametrize(
    "name",
    ["retinanet_plain_fpn", "fasterrcnn_plain_fpn", "cascade_rcnn_plain_fpn", "yolov3_plain", "yolov2_plain"],
)
def test_detector_parity_second_size_and_no_detections(name: str, tmp_path) -> None:
    """RetinaNet (without GroupNorm in the head: torch's and ONNX Runtime's group statistics use
    different algorithms, not covered by this bound), Faster R-CNN, YOLOv3 and YOLOv2 (trunk and head
    graphs; grid priors, decoding and NMS stay in PyTorch). YOLO's box centre ``(σ(t_x) + c_x)·s`` moves by
    at most ``s·δ/4 ≤ 8δ``, inside the ``largest_anchor·δ`` term; its size ``p·e^{t_w}`` as the anchors'."""
    torch.manual_seed(0)
    kwargs = {"head_norm": None} if name.startswith("retinanet") else {}
    model = create_model(name, num_classes=3, score_threshold=0.001, detections_per_image=10, **kwargs).eval()
    with torch.no_grad():
        randomize_norms(model, torch.Generator().manual_seed(1))
        for module in getattr(model, "head", nn.Identity()).modules():  # spread the scores: no near-ties
            if isinstance(module, nn.Conv2d):
                module.weight.normal_(0, 0.05)
    paths = export_onnx(model, tmp_path, example_size=(64, 64))
    expected_parts = {"trunk", "head"} | ({"box_head"} if name.startswith("faster") else set())
    expected_parts |= {f"box_head_{k}" for k in (1, 2, 3)} if name.startswith("cascade") else set()
    assert set(paths) == expected_parts
    score_bound = SCORE_BOUNDS[name.split("_")[0]]
    runtime = load_onnx_runtime(model, tmp_path)
    largest_anchor = 256 * math.sqrt(2) * 2  # anchor sides: size·√ratio, ratios up to 2 (x2 for proposals)
    images = [torch.rand(3, 100, 80), torch.rand(3, 70, 150)]  # padded to 160×160, not the export size
    delta = _raw_parity(model, runtime, images)
    with torch.no_grad():
        eager, ort = model(images), runtime(images)
    assert sum(len(d["scores"]) for d in eager) > 0
    _assert_same_detections(eager, ort, delta, largest_anchor, score_bound(delta))
    # an image with no detections: a threshold above its best score (the best candidate always survives
    # NMS) by more than the scores can differ between the runtimes; alone, the image is padded less than
    # in the pair, so its scores are its own
    with torch.no_grad():
        top = float(model([images[0]])[0]["scores"].max())
    assert top + 1e-4 < 1 and score_bound(delta) < 1e-4
    model.postprocess = model.postprocess.replace(score_threshold=top + 1e-4)
    runtime.model.postprocess = model.postprocess
    with torch.no_grad():
        eager, ort = model([images[0]]), runtime([images[0]])
    assert eager[0]["boxes"].shape == ort[0]["boxes"].shape == (0, 4)


def test_unsupported_op_names_the_op_and_the_module(tmp_path) -> None:
    class Odd(nn.Module):
        def forward(self, x):
            return torch.kthvalue(x, 2, dim=-1).values

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.block = nn.Conv2d(3, 3, 1), nn.Sequential(nn.ReLU(), Odd())

        def forward(self, x):
            return self.block(self.conv(x))

    with pytest.raises(ExportError, match=r"aten\.kthvalue.*'block\.1'"):
        export_module(Net(), (torch.rand(2, 3, 8, 8),), None, tmp_path / "odd.onnx")
    assert not (tmp_path / "odd.onnx").exists()


def test_other_detector_families_are_refused(tmp_path) -> None:
    """Families are matched by their exact class: a subclass has its own heads and glue, which the graphs
    of its parent do not cover (as Cascade R-CNN is a FasterRCNN subclass); the error names the family."""
    from visionkit.models.detectors.retinanet import RetinaNet

    with torch.device("meta"):
        model = create_model("retinanet_plain_fpn")
    model.__class__ = type("MyRetinaNet", (RetinaNet,), {})
    with pytest.raises(
        ExportError, match=r"MyRetinaNet is not supported yet: its heads and glue .*RefineDet"
    ):
        export_onnx(model, tmp_path)
    assert not list(tmp_path.iterdir())


def test_refinedet_parity_second_size_and_no_detections(tmp_path) -> None:
    """RefineDet: trunk graph and one head graph (ARM, transfer connections, ODM: its four raw outputs);
    anchors, the ARM refinement, negative filtering, decoding and NMS stay in PyTorch.

    Bounds from δ, the largest raw-output difference. Scores ``softmax(odm)[1:]``: ``δ/2`` (the softmax's
    ∞-norm Lipschitz constant, see SCORE_BOUNDS) plus ``K + 3`` ulps; the filter (ARM background
    probability > 0.99) is checked to take the same anchors in both runtimes. Boxes, two chained decodings
    (weights 10, 10, 5, 5): refined centre ``c₁ = t·a/10 + c_a`` moves ≤ ``A·δ/10`` (``A`` the largest
    anchor side), its side ``w₁ = a·e^{t/5}`` ≤ ``W₁·expm1(δ/5)`` (``W₁`` the largest refined side); the
    final centre ``c₂ = t₂·w₁/10 + c₁`` ≤ ``T·Δw₁ + (W₁ + Δw₁)·δ/10 + Δc₁`` (``T`` = max ``|t₂|/10``), its
    side ``w₂ = w₁·e^{t₂/5}`` ≤ ``(W₁ + Δw₁)·E·expm1(δ/5) + E·Δw₁`` (``E`` = max ``e^{t₂/5}``), a corner
    ``c ± w/2``; plus each runtime's rounding of the chain, ``γ₃₂(16)`` of the magnitudes it combines
    (``(1 + T + E)·(|box| + A + W₁·(1 + E))``), twice."""
    from visionkit.models.detectors.refinedet import WEIGHTS, filtered, refine

    torch.manual_seed(0)
    model = create_model("refinedet_plain", num_classes=3, score_threshold=0.001, detections_per_image=10)
    model = model.eval()
    with torch.no_grad():
        for convs in (model.arm_objectness, model.arm_deltas, model.odm_logits, model.odm_deltas):
            for module in convs.modules():
                if isinstance(module, nn.Conv2d):
                    module.weight.normal_(0, 0.05)
    paths = export_onnx(model, tmp_path, example_size=(64, 64))
    assert set(paths) == {"trunk", "head"}
    runtime = load_onnx_runtime(model, tmp_path)
    images = [torch.rand(3, 100, 80), torch.rand(3, 70, 150)]
    with torch.no_grad():
        batch, _ = model.preprocess(images)
        raw = model.outputs(batch, model.extract_features(batch))
        got = runtime.model.outputs(batch, runtime.model.extract_features(batch))
        delta = max(float((a - b).abs().max()) for a, b in zip(raw[:4], got[:4], strict=True))
        eager, ort = model(images), runtime(images)
    assert sum(len(d["scores"]) for d in eager) > 0
    for image in range(2):
        assert torch.equal(filtered(raw[0][image], 0.99), filtered(got[0][image], 0.99))
    anchors = torch.cat(raw[4])
    largest = float((anchors[:, 2:] - anchors[:, :2]).max())
    refined = torch.cat([refine(d, a) for d, a in zip(raw[1], raw[4], strict=True)])
    w1 = float((refined[:, 2:] - refined[:, :2]).max())
    t2 = float(raw[3][..., :2].abs().max()) / WEIGHTS[0]
    e2 = math.exp(min(float(raw[3][..., 2:].max()) / WEIGHTS[2], math.log(1000 / 16)))
    dc1, dw1 = largest * delta / WEIGHTS[0], w1 * math.expm1(delta / WEIGHTS[2])
    dc2 = t2 * dw1 + (w1 + dw1) * delta / WEIGHTS[0] + dc1
    dw2 = (w1 + dw1) * e2 * math.expm1(delta / WEIGHTS[2]) + e2 * dw1
    score_bound = delta / 2 + (model.num_classes + 3) * eps(torch.float32)
    for e, o in zip(eager, ort, strict=True):
        assert torch.equal(e["labels"], o["labels"])
        assert_bounded(o["scores"], e["scores"], score_bound)
        rounding = 2 * gamma(16, torch.float32) * (1 + t2 + e2) * (e["boxes"].abs() + largest + w1 * (1 + e2))
        assert_bounded(o["boxes"], e["boxes"], dc2 + dw2 / 2 + rounding)
    with torch.no_grad():
        top = float(model([images[0]])[0]["scores"].max())
    assert top + 1e-4 < 1 and score_bound < 1e-4
    model.postprocess = model.postprocess.replace(score_threshold=top + 1e-4)
    runtime.model.postprocess = model.postprocess
    with torch.no_grad():
        eager, ort = model([images[0]]), runtime([images[0]])
    assert eager[0]["boxes"].shape == ort[0]["boxes"].shape == (0, 4)


def test_a_graph_fixed_to_the_example_size_is_caught_at_export(tmp_path) -> None:
    """export_onnx runs each detector graph at a second size: graphs exported with static shapes (what a
    specialized dynamic size amounts to) are refused with an error naming the graph."""
    from visionkit.deploy.onnx import _check_second_size, _head_names

    torch.manual_seed(0)
    model = create_model("yolov3_plain", num_classes=3).eval()
    parts = onnx_parts(model, (64, 64))
    paths = {name: export_module(m, inputs, None, tmp_path / f"{name}.onnx")
             for name, (m, inputs, _) in parts.items()}  # fmt: skip
    with pytest.raises(ExportError, match="the trunk graph does not run at a second input size"):
        _check_second_size(parts, paths, _head_names(model), model.size_divisible)


def test_load_errors(tmp_path) -> None:
    model = create_model("resnet_digits")
    with pytest.raises(ExportError, match=r"export\.json"):
        load_onnx_runtime(model, tmp_path)
    (tmp_path / "export.json").write_text('{"kind": "retinanet", "parts": {}}')
    with pytest.raises(ExportError, match="exported a retinanet, but the model is a classifier"):
        load_onnx_runtime(model, tmp_path)
    (tmp_path / "export.json").write_text('{"kind": "retinanet", "par')  # cut short
    with pytest.raises(ExportError, match=r"export\.json: not a readable export manifest \(Unterminated"):
        load_onnx_runtime(model, tmp_path)
    (tmp_path / "export.json").write_text("[1, 2]")
    with pytest.raises(ExportError, match=r"export\.json: not an export manifest \(no 'kind' and 'parts'\)"):
        load_onnx_runtime(model, tmp_path)


def test_iou_at_the_threshold_convention_matches_onnx_nonmaxsuppression(tmp_path) -> None:
    """The convention documented in visionkit.deploy.onnx: a pair exactly at the IoU threshold survives,
    in our NMS and in ONNX Runtime's NonMaxSuppression (IoU 100/200 = 0.5 exactly in float32), and a pair
    just above it is suppressed by both."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from visionkit.deploy.onnx import ort_session
    from visionkit.ops import batched_nms

    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou", "score"], ["keep"])
    graph = helper.make_graph(
        [node],
        "nms",
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, None, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, None]),
        ],
        [helper.make_tensor_value_info("keep", TensorProto.INT64, [None, 3])],
        [
            helper.make_tensor("max", TensorProto.INT64, [1], [10]),
            helper.make_tensor("iou", TensorProto.FLOAT, [1], [0.5]),
            helper.make_tensor("score", TensorProto.FLOAT, [1], [0.0]),
        ],
    )
    path = tmp_path / "nms.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    session = ort_session(path)
    for second, kept in (([0.0, 0.0, 20.0, 10.0], 2), ([0.0, 0.0, 19.0, 10.0], 1)):  # IoU 0.5, then 10/19
        boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], second])  # ONNX default: [y1, x1, y2, x2] corners
        scores = torch.tensor([0.9, 0.8])
        ours = batched_nms(boxes, scores, torch.zeros(2, dtype=torch.int64), 0.5)
        theirs = session.run(None, {"boxes": boxes[None].numpy(), "scores": scores[None, None].numpy()})[0]
        assert len(ours) == len(theirs) == kept
        assert np.array_equal(theirs[:, 2], ours.numpy())


@pytest.mark.parametrize("name", ["fcn8s_small", "fcn32s_small"])
def test_segmenter_parity_two_sizes(name: str, tmp_path) -> None:
    """FCN (images → per-pixel logits, one graph): ONNX Runtime within the derived bound of eager at
    sampled pixels, at the export size and at another batch and size (odd sides: the crops and skips line
    up per size); the normalization, skip scaling and additions are in the bound (network_error.py)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=4).eval()
    with torch.no_grad():
        randomize_norms(model, torch.Generator().manual_seed(1))
        for module in model.modules():  # score layers are zero-initialized: give them weights
            if isinstance(module, nn.Conv2d) and module.out_channels == 4:
                module.weight.normal_(0, 0.1)
                module.bias.normal_(0, 0.1)
    paths = export_onnx(model, tmp_path, example_size=(48, 64))
    assert set(paths) == {"model"}
    runtime = load_onnx_runtime(model, tmp_path)
    generator = torch.Generator().manual_seed(2)
    for shape in [(2, 3, 48, 64), (1, 3, 45, 71)]:
        x = torch.rand(*shape, generator=generator)
        got = runtime(x)
        assert got.shape == (shape[0], 4, *shape[2:])
        outputs = [tuple(int(torch.randint(n, (1,), generator=generator)) for n in got.shape)
                   for _ in range(6)]  # fmt: skip
        expected, bound = _ort_bound(model, x, outputs)
        assert_bounded(
            torch.stack([got[i] for i in outputs]), torch.stack([expected[i] for i in outputs]), bound
        )
    with pytest.raises(InputShapeError, match="FCN: expected an image batch"):
        runtime(torch.rand(3, 8, 8))
