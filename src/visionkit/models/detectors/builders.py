"""Registered detector builders, generated per (family, backbone).

A family is one ``build_<family>(backbone, *, num_classes, ..., postprocess)`` function that assembles the
parts around any ``features_only`` backbone; :func:`register_detector_family` registers it once per
backbone of :data:`BACKBONES` as ``<family>_<backbone>_fpn`` (``retinanet_resnet50_fpn``,
``fasterrcnn_plain_fpn``, ...). Each generated builder's signature is the union of the backbone's options,
the family's options and the :class:`~visionkit.models.detectors.postprocess.PostProcess` settings, so
:func:`~visionkit.models.create_model` checks every keyword against it and ``inspect.signature`` lists them.
A new family (YOLO, Cascade R-CNN, RefineDet) registers itself the same way.

Backbones start from random weights (nothing is downloaded; ``train detect backbone_weights=PATH`` loads a
local torchvision checkpoint). ``fpn_channels``, ``head_convs`` and ``anchor_sizes`` let a small CPU run
shrink the paper's defaults (256 channels, 4 head convs, anchors 32..512); the ``plain`` backbone's
builders default to the demo size (128-pixel images, a 2-core CPU).

Example:
    >>> from visionkit.models import create_model, list_models
    >>> list_models("retinanet_*")
    ['retinanet_mobilenet_v2_fpn', 'retinanet_plain_fpn', 'retinanet_resnet50_fpn', 'retinanet_vgg16_fpn']
    >>> model = create_model("retinanet_plain_fpn", num_classes=3, nms_method="soft_gaussian")
    >>> model.postprocess.nms_method, model.feature_shapes["p3"].stride
    ('soft_gaussian', 8)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import Backbone
from visionkit.models.backbones.mobilenet import mobilenet_v2
from visionkit.models.backbones.plain import PlainBackbone
from visionkit.models.backbones.resnet import resnet50
from visionkit.models.backbones.vgg import vgg16, vgg16_bn
from visionkit.models.detectors.base import IMAGENET_MEAN, IMAGENET_STD
from visionkit.models.detectors.faster_rcnn import FasterRCNN
from visionkit.models.detectors.postprocess import PostProcess
from visionkit.models.detectors.retinanet import RetinaNet
from visionkit.models.detectors.roi_heads import RoIHeads
from visionkit.models.detectors.rpn import RegionProposalNetwork
from visionkit.models.heads.box_head import FastRCNNPredictor, TwoMLPHead
from visionkit.models.heads.retinanet_head import RetinaNetHead
from visionkit.models.heads.rpn_head import RPNHead
from visionkit.models.necks.fpn import FeaturePyramidNetwork
from visionkit.models.registry import register_model
from visionkit.ops.anchors import AnchorGenerator, fpn_anchor_generator
from visionkit.ops.multiscale_roi_align import MultiScaleRoIAlign

__all__ = ["BACKBONES", "build_faster_rcnn", "build_retinanet", "register_detector_family"]


# ---------------------------------------------------------------------------------------------- backbones
def _resnet50() -> Backbone:
    return resnet50(features_only=True)  # type: ignore[return-value]


def _mobilenet_v2(*, width_multiplier: float = 1.0) -> Backbone:
    return mobilenet_v2(width_multiplier=width_multiplier, features_only=True)  # type: ignore[return-value]


def _vgg16(*, batch_norm: bool = True) -> Backbone:
    return (vgg16_bn if batch_norm else vgg16)(features_only=True)  # type: ignore[return-value]


def _plain(*, widths: Sequence[int] = (16, 32, 64, 96, 128)) -> Backbone:
    return PlainBackbone(widths)


#: backbone name -> factory of the ``features_only`` backbone (its keyword arguments become builder options)
BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet50": _resnet50,
    "mobilenet_v2": _mobilenet_v2,
    "vgg16": _vgg16,
    "plain": _plain,
}


# ----------------------------------------------------------------------------------------------- families
def build_retinanet(
    backbone: Backbone,
    *,
    num_classes: int,
    fpn_channels: int = 256,
    fpn: bool = True,
    head_convs: int = 4,
    head_norm: str | None = None,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    fg_iou_threshold: float = 0.5,
    bg_iou_threshold: float = 0.4,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    box_loss: str = "l1",
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    postprocess: PostProcess | None = None,
) -> RetinaNet:
    """RetinaNet on any ``features_only`` backbone: FPN on ``c3..c5`` plus ``p6, p7`` from ``c5``,
    anchors ``anchor_sizes[l] · 2^(i/3)`` (i = 0, 1, 2) × ``anchor_ratios`` on level ``l``, a class and a
    box subnet of ``head_convs`` convolutions (``head_norm="group"``: GroupNorm in them).

    ``fpn=False`` is the single-level baseline of the FPN paper's ablation (Lin et al., 2017, Table 1,
    "conv5"): no pyramid, one level ``p5`` = 3×3 conv of the 1×1 projection of the last backbone map ``c5``
    (stride 32; the FPN's own lateral and smoothing convolutions on ``c5`` alone, no top-down path, no
    ``p3, p4, p6, p7``), and *every* anchor of the pyramid on it: the same ``anchor_sizes`` × 3 scales ×
    ``anchor_ratios`` (5 sizes: 45 anchors per location), the same head (its last convolutions predict for
    45 anchors instead of 9). Only the feature pyramid differs, so FPN vs single level (§9) compares like
    with like.

    Raises:
        ConfigError: ``fpn`` not a boolean; ``anchor_sizes`` not one size per FPN level (with ``fpn=True``)
            or empty.
    """
    if not isinstance(fpn, bool):
        raise ConfigError(f"fpn={fpn!r}: expected true (the FPN P3-P7) or false (one level from c5)")
    shapes = backbone.output_shape()
    if fpn:
        neck = FeaturePyramidNetwork(
            {name: shapes[name] for name in ("c3", "c4", "c5")},
            fpn_channels,
            extra_blocks="p6p7",
            extra_source="c5",
        )
        strides = list(neck.strides.values())
        if len(anchor_sizes) != len(strides):
            raise ConfigError(
                f"anchor_sizes={tuple(anchor_sizes)}: expected one size per level {neck.out_names}"
            )
        anchor_generator = fpn_anchor_generator(
            tuple(anchor_sizes), tuple(anchor_ratios), scales_per_octave=3, strides=strides
        )
    else:
        neck = FeaturePyramidNetwork({"c5": shapes["c5"]}, fpn_channels)
        if len(anchor_sizes) == 0:
            raise ConfigError("anchor_sizes=(): expected at least one size (fpn=false puts all on p5)")
        pyramid = fpn_anchor_generator(tuple(anchor_sizes), tuple(anchor_ratios), scales_per_octave=3)
        anchor_generator = AnchorGenerator(
            (tuple(size for level in pyramid.sizes for size in level),),
            (tuple(anchor_ratios),),
            strides=list(neck.strides.values()),
        )
    num_anchors = anchor_generator.num_anchors_per_location()[0]
    head = RetinaNetHead(
        fpn_channels, num_anchors, num_classes, channels=fpn_channels, num_convs=head_convs, norm=head_norm
    )
    return RetinaNet(
        backbone,
        neck,
        head,
        anchor_generator,
        num_classes=num_classes,
        fg_iou_threshold=fg_iou_threshold,
        bg_iou_threshold=bg_iou_threshold,
        focal_alpha=focal_alpha,
        focal_gamma=focal_gamma,
        box_loss=box_loss,
        image_mean=image_mean,
        image_std=image_std,
        postprocess=postprocess,
    )


def build_faster_rcnn(
    backbone: Backbone,
    *,
    num_classes: int,
    fpn_channels: int = 256,
    representation_size: int = 1024,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
    anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    roi_op: str = "align",
    rpn_pre_nms_top_n: tuple[int, int] = (2000, 1000),
    rpn_post_nms_top_n: tuple[int, int] = (2000, 1000),
    rpn_nms_threshold: float = 0.7,
    rpn_batch_size_per_image: int = 256,
    rpn_positive_fraction: float = 0.5,
    box_batch_size_per_image: int = 512,
    box_positive_fraction: float = 0.25,
    box_fg_iou_threshold: float = 0.5,
    box_bg_iou_threshold: float = 0.5,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    postprocess: PostProcess | None = None,
) -> FasterRCNN:
    """Faster R-CNN on any ``features_only`` backbone: FPN ``p2..p6`` (``p6`` by max-pool), RPN with one
    anchor size per level × ``anchor_ratios``, RoI Align (``roi_op="align"``) or RoI Pool of ``p2..p5`` to
    7×7, two-FC head of ``representation_size``. ``rpn_*_top_n`` are ``(training, testing)``."""
    shapes = backbone.output_shape()
    neck = FeaturePyramidNetwork(
        {name: shapes[name] for name in ("c2", "c3", "c4", "c5")}, fpn_channels, extra_blocks="maxpool"
    )
    strides = neck.strides
    if len(anchor_sizes) != len(strides):
        raise ConfigError(f"anchor_sizes={tuple(anchor_sizes)}: expected one size per level {neck.out_names}")
    anchor_generator = fpn_anchor_generator(
        tuple(anchor_sizes), tuple(anchor_ratios), strides=list(strides.values())
    )
    rpn = RegionProposalNetwork(
        anchor_generator,
        RPNHead(fpn_channels, anchor_generator.num_anchors_per_location()[0]),
        pre_nms_top_n=rpn_pre_nms_top_n,
        post_nms_top_n=rpn_post_nms_top_n,
        nms_threshold=rpn_nms_threshold,
        batch_size_per_image=rpn_batch_size_per_image,
        positive_fraction=rpn_positive_fraction,
    )
    pooled = ("p2", "p3", "p4", "p5")
    pooler = MultiScaleRoIAlign(pooled, 7, 2, aligned=True, op=roi_op, strides=[strides[n] for n in pooled])
    roi_heads = RoIHeads(
        pooler,
        TwoMLPHead(fpn_channels * 7 * 7, representation_size),
        FastRCNNPredictor(representation_size, num_classes),
        num_classes=num_classes,
        batch_size_per_image=box_batch_size_per_image,
        positive_fraction=box_positive_fraction,
        fg_iou_threshold=box_fg_iou_threshold,
        bg_iou_threshold=box_bg_iou_threshold,
    )
    return FasterRCNN(
        backbone,
        neck,
        rpn,
        roi_heads,
        num_classes=num_classes,
        postprocess=postprocess,
        rpn_feature_names=neck.out_names,
        image_mean=image_mean,
        image_std=image_std,
    )


# ------------------------------------------------------------------------------------------- registration
_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def _options(function: Callable[..., Any], skip: Sequence[str] = ()) -> list[inspect.Parameter]:
    return [
        p
        for p in inspect.signature(function).parameters.values()
        if p.kind == _KEYWORD and p.name not in skip
    ]


def _postprocess_options() -> list[inspect.Parameter]:
    defaults = PostProcess()
    return [
        inspect.Parameter(name, _KEYWORD, default=getattr(defaults, name))
        for name in PostProcess.field_names()
    ]


def make_detector_builder(
    name: str,
    build: Callable[..., nn.Module],
    backbone: Callable[..., Backbone],
    defaults: Mapping[str, Any] | None = None,
) -> Callable[..., nn.Module]:
    """A builder ``name(**options)`` of ``build(backbone(**backbone_options), **family_options,
    postprocess=PostProcess(**postprocess_options))`` whose signature lists every option (with ``defaults``
    overriding the functions' own)."""
    backbone_options = _options(backbone)
    family_options = _options(build, skip=("num_classes", "postprocess"))
    post_options = _postprocess_options()
    defaults = dict(defaults or {})
    parameters = [inspect.Parameter("num_classes", _KEYWORD, default=91, annotation=int)]
    for parameter in [*backbone_options, *family_options, *post_options]:
        parameters.append(parameter.replace(default=defaults.pop(parameter.name, parameter.default)))
    if defaults:
        raise TypeError(f"{name}: defaults for unknown options {sorted(defaults)}")
    signature = inspect.Signature(parameters)
    groups = [{p.name for p in group} for group in (backbone_options, family_options, post_options)]

    def builder(**options: Any) -> nn.Module:
        bound = signature.bind(**options)
        bound.apply_defaults()
        values = bound.arguments
        made = backbone(**{k: v for k, v in values.items() if k in groups[0]})
        settings = PostProcess(**{k: v for k, v in values.items() if k in groups[2]})
        family = {k: v for k, v in values.items() if k in groups[1]}
        return build(made, num_classes=values["num_classes"], postprocess=settings, **family)

    builder.__name__ = builder.__qualname__ = name
    builder.__signature__ = signature  # type: ignore[attr-defined]
    builder.__doc__ = (
        f"``{build.__name__}`` on the ``{backbone.__name__.strip('_')}`` backbone (a generated builder: "
        f"backbone options, family options and post-processing settings as keyword arguments)."
    )
    return builder


def register_detector_family(
    family: str,
    build: Callable[..., nn.Module],
    defaults: Mapping[str, Mapping[str, Any]] | None = None,
    backbones: Mapping[str, Callable[..., Backbone]] = BACKBONES,
    suffix: str = "_fpn",
) -> list[str]:
    """Register ``build`` once per backbone as ``<family>_<backbone><suffix>``; ``defaults[backbone]``
    overrides option defaults for that backbone. Returns the registered names."""
    names = []
    for backbone_name, factory in backbones.items():
        name = f"{family}_{backbone_name}{suffix}"
        register_model(name)(make_detector_builder(name, build, factory, (defaults or {}).get(backbone_name)))
        names.append(name)
    return names


#: The demo-size options of the ``plain`` backbone: 128-pixel images of 16–48 pixel objects on a CPU. For
#: Faster R-CNN, the two-FC head on 64 sampled RoIs of 64×7×7 features per image: with 128 RoIs and a
#: 256-wide head its matrix products were a third of a training step (profiled on 8 images of 128²).
_SMALL_RETINANET = {
    "fpn_channels": 64,
    "head_convs": 2,
    "head_norm": "group",
    "anchor_sizes": (16, 32, 64, 128, 256),
}
_SMALL_FASTER_RCNN = {
    "fpn_channels": 64,
    "representation_size": 128,
    "anchor_sizes": (16, 32, 64, 128, 256),
    "rpn_pre_nms_top_n": (500, 300),
    "rpn_post_nms_top_n": (300, 100),
    "box_batch_size_per_image": 64,
}

register_detector_family("retinanet", build_retinanet, {"plain": _SMALL_RETINANET})
register_detector_family("fasterrcnn", build_faster_rcnn, {"plain": _SMALL_FASTER_RCNN})
