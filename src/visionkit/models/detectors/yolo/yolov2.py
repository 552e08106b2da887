"""YOLOv2 (Redmon & Farhadi, 2017, "YOLO9000: Better, Faster, Stronger"; handbook §18).

Darknet-19 ``c5`` (stride 32) → two 3×3/1024 convolutions; the passthrough layer takes ``c4`` (stride 16)
through a 1×1/64 convolution and :func:`~.neck.reorg` (×4 channels, half the size) and concatenates it
*before* them (darknet's ``route -1,-4``) → 3×3/1024 → 1×1 output of ``5·(5 + K)`` channels: one level,
5 anchors from k-means. Boxes and the one-anchor assignment (best of the 5 shapes, at the centre's cell):
:mod:`.common`; class scores are a softmax.

Anchors are given in pixels like YOLOv3's (:func:`~.common.check_anchors`); darknet's cfg lists YOLOv2's in
grid cells (``anchors_grid`` = pixels / 32).

Loss (darknet's ``region`` layer, :func:`yolov2_loss`, sums divided by the batch size; each term's
gradient is darknet's ``delta``): ``½·λ_noobj·σ(t_o)²`` at every prediction that is not assigned and whose
decoded box has IoU ≤ ``ignore_threshold`` (0.6) with every ground truth; at assigned predictions
``½·λ_obj·(σ(t_o) − IoU(decoded box, ground truth))²`` (``rescore``; target 1 without it),
``½·λ_coord·(2 − w·h/(W·H))·‖(σ(t_x), σ(t_y), t_w, t_h) − targets‖²`` and ``λ_class`` × softmax
cross-entropy. Darknet's extra pull of every box towards its prior during the first 12 800 images is left
out (a warm-up, not part of the paper).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionkit.errors import ConfigError
from visionkit.models.detectors.base import training_boxes
from visionkit.models.detectors.postprocess import PostProcess
from visionkit.models.detectors.yolo.common import (
    GridPriors,
    assign_targets,
    decode_predictions,
    ignore_mask,
)
from visionkit.models.detectors.yolo.neck import REORG_MODES, darknet_conv, reorg
from visionkit.models.detectors.yolo.yolov3 import YOLOv3, box_loss_terms
from visionkit.ops.boxes import elementwise_box_iou
from visionkit.structures import ShapeSpec, Target

__all__ = ["VOC_ANCHORS", "YOLOv2", "YOLOv2Neck", "yolov2_loss"]

#: darknet's ``yolo-voc.cfg`` anchors (grid cells at stride 32) in pixels
VOC_ANCHORS = tuple(
    (round(w * 32, 3), round(h * 32, 3))
    for w, h in (
        (1.3221, 1.73145),
        (3.19275, 4.00944),
        (5.05587, 8.09892),
        (9.47112, 4.84053),
        (11.2364, 10.0071),
    )
)


class YOLOv2Neck(nn.Module):
    """Passthrough and the detection convolutions of YOLOv2 (module docstring).

    Args:
        in_shapes: ``{"c4": ShapeSpec, "c5": ShapeSpec}`` (strides 16 and 32).
        width: the 3×3 convolutions' width (1024); passthrough_width: the 1×1 before reorg (64).
        reorg_mode: ``"darknet"`` (darknet's channel order) or ``"space_to_depth"``.

    Shape:
        ``{"c4": [B, C4, 2h, 2w], "c5": [B, C5, h, w]} -> {"p5": [B, width, h, w]}``.

    Example:
        >>> from visionkit.structures import ShapeSpec
        >>> shapes = {"c4": ShapeSpec(8, 16), "c5": ShapeSpec(16, 32)}
        >>> neck = YOLOv2Neck(shapes, width=16, passthrough_width=4)
        >>> neck({"c4": torch.rand(1, 8, 4, 4), "c5": torch.rand(1, 16, 2, 2)})["p5"].shape
        torch.Size([1, 16, 2, 2])
    """

    def __init__(
        self,
        in_shapes: Mapping[str, ShapeSpec],
        width: int = 1024,
        passthrough_width: int = 64,
        reorg_mode: str = "darknet",
    ) -> None:
        super().__init__()
        if reorg_mode not in REORG_MODES:
            raise ConfigError(f"reorg={reorg_mode!r}: expected one of {list(REORG_MODES)}")
        c4, c5 = in_shapes["c4"], in_shapes["c5"]
        if c5.stride != 2 * c4.stride:
            raise ConfigError(f"YOLOv2 needs c5 at twice c4's stride, got {c4.stride} and {c5.stride}")
        self.reorg_mode, self.stride = reorg_mode, int(c5.stride)
        self.convs = nn.Sequential(darknet_conv(c5.channels, width, 3), darknet_conv(width, width, 3))
        self.passthrough = darknet_conv(c4.channels, passthrough_width, 1)
        self.fuse = darknet_conv(4 * passthrough_width + width, width, 3)
        self.width, self.out_names = width, ["p5"]

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {"p5": ShapeSpec(self.width, self.stride)}

    def forward(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        fine = reorg(self.passthrough(features["c4"]), 2, self.reorg_mode)
        return {"p5": self.fuse(torch.cat([fine, self.convs(features["c5"])], dim=1))}


def yolov2_loss(
    outputs: Tensor,
    priors: GridPriors,
    anchors: Tensor,
    targets: Sequence[Target],
    batch_hw: tuple[int, int],
    *,
    ignore_threshold: float = 0.6,
    scales: Mapping[str, float] | None = None,
    rescore: bool = True,
) -> dict[str, Tensor]:
    """YOLOv2 losses of a batch (module docstring).

    Args:
        outputs: ``Tensor[B, N, 5 + K]`` raw predictions of the one level; priors: its grid priors.
        anchors: ``Tensor[A, 2]`` pixels; targets: per image ``boxes`` xyxy pixels and ``labels``.
        batch_hw: the network input ``(H, W)``.
        scales: ``object``, ``noobject``, ``coord``, ``class`` (darknet's yolo-voc: 5, 1, 1, 1).

    Returns:
        ``{"box", "objectness", "noobjectness", "classification"}`` scalars.
    """
    s = {"object": 5.0, "noobject": 1.0, "coord": 1.0, "class": 1.0, **(scales or {})}
    terms: dict[str, list[Tensor]] = {"box": [], "objectness": [], "noobjectness": [], "classification": []}
    levels = [0] * anchors.shape[0]
    for raw, target in zip(outputs, targets, strict=True):
        boxes, labels = training_boxes(target)
        assigned = assign_targets(boxes, priors, anchors, levels)
        decoded = decode_predictions(raw[:, :4].detach(), priors)
        negative = ~ignore_mask(decoded, boxes, ignore_threshold)
        negative[assigned.index] = False
        confidence = torch.sigmoid(raw[:, 4])
        terms["noobjectness"].append(0.5 * s["noobject"] * confidence[negative].square().sum())
        matched = boxes[assigned.gt].to(raw.dtype)
        goal = (
            elementwise_box_iou(decoded[assigned.index], matched)
            if rescore
            else torch.ones_like(matched[:, 0])
        )
        terms["objectness"].append(0.5 * s["object"] * (confidence[assigned.index] - goal).square().sum())
        chosen = raw[assigned.index]
        terms["box"].append(s["coord"] * box_loss_terms(chosen, assigned.offsets, matched, batch_hw))
        terms["classification"].append(
            s["class"] * F.cross_entropy(chosen[:, 5:], labels[assigned.gt], reduction="sum")
        )
    return {name: torch.stack(values).sum() / len(outputs) for name, values in terms.items()}


class YOLOv2(YOLOv3):
    """YOLOv2: one level, softmax classes, the region-layer loss (module docstring); defaults in
    :func:`~visionkit.models.detectors.yolo.build_yolov2`.

    Args:
        backbone, neck (:class:`YOLOv2Neck`), head (:class:`~.neck.YOLOv3Head` with one level), anchors
        (``A`` pixel ``(w, h)`` pairs), num_classes, postprocess: as :class:`~.yolov3.YOLOv3`.
        ignore_threshold: 0.6 (darknet's ``thresh``); object_scale, noobject_scale, coord_scale,
        class_scale: the loss weights (5, 1, 1, 1); rescore: objectness target = IoU (``True``) or 1.

    Forward:
        Training losses ``{"box", "objectness", "noobjectness", "classification"}``; evaluation scores
        ``σ(t_o)·softmax(classes)``.

    Example:
        >>> from visionkit.models import create_model
        >>> model = create_model("yolov2_plain", num_classes=3).eval()
        >>> model([torch.rand(3, 64, 96)])[0]["boxes"].shape[1]
        4
    """

    def __init__(
        self,
        backbone: nn.Module,
        neck: nn.Module,
        head: nn.Module,
        anchors: Sequence[Sequence[float]],
        *,
        num_classes: int,
        ignore_threshold: float = 0.6,
        object_scale: float = 5.0,
        noobject_scale: float = 1.0,
        coord_scale: float = 1.0,
        class_scale: float = 1.0,
        rescore: bool = True,
        postprocess: PostProcess | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            backbone,
            neck,
            head,
            anchors,
            num_classes=num_classes,
            anchors_per_level=(len(anchors),),
            ignore_threshold=ignore_threshold,
            postprocess=postprocess,
            **options,
        )
        self.scales = {
            "object": object_scale,
            "noobject": noobject_scale,
            "coord": coord_scale,
            "class": class_scale,
        }
        for name, value in self.scales.items():
            if not value >= 0:
                raise ConfigError(f"{name}_scale={value!r}: expected a number >= 0")
        self.rescore = rescore

    @property
    def anchors_grid(self) -> Tensor:
        """The anchors in grid cells of the output level (darknet's YOLOv2 cfg unit)."""
        return self.anchors / self.feature_shapes["p5"].stride

    def losses(
        self,
        batch: Tensor,
        sizes: list[tuple[int, int]],
        features: dict[str, Tensor],
        targets: Sequence[Target],
    ) -> dict[str, Tensor]:
        outputs, priors, hw = self._loss_inputs(batch, features)
        return yolov2_loss(
            outputs,
            priors,
            self.anchors,
            targets,
            hw,
            ignore_threshold=self.ignore_threshold,
            scales=self.scales,
            rescore=self.rescore,
        )

    def scores(self, outputs: Tensor) -> Tensor:
        """``Tensor[..., N, K]`` confidences ``σ(t_o)·softmax(classes)``."""
        return torch.sigmoid(outputs[..., 4:5]) * torch.softmax(outputs[..., 5:], dim=-1)
