"""RefineDet (Zhang et al., "Single-Shot Refinement Neural Network for Object Detection", CVPR 2018; handbook
"前沿"): a one-stage detector that detects twice.

* **Sources** (:class:`RefineDetSources`): four levels at strides 8, 16, 32, 64 — the backbone's ``c3``,
  ``c4``, ``c5`` (VGG16: ``conv4_3``, ``conv5_3``, then ``fc6``/``fc7`` as convolutions on ``pool5``) and an
  extra ``1×1`` + stride-2 ``3×3`` layer; L2Norm (scales 10 and 8) on the first two for VGG16.
* **ARM** (anchor refinement module): per level a ``3×3`` conv to one objectness logit and four coarse
  offsets per anchor (3 ratios, one size per level). Trained on the original anchors: IoU ``>= 0.5`` (and
  each object's best anchor) positive, binary cross-entropy with 3:1 hard negative mining, smooth L1.
* **TCB** (transfer connection blocks, :class:`TransferConnection`): ``conv-relu-conv`` on each ARM level,
  plus the higher level's TCB output upsampled by a learned ``4×4`` stride-2 deconvolution, summed, then
  ``relu-conv-relu``; top-down.
* **ODM** (object detection module): per TCB level a ``3×3`` conv to ``K + 1`` class logits and four
  offsets per anchor, regressed from the **refined anchors** (the ARM offsets, detached, applied to the
  anchors: two-step regression) and matched to the ground truth on them. **Negative anchor filtering**:
  anchors whose ARM background probability exceeds 0.99 are dropped from ODM training (before its 3:1 hard
  negative mining) and from inference.

``input_size > 0`` (the VGG16 builders ``refinedet320_vgg16`` / ``refinedet512_vgg16``: 320, 512) warps
every image to ``input_size × input_size`` inside the model, as the authors' data layer does (bilinear;
target boxes scaled with it, detections scaled back to the image's own pixels): the four levels are then
``input_size / 8, / 16, / 32, / 64`` cells on a side (40, 20, 10, 5 and 64, 32, 16, 8).

Both modules use box-coder weights ``(10, 10, 5, 5)`` (SSD's variances 0.1 / 0.2) and smooth L1 (β = 1);
each module's loss is normalized by its number of positive anchors in the batch. ``refine_anchors=False``
and ``negative_filtering=False`` switch the two ideas off for the paper's ablation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from visionkit.errors import ConfigError
from visionkit.losses.regression import smooth_l1_loss
from visionkit.models.backbones.base import Backbone
from visionkit.models.detectors.base import IMAGENET_MEAN, IMAGENET_STD, Detector, training_boxes
from visionkit.models.detectors.builders import BACKBONES, make_detector_builder, register_detector_family
from visionkit.models.detectors.postprocess import PostProcess, postprocess_detections
from visionkit.models.heads.retinanet_head import flatten_level_outputs
from visionkit.models.registry import register_model
from visionkit.ops.anchors import AnchorGenerator
from visionkit.ops.box_coder import decode_boxes, encode_boxes
from visionkit.ops.boxes import box_iou, clip_boxes_to_image
from visionkit.ops.matcher import Matcher
from visionkit.structures import Detections, ShapeSpec, Target

__all__ = [
    "L2Norm",
    "RefineDet",
    "RefineDetSources",
    "TransferConnection",
    "build_refinedet",
    "hard_negatives",
    "refinedet_loss",
]

WEIGHTS = (10.0, 10.0, 5.0, 5.0)


class L2Norm(nn.Module):
    """Channel-wise L2 normalization with a learned per-channel scale (ParseNet; SSD / RefineDet on VGG16's
    ``conv4_3`` and ``conv5_3``): ``y = scale · x / (‖x‖₂ + eps)`` over channels, ``[B, C, H, W]``.

    Example:
        >>> L2Norm(2, scale=10.0)(torch.tensor([[[[3.0]], [[4.0]]]])).flatten().tolist()
        [6.0, 8.0]
    """

    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return self.weight[None, :, None, None] * x / norm


class RefineDetSources(nn.Module):
    """The four ARM levels ``{"s3", "s4", "s5", "s6"}`` (strides 8, 16, 32, 64) from backbone ``c3..c5``.

    Args:
        shapes: the backbone's ``output_shape()``; channels: width of the extra layer's output (``s6``; its
            ``1×1`` reduction is half as wide).
        fc_channels: > 0: VGG16's ``fc6`` (3×3, dilation ``fc_dilation``) and ``fc7`` (1×1) convolutions
            of that width on ``c5`` (0: ``c5`` as it is); l2norm: L2Norm (scales 10, 8) on ``s3``, ``s4``.

    Example:
        >>> from visionkit.models.backbones.plain import PlainBackbone
        >>> backbone = PlainBackbone((8, 8, 16, 16, 32))
        >>> sources = RefineDetSources(backbone.output_shape(), 16)
        >>> {k: v.shape[-1] for k, v in sources(backbone(torch.rand(1, 3, 128, 128))).items()}
        {'s3': 16, 's4': 8, 's5': 4, 's6': 2}
    """

    def __init__(
        self,
        shapes: dict[str, ShapeSpec],
        channels: int,
        *,
        fc_channels: int = 0,
        fc_dilation: int = 1,
        l2norm: bool = False,
    ) -> None:
        super().__init__()
        c5 = shapes["c5"].channels
        self.fc = (
            nn.Sequential(nn.Conv2d(c5, fc_channels, 3, padding=fc_dilation, dilation=fc_dilation),
                          nn.ReLU(inplace=True),
                          nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True))
            if fc_channels else nn.Identity()
        )  # fmt: skip
        top = fc_channels or c5
        self.extra = nn.Sequential(
            nn.Conv2d(top, channels // 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.norms = nn.ModuleDict(
            {"s3": L2Norm(shapes["c3"].channels, 10.0), "s4": L2Norm(shapes["c4"].channels, 8.0)}
            if l2norm else {}
        )  # fmt: skip
        self.shapes = {
            "s3": shapes["c3"], "s4": shapes["c4"], "s5": ShapeSpec(top, shapes["c5"].stride),
            "s6": ShapeSpec(channels, shapes["c5"].stride * 2),
        }  # fmt: skip

    def output_shape(self) -> dict[str, ShapeSpec]:
        return dict(self.shapes)

    def forward(self, features: dict[str, Tensor]) -> dict[str, Tensor]:
        s5 = self.fc(features["c5"])
        out = {"s3": features["c3"], "s4": features["c4"], "s5": s5, "s6": self.extra(s5)}
        return {name: self.norms[name](x) if name in self.norms else x for name, x in out.items()}


class TransferConnection(nn.Module):
    """Transfer connection blocks, top-down: level ``l`` → ``relu(conv(relu(conv(x_l))) + deconv(t_{l+1}))``
    → ``relu(conv)`` (each ``3×3``, ``channels`` wide; ``deconv`` ``deconv_kernel``² stride 2: 4 as the
    paper's figure 2, 2 as the authors' released Caffe models).

    Example:
        >>> tcb = TransferConnection([8, 16], channels=4)
        >>> [t.shape[-1] for t in tcb([torch.rand(1, 8, 8, 8), torch.rand(1, 16, 4, 4)])]
        [8, 4]
    """

    def __init__(self, in_channels: Sequence[int], channels: int, deconv_kernel: int = 4) -> None:
        super().__init__()
        if type(deconv_kernel) is not int or deconv_kernel < 2 or deconv_kernel % 2:
            raise ConfigError(f"deconv_kernel={deconv_kernel!r}: expected an even integer >= 2 (stride 2)")
        padding = (deconv_kernel - 2) // 2  # output exactly twice the input
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, channels, 3, padding=1), nn.ReLU(inplace=True),
                          nn.Conv2d(channels, channels, 3, padding=1))
            for c in in_channels
        )  # fmt: skip
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(channels, channels, deconv_kernel, stride=2, padding=padding)
            for _ in in_channels[:-1]
        )
        self.output = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
            for _ in in_channels
        )

    def forward(self, levels: Sequence[Tensor]) -> list[Tensor]:
        outputs: list[Tensor] = []
        upper: Tensor | None = None
        for index in reversed(range(len(levels))):
            x = self.lateral[index](levels[index])
            if upper is not None:
                up = self.upsample[index](upper)
                x = x + up[..., : x.shape[-2], : x.shape[-1]]
            upper = self.output[index](F.relu(x))
            outputs.append(upper)
        return outputs[::-1]


def _level_convs(in_channels: Sequence[int], outputs: int) -> nn.ModuleList:
    return nn.ModuleList(nn.Conv2d(c, outputs, 3, padding=1) for c in in_channels)


def hard_negatives(losses: Tensor, candidates: Tensor, count: int) -> Tensor:
    """The ``count`` candidates (``Tensor[N]`` bool) with the largest ``losses`` ``[N]`` (all candidates if
    fewer): SSD's hard negative mining. Returns a ``Tensor[N]`` bool mask.

    Example:
        >>> hard_negatives(torch.tensor([0.1, 0.9, 0.5, 0.7]), torch.tensor([True, False, True, True]), 2)
        tensor([False, False,  True,  True])
    """
    mask = torch.zeros_like(candidates)
    count = min(int(count), int(candidates.sum()))
    if count > 0:
        ranked = losses.detach().masked_fill(~candidates, float("-inf"))
        mask[ranked.topk(count).indices] = True
    return mask


def refinedet_loss(
    arm_objectness: Tensor,
    arm_deltas: Tensor,
    odm_logits: Tensor,
    odm_deltas: Tensor,
    anchors: Sequence[Tensor],
    targets: Sequence[Target],
    matcher: Matcher,
    *,
    neg_pos_ratio: float = 3.0,
    filter_threshold: float = 0.99,
    refine_anchors: bool = True,
    negative_filtering: bool = True,
) -> dict[str, Tensor]:
    """ARM and ODM losses of a batch (module docstring).

    Args:
        arm_objectness: ``Tensor[B, N]`` logits; arm_deltas, odm_deltas: ``Tensor[B, N, 4]``; odm_logits:
            ``Tensor[B, N, K + 1]`` (0 = background); anchors: ``B`` × ``Tensor[N, 4]``.
        matcher: IoU matching of both modules (0.5, every object's best anchor too).
        neg_pos_ratio: hard negatives per positive (an image without positives keeps ``neg_pos_ratio``).
        filter_threshold: ARM background probability above which an anchor leaves the ODM.

    Returns:
        ``{"arm_classification", "arm_box_regression", "odm_classification", "odm_box_regression"}``, each
        summed over its positives (and mined negatives) and divided by the module's positives in the batch.
    """
    terms = {name: [] for name in ("arm_cls", "arm_box", "odm_cls", "odm_box")}
    arm_positives = odm_positives = 0
    for image in range(len(anchors)):
        gt_boxes, gt_labels = training_boxes(targets[image])
        image_anchors, objectness = anchors[image], arm_objectness[image]
        gt_boxes = gt_boxes.to(image_anchors.dtype)
        matches = matcher(box_iou(gt_boxes, image_anchors))
        positive = matches >= 0
        bce = F.binary_cross_entropy_with_logits(objectness, positive.to(objectness.dtype), reduction="none")
        count = int(neg_pos_ratio * max(int(positive.sum()), 1))
        chosen = positive | hard_negatives(bce, matches == Matcher.BELOW_LOW_THRESHOLD, count)
        terms["arm_cls"].append(bce[chosen].sum())
        terms["arm_box"].append(_box_term(arm_deltas[image], image_anchors, gt_boxes, matches, positive))
        arm_positives += int(positive.sum())
        refined = refine(arm_deltas[image], image_anchors) if refine_anchors else image_anchors
        keep = ~filtered(objectness, filter_threshold) if negative_filtering else torch.ones_like(positive)
        matches = matcher(box_iou(gt_boxes, refined))
        positive = (matches >= 0) & keep
        labels = torch.zeros_like(matches)
        labels[positive] = gt_labels[matches[positive]] + 1
        ce = F.cross_entropy(odm_logits[image], labels, reduction="none")
        count = int(neg_pos_ratio * max(int(positive.sum()), 1))
        chosen = positive | hard_negatives(ce, (matches == Matcher.BELOW_LOW_THRESHOLD) & keep, count)
        terms["odm_cls"].append(ce[chosen].sum())
        terms["odm_box"].append(_box_term(odm_deltas[image], refined, gt_boxes, matches, positive))
        odm_positives += int(positive.sum())
    arm, odm = max(arm_positives, 1), max(odm_positives, 1)
    return {
        "arm_classification": torch.stack(terms["arm_cls"]).sum() / arm,
        "arm_box_regression": torch.stack(terms["arm_box"]).sum() / arm,
        "odm_classification": torch.stack(terms["odm_cls"]).sum() / odm,
        "odm_box_regression": torch.stack(terms["odm_box"]).sum() / odm,
    }


def _box_term(deltas: Tensor, boxes: Tensor, gt_boxes: Tensor, matches: Tensor, positive: Tensor) -> Tensor:
    if not bool(positive.any()):
        return deltas.sum() * 0.0
    wanted = encode_boxes(gt_boxes[matches[positive]].to(boxes.dtype), boxes[positive], WEIGHTS)
    return smooth_l1_loss(deltas[positive], wanted.to(deltas.dtype), beta=1.0, reduction="sum")


def refine(arm_deltas: Tensor, anchors: Tensor) -> Tensor:
    """Refined anchors ``Tensor[N, 4]``: the ARM's offsets ``[N, 4]`` (detached) applied to ``anchors``."""
    return decode_boxes(arm_deltas.detach(), anchors, WEIGHTS).to(anchors.dtype)


def filtered(arm_objectness: Tensor, threshold: float) -> Tensor:
    """Anchors whose ARM background probability ``sigmoid(-logit)`` exceeds ``threshold`` (``[N]`` bool)."""
    return torch.sigmoid(-arm_objectness.detach().float()) > threshold


class RefineDet(Detector):
    """RefineDet (module docstring): parts passed in, defaults in :func:`build_refinedet`.

    Args:
        backbone, neck: a ``features_only`` backbone and :class:`RefineDetSources`.
        tcb: :class:`TransferConnection` over the neck's levels; anchor_generator: one size per level.
        num_classes: ``K``; matcher: both modules' IoU matching; neg_pos_ratio, filter_threshold,
        refine_anchors, negative_filtering: see :func:`refinedet_loss`; input_size: > 0: images warped to
        ``input_size²`` inside the model (module docstring), 0: used as given; postprocess, **options: see
        :class:`Detector`.

    Forward:
        See :class:`Detector`. Training losses: ``{"arm_classification", "arm_box_regression",
        "odm_classification", "odm_box_regression"}``.

    Example:
        >>> from visionkit.models import create_model
        >>> model = create_model("refinedet_plain", num_classes=3).eval()
        >>> sorted(model([torch.rand(3, 96, 128)])[0])
        ['boxes', 'labels', 'scores']
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: RefineDetSources,
        tcb: TransferConnection,
        anchor_generator: AnchorGenerator,
        *,
        num_classes: int,
        matcher: Matcher | None = None,
        neg_pos_ratio: float = 3.0,
        filter_threshold: float = 0.99,
        refine_anchors: bool = True,
        negative_filtering: bool = True,
        input_size: int = 0,
        postprocess: PostProcess | None = None,
        **options: object,
    ) -> None:
        super().__init__(backbone, neck, num_classes=num_classes, postprocess=postprocess, **options)  # type: ignore[arg-type]
        if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 0:
            raise ConfigError(f"input_size={input_size!r}: expected an integer >= 0 (0: images as given)")
        self.input_size = input_size
        channels = [shape.channels for shape in neck.output_shape().values()]
        anchors = anchor_generator.num_anchors_per_location()
        if len(anchors) != len(channels):
            raise ConfigError(f"anchor_sizes: expected one size per level {list(neck.output_shape())}")
        width = tcb.output[0][0].out_channels
        self.tcb, self.anchor_generator, self.num_anchors = tcb, anchor_generator, anchors[0]
        self.arm_objectness = _level_convs(channels, anchors[0])
        self.arm_deltas = _level_convs(channels, 4 * anchors[0])
        self.odm_logits = _level_convs([width] * len(channels), (num_classes + 1) * anchors[0])
        self.odm_deltas = _level_convs([width] * len(channels), 4 * anchors[0])
        self.matcher = matcher if matcher is not None else Matcher(0.5, 0.5, allow_low_quality_matches=True)
        self.neg_pos_ratio, self.filter_threshold = neg_pos_ratio, filter_threshold
        self.refine_anchors, self.negative_filtering = refine_anchors, negative_filtering

    def forward(self, images: Sequence[Tensor], targets: Sequence[Target] | None = None) -> Any:
        """:class:`Detector`'s forward, on images warped to ``input_size²`` when it is set (targets scaled
        with them, detections scaled back)."""
        if not self.input_size or isinstance(images, Tensor):
            return super().forward(images, targets)
        factors = [_warp_factors(image, self.input_size, len(self.image_mean)) for image in images]
        warped = [
            _warp(image, self.input_size) if f else image for image, f in zip(images, factors, strict=True)
        ]
        if self.training:
            if targets is not None and len(targets) == len(images):
                targets = [_scale_target(t, f) for t, f in zip(targets, factors, strict=True)]
            return super().forward(warped, targets)
        detections = super().forward(warped)
        return [
            _scale_detections(d, f, image) for d, f, image in zip(detections, factors, images, strict=True)
        ]

    def outputs(
        self, batch: Tensor, features: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor]]:
        """``(arm_objectness [B, N], arm_deltas [B, N, 4], odm_logits [B, N, K + 1], odm_deltas [B, N, 4],
        anchors B × [N, 4])`` of a normalized batch's neck features."""
        levels = list(features.values())
        odm_levels = self.tcb(levels)
        k = self.num_classes + 1
        return (
            flatten_level_outputs([c(x) for c, x in zip(self.arm_objectness, levels, strict=True)], 1)[
                ..., 0
            ],
            flatten_level_outputs([c(x) for c, x in zip(self.arm_deltas, levels, strict=True)], 4),
            flatten_level_outputs([c(x) for c, x in zip(self.odm_logits, odm_levels, strict=True)], k),
            flatten_level_outputs([c(x) for c, x in zip(self.odm_deltas, odm_levels, strict=True)], 4),
            self.anchor_generator(batch, levels),
        )

    def losses(
        self,
        batch: Tensor,
        sizes: list[tuple[int, int]],
        features: dict[str, Tensor],
        targets: Sequence[Target],
    ) -> dict[str, Tensor]:
        return refinedet_loss(
            *self.outputs(batch, features), targets, self.matcher, neg_pos_ratio=self.neg_pos_ratio,
            filter_threshold=self.filter_threshold, refine_anchors=self.refine_anchors,
            negative_filtering=self.negative_filtering,
        )  # fmt: skip

    @torch.no_grad()
    def detect(
        self, batch: Tensor, sizes: list[tuple[int, int]], features: dict[str, Tensor]
    ) -> list[Detections]:
        arm_objectness, arm_deltas, odm_logits, odm_deltas, anchors = self.outputs(batch, features)
        settings, results = self.postprocess, []
        for image, size in enumerate(sizes):
            boxes = refine(arm_deltas[image], anchors[image]) if self.refine_anchors else anchors[image]
            scores = F.softmax(odm_logits[image].float(), dim=-1)[:, 1:]
            if self.negative_filtering:
                scores = scores.masked_fill(
                    filtered(arm_objectness[image], self.filter_threshold)[:, None], 0.0
                )
            flat = scores.flatten()
            candidates = torch.nonzero(flat > settings.score_threshold).flatten()
            top = flat[candidates].topk(min(settings.topk_candidates, candidates.numel()))
            candidates = candidates[top.indices]
            rows = torch.div(candidates, self.num_classes, rounding_mode="floor")
            decoded = decode_boxes(odm_deltas[image][rows].float(), boxes[rows].float(), WEIGHTS)
            results.append(
                postprocess_detections(decoded, top.values, candidates % self.num_classes, size, settings)
            )
        return results


def _warp_factors(image: object, size: int, channels: int) -> tuple[float, float] | None:
    """``(size / W, size / H)`` of a well-formed ``[channels, H, W]`` float image (``None``: left to the
    base class's input checks, which name what is wrong)."""
    if not isinstance(image, Tensor) or not image.is_floating_point() or image.dim() != 3:
        return None
    if image.shape[0] != channels or min(image.shape) < 1:
        return None
    return size / image.shape[2], size / image.shape[1]


def _warp(image: Tensor, size: int) -> Tensor:
    """``image`` ``[C, H, W]`` resized (bilinear, no aspect kept) to ``[C, size, size]``."""
    return F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]


def _scale_target(target: Any, factors: tuple[float, float] | None) -> Any:
    """``target`` with its ``boxes`` ``[N, 4]`` scaled by ``(fx, fy, fx, fy)`` (as given if malformed)."""
    boxes = target.get("boxes") if isinstance(target, Mapping) else None
    if factors is None or not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
        return target
    scale = boxes.new_tensor([factors[0], factors[1], factors[0], factors[1]])
    return {**target, "boxes": boxes * scale}


def _scale_detections(detections: Detections, factors: tuple[float, float] | None, image: Tensor) -> Any:
    """Detections of the warped image in ``image``'s own pixels (clipped to it)."""
    if factors is None:
        return detections
    boxes = detections["boxes"] / detections["boxes"].new_tensor(
        [factors[0], factors[1], factors[0], factors[1]]
    )
    return {**detections, "boxes": clip_boxes_to_image(boxes, (image.shape[1], image.shape[2]))}


def build_refinedet(
    backbone: Backbone,
    *,
    num_classes: int,
    fpn_channels: int = 256,
    fc_channels: int = 0,
    fc_dilation: int = 1,
    extra_channels: int = 0,
    deconv_kernel: int = 4,
    l2norm: bool = False,
    anchor_sizes: Sequence[float] = (32, 64, 128, 256),
    anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    anchor_offset: float = 0.0,
    round_anchors: bool = True,
    input_size: int = 0,
    iou_threshold: float = 0.5,
    neg_pos_ratio: float = 3.0,
    filter_threshold: float = 0.99,
    refine_anchors: bool = True,
    negative_filtering: bool = True,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    postprocess: PostProcess | None = None,
) -> RefineDet:
    """RefineDet on any ``features_only`` backbone: sources ``c3, c4, c5`` (+ ``fc6/fc7`` of ``fc_channels``,
    ``fc6`` dilated by ``fc_dilation``) and an extra level (``1×1`` to ``extra_channels / 2``, ``3×3``
    stride 2 to ``extra_channels``; 0: ``fpn_channels``), TCBs of ``fpn_channels`` with ``deconv_kernel``
    deconvolutions, one anchor size per level (4 × the stride, the paper's) × ``anchor_ratios``, centred at
    ``(cell + anchor_offset) × stride`` (``round_anchors``: corners rounded to whole pixels, torchvision's
    way; SSD's priors are not); ``input_size``: see :class:`RefineDet`.

    The VGG16 builders follow the authors' VOC / COCO configurations (``VGG16_*_320.py`` / ``_512.py``):
    VGG16 without batch norm, ``fc6`` 3×3 dilation 3 and ``fc7`` 1×1 of 1024 on ``pool5``, L2Norm 10 / 8 on
    ``conv4_3`` / ``conv5_3``, ``conv6_1`` 1×1 256 and ``conv6_2`` 3×3 stride 2 512, TCBs of 256, anchors
    32 / 64 / 128 / 256 at strides 8 / 16 / 32 / 64 with ratios 1/2, 1, 2 at the cell centres (unrounded,
    as SSD's ``PriorBox``), images warped
    to 320² (``refinedet320_vgg16``, also ``refinedet_vgg16``) or 512² (``refinedet512_vgg16``). Two
    differences remain: the ARM scores objectness with one sigmoid logit per anchor (the authors: a 2-way
    softmax, twice the outputs) and the TCB deconvolution is 4×4 as the paper's figure (the released models:
    2×2, ``deconv_kernel=2``)."""
    if not 0.0 < iou_threshold < 1.0:
        raise ConfigError(f"iou_threshold={iou_threshold!r}: expected a number in (0, 1)")
    if not 0.0 < filter_threshold <= 1.0:
        raise ConfigError(f"filter_threshold={filter_threshold!r}: expected a number in (0, 1]")
    if not neg_pos_ratio > 0:
        raise ConfigError(f"neg_pos_ratio={neg_pos_ratio!r}: expected a number > 0")
    if not 0.0 <= anchor_offset < 1.0:
        raise ConfigError(f"anchor_offset={anchor_offset!r}: expected a number in [0, 1)")
    neck = RefineDetSources(
        backbone.output_shape(), extra_channels or fpn_channels, fc_channels=fc_channels,
        fc_dilation=fc_dilation, l2norm=l2norm,
    )  # fmt: skip
    shapes = neck.output_shape()
    if len(anchor_sizes) != len(shapes):
        raise ConfigError(f"anchor_sizes={tuple(anchor_sizes)}: expected one size per level {list(shapes)}")
    anchors = AnchorGenerator(
        tuple((float(size),) for size in anchor_sizes), (tuple(anchor_ratios),) * len(shapes),
        strides=[s.stride for s in shapes.values()], offset=anchor_offset, round_base_anchors=round_anchors,
    )  # fmt: skip
    tcb = TransferConnection([s.channels for s in shapes.values()], fpn_channels, deconv_kernel)
    return RefineDet(
        backbone, neck, tcb, anchors,
        num_classes=num_classes, matcher=Matcher(iou_threshold, iou_threshold, True),
        neg_pos_ratio=neg_pos_ratio, filter_threshold=filter_threshold, refine_anchors=refine_anchors,
        negative_filtering=negative_filtering, input_size=input_size, postprocess=postprocess,
        image_mean=image_mean, image_std=image_std,
    )  # fmt: skip


#: the authors' VGG16 RefineDet (:func:`build_refinedet`); ``input_size`` 320 or 512 picks the paper's model
_VGG16_PAPER = {
    "batch_norm": False,
    "fc_channels": 1024,
    "fc_dilation": 3,
    "extra_channels": 512,
    "l2norm": True,
    "anchor_offset": 0.5,
    "round_anchors": False,
}

register_detector_family(
    "refinedet",
    build_refinedet,
    {
        "vgg16": {**_VGG16_PAPER, "input_size": 320},  # = refinedet320_vgg16
        "plain": {"fpn_channels": 64, "anchor_sizes": (16, 32, 64, 128)},
    },
    suffix="",
)
for _size in (320, 512):
    _name = f"refinedet{_size}_vgg16"
    register_model(_name)(
        make_detector_builder(
            _name, build_refinedet, BACKBONES["vgg16"], {**_VGG16_PAPER, "input_size": _size}
        )
    )
