"""Registered detector builders: the usual RetinaNet and Faster R-CNN, with swappable backbones.

Backbones start from random weights (no download here); ``fpn_channels``, ``head_convs`` and
``anchor_sizes`` let a small CPU run shrink the paper's defaults (256 channels, 4 head convs, anchors
32..512 on P3..P7 for RetinaNet, 32..512 on P2..P6 for Faster R-CNN).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from visionkit.models.backbones.base import Backbone
from visionkit.models.backbones.mobilenet import mobilenet_v2
from visionkit.models.backbones.resnet import resnet50
from visionkit.models.backbones.vgg import vgg16, vgg16_bn
from visionkit.models.detectors.faster_rcnn import FasterRCNN
from visionkit.models.detectors.retinanet import RetinaNet
from visionkit.models.detectors.roi_heads import MultiScaleRoIPooler, RoIHeads
from visionkit.models.detectors.rpn import RegionProposalNetwork
from visionkit.models.heads.box_head import FastRCNNPredictor, TwoMLPHead
from visionkit.models.heads.retinanet_head import RetinaNetHead
from visionkit.models.heads.rpn_head import RPNHead
from visionkit.models.necks.fpn import FeaturePyramidNetwork
from visionkit.models.registry import register_model
from visionkit.ops.anchors import fpn_anchor_generator

__all__ = [
    "build_faster_rcnn",
    "build_retinanet",
    "fasterrcnn_mobilenet_v2_fpn",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_vgg16_fpn",
    "retinanet_mobilenet_v2_fpn",
    "retinanet_resnet50_fpn",
    "retinanet_vgg16_fpn",
]


def build_retinanet(
    backbone: Backbone,
    *,
    num_classes: int,
    fpn_channels: int = 256,
    head_convs: int = 4,
    head_norm: str | None = None,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    **detector_options: Any,
) -> RetinaNet:
    """RetinaNet on any ``features_only`` backbone: FPN on ``c3..c5`` plus ``p6, p7`` from ``c5``,
    anchors ``anchor_sizes[l] · 2^(i/3)`` (i = 0, 1, 2) × ratios 0.5, 1, 2 on level ``l``."""
    in_channels = {name: backbone.out_channels[name] for name in ("c3", "c4", "c5")}
    neck = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks="p6p7", extra_source="c5")
    anchor_generator = fpn_anchor_generator(tuple(anchor_sizes), (0.5, 1.0, 2.0), scales_per_octave=3)
    if len(anchor_generator.sizes) != len(neck.out_names):
        raise ValueError(f"anchor_sizes needs one size per level {neck.out_names}, got {list(anchor_sizes)}")
    num_anchors = anchor_generator.num_anchors_per_location()[0]
    head = RetinaNetHead(fpn_channels, num_anchors, num_classes, channels=fpn_channels, num_convs=head_convs,
                         norm=head_norm)  # fmt: skip
    return RetinaNet(backbone, neck, head, anchor_generator, num_classes=num_classes, **detector_options)


@register_model("retinanet_mobilenet_v2_fpn")
def retinanet_mobilenet_v2_fpn(
    *,
    num_classes: int = 91,
    width_multiplier: float = 1.0,
    fpn_channels: int = 256,
    head_convs: int = 4,
    head_norm: str | None = None,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    score_threshold: float = 0.05,
    nms_method: str = "hard",
    nms_threshold: float = 0.5,
    detections_per_image: int = 100,
) -> RetinaNet:
    """RetinaNet with a MobileNetV2 backbone and FPN P3–P7."""
    return build_retinanet(
        mobilenet_v2(width_multiplier=width_multiplier, features_only=True), num_classes=num_classes,
        fpn_channels=fpn_channels, head_convs=head_convs, head_norm=head_norm, anchor_sizes=anchor_sizes,
        score_threshold=score_threshold, nms_method=nms_method, nms_threshold=nms_threshold,
        detections_per_image=detections_per_image,
    )  # fmt: skip


@register_model("retinanet_resnet50_fpn")
def retinanet_resnet50_fpn(
    *,
    num_classes: int = 91,
    fpn_channels: int = 256,
    head_convs: int = 4,
    head_norm: str | None = None,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    score_threshold: float = 0.05,
    nms_method: str = "hard",
    nms_threshold: float = 0.5,
    detections_per_image: int = 100,
) -> RetinaNet:
    """RetinaNet with a ResNet-50 backbone and FPN P3–P7 (the paper's configuration)."""
    return build_retinanet(
        resnet50(features_only=True), num_classes=num_classes, fpn_channels=fpn_channels,
        head_convs=head_convs, head_norm=head_norm, anchor_sizes=anchor_sizes,
        score_threshold=score_threshold,
        nms_method=nms_method, nms_threshold=nms_threshold, detections_per_image=detections_per_image,
    )  # fmt: skip


def build_faster_rcnn(
    backbone: Backbone,
    *,
    num_classes: int,
    fpn_channels: int = 256,
    representation_size: int = 1024,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    roi_op: str = "align",
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000),
    rpn_post_nms_top_n: tuple[int, int] = (2000, 1000),
    box_batch_size_per_image: int = 512,
    **roi_options: Any,
) -> FasterRCNN:
    """Faster R-CNN on any ``features_only`` backbone: FPN ``p2..p6`` (``p6`` by max-pool), RPN with one
    anchor size per level × ratios 0.5, 1, 2, RoI Align (``roi_op="align"``) or RoI Pool of ``p2..p5`` to
    7×7, two-FC head of ``representation_size``."""
    in_channels = {name: backbone.out_channels[name] for name in ("c2", "c3", "c4", "c5")}
    neck = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks="maxpool")
    anchor_generator = fpn_anchor_generator(tuple(anchor_sizes), (0.5, 1.0, 2.0))
    if len(anchor_generator.sizes) != len(neck.out_names):
        raise ValueError(f"anchor_sizes needs one size per level {neck.out_names}, got {list(anchor_sizes)}")
    rpn = RegionProposalNetwork(
        anchor_generator, RPNHead(fpn_channels, anchor_generator.num_anchors_per_location()[0]),
        pre_nms_top_n=rpn_pre_nms_top_n, post_nms_top_n=rpn_post_nms_top_n,
    )  # fmt: skip
    pooler = MultiScaleRoIPooler(("p2", "p3", "p4", "p5"), output_size=7, sampling_ratio=2, op=roi_op)
    roi_heads = RoIHeads(
        pooler, TwoMLPHead(fpn_channels * 7 * 7, representation_size),
        FastRCNNPredictor(representation_size, num_classes), num_classes=num_classes,
        batch_size_per_image=box_batch_size_per_image, **roi_options,
    )  # fmt: skip
    return FasterRCNN(backbone, neck, rpn, roi_heads, num_classes=num_classes)


@register_model("fasterrcnn_mobilenet_v2_fpn")
def fasterrcnn_mobilenet_v2_fpn(
    *,
    num_classes: int = 91,
    width_multiplier: float = 1.0,
    fpn_channels: int = 256,
    representation_size: int = 1024,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    roi_op: str = "align",
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000),
    rpn_post_nms_top_n: tuple[int, int] = (2000, 1000),
    box_batch_size_per_image: int = 512,
    score_threshold: float = 0.05,
    nms_method: str = "hard",
    nms_threshold: float = 0.5,
    detections_per_image: int = 100,
) -> FasterRCNN:
    """Faster R-CNN with a MobileNetV2 backbone and FPN."""
    return build_faster_rcnn(
        mobilenet_v2(width_multiplier=width_multiplier, features_only=True), num_classes=num_classes,
        fpn_channels=fpn_channels, representation_size=representation_size, anchor_sizes=anchor_sizes,
        roi_op=roi_op, rpn_pre_nms_top_n=rpn_pre_nms_top_n, rpn_post_nms_top_n=rpn_post_nms_top_n,
        box_batch_size_per_image=box_batch_size_per_image, score_threshold=score_threshold,
        nms_method=nms_method, nms_threshold=nms_threshold, detections_per_image=detections_per_image,
    )  # fmt: skip


@register_model("fasterrcnn_resnet50_fpn")
def fasterrcnn_resnet50_fpn(
    *,
    num_classes: int = 91,
    fpn_channels: int = 256,
    representation_size: int = 1024,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    roi_op: str = "align",
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000),
    rpn_post_nms_top_n: tuple[int, int] = (2000, 1000),
    box_batch_size_per_image: int = 512,
    score_threshold: float = 0.05,
    nms_method: str = "hard",
    nms_threshold: float = 0.5,
    detections_per_image: int = 100,
) -> FasterRCNN:
    """Faster R-CNN with a ResNet-50 backbone and FPN (the FPN paper's configuration)."""
    return build_faster_rcnn(
        resnet50(features_only=True), num_classes=num_classes, fpn_channels=fpn_channels,
        representation_size=representation_size, anchor_sizes=anchor_sizes, roi_op=roi_op,
        rpn_pre_nms_top_n=rpn_pre_nms_top_n, rpn_post_nms_top_n=rpn_post_nms_top_n,
        box_batch_size_per_image=box_batch_size_per_image, score_threshold=score_threshold,
        nms_method=nms_method, nms_threshold=nms_threshold, detections_per_image=detections_per_image,
    )  # fmt: skip


def _vgg16_features(batch_norm: bool) -> Backbone:
    return (vgg16_bn if batch_norm else vgg16)(features_only=True)


@register_model("retinanet_vgg16_fpn")
def retinanet_vgg16_fpn(
    *,
    num_classes: int = 91,
    batch_norm: bool = True,
    fpn_channels: int = 256,
    head_convs: int = 4,
    head_norm: str | None = None,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    score_threshold: float = 0.05,
    nms_method: str = "hard",
    nms_threshold: float = 0.5,
    detections_per_image: int = 100,
) -> RetinaNet:
    """RetinaNet with a VGG-16 backbone (``batch_norm=True``: VGG-16-BN) and FPN P3–P7 (§14's backbone)."""
    return build_retinanet(
        _vgg16_features(batch_norm), num_classes=num_classes, fpn_channels=fpn_channels,
        head_convs=head_convs, head_norm=head_norm, anchor_sizes=anchor_sizes,
        score_threshold=score_threshold,
        nms_method=nms_method, nms_threshold=nms_threshold, detections_per_image=detections_per_image,
    )  # fmt: skip


@register_model("fasterrcnn_vgg16_fpn")
def fasterrcnn_vgg16_fpn(
    *,
    num_classes: int = 91,
    batch_norm: bool = True,
    fpn_channels: int = 256,
    representation_size: int = 1024,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    roi_op: str = "align",
    score_threshold: float = 0.05,
    nms_method: str = "hard",
    nms_threshold: float = 0.5,
    detections_per_image: int = 100,
) -> FasterRCNN:
    """Faster R-CNN with a VGG-16 backbone (``batch_norm=True``: VGG-16-BN) and FPN, as in the original
    Faster R-CNN paper's VGG-16 setting plus FPN; ``roi_op="pool"`` gives its RoI Pooling."""
    return build_faster_rcnn(
        _vgg16_features(batch_norm), num_classes=num_classes, fpn_channels=fpn_channels,
        representation_size=representation_size, anchor_sizes=anchor_sizes, roi_op=roi_op,
        score_threshold=score_threshold, nms_method=nms_method, nms_threshold=nms_threshold,
        detections_per_image=detections_per_image,
    )  # fmt: skip
