"""The detection recipe: every setting of a run, checked when it is made (``visionkit train detect``).

Example:
    >>> DetectRecipe(epochs=2).epochs
    2
    >>> DetectRecipe(epochs=-1)
    Traceback (most recent call last):
    ...
    visionkit.errors.ConfigError: epochs=-1: expected an integer >= 1
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Literal

from visionkit.engine.config import check_types, is_integer, is_number, require
from visionkit.engine.runs import check_run_fields, check_training_fields, recipe_with_resume
from visionkit.errors import ConfigError
from visionkit.models import get_model_builder, list_models
from visionkit.models.detectors.postprocess import NMS_METHODS, NMSMethod

__all__ = ["MODEL_OPTIONS", "RESUME_FREE_KEYS", "DetectRecipe", "recipe_from_overrides"]

#: Recipe keys passed to the model builder when set (``None`` / empty: the builder's own default).
MODEL_OPTIONS = (
    "width_multiplier",
    "fpn_channels",
    "fpn",
    "head_convs",
    "representation_size",
    "anchor_sizes",
    "box_loss",
    "roi_op",
    "fusion",
    "ignore_threshold",
    "objectness_prior",
    "xy_loss",
    "class_activation",
    "assign_threshold",
    "neck_widths",
    "scales",
    "refine_anchors",
    "negative_filtering",
)
#: Keys that may differ between a run and its resumption (they do not change what is computed).
RESUME_FREE_KEYS = frozenset({"resume", "progress", "workers", "threads", "device", "tensorboard"})


@dataclass(frozen=True)
class DetectRecipe:
    """Everything a detection run needs; every field is a ``key=value`` override, checked at construction
    (a :class:`~visionkit.errors.ConfigError` names the key, the value and what is valid).

    Model options left ``None`` / empty take the chosen builder's default. ``time_limit`` (seconds, 0: none)
    stops training cleanly, evaluates and saves; the learning-rate schedule then ends with the budget.
    """

    model: str = "retinanet_plain_fpn"
    data: str = "shapes"  # "shapes", a COCO JSON, a VOC folder, a YOLO folder or a data.yaml (data_format)
    data_format: Literal["auto", "shapes", "coco", "voc", "yolo", "yaml"] = "auto"
    val_data: str = ""  # validation set for file datasets (empty: validate on the training set)
    num_train: int = 512  # shapes only
    num_val: int = 128  # shapes only
    image_size: int = 128  # shapes only
    crowded: bool = False  # shapes only: train and validate on the crowded split
    num_crowded: int = 0  # shapes only: crowded images added to the training set (the demo's mix)
    min_size: int = 0  # > 0: work at this shorter side (resized inside the model; boxes stay in pixels)
    max_size: int = 0  # with min_size: cap for the longer side (0: no cap)
    letterbox: bool = False  # with min_size: darknet's centred letterbox on a min_size square (YOLO)
    multiscale: tuple[int, ...] = ()  # low,high (multiples of 32): training size redrawn per period
    multiscale_every: int = 10  # multiscale: batches per drawn size (darknet: 10)
    epochs: int = 12
    time_limit: float = 0.0  # seconds of training (0: no limit)
    batch_size: int = 8
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    clip_norm: float = 10.0
    ema_decay: float = 0.0  # 0: no EMA; e.g. 0.999 (ramped up over the first steps)
    hflip: float = 0.5
    scale_jitter: tuple[float, ...] = ()  # (low, high) resize factor; empty: off
    mosaic: float = 0.0  # probability of a 4-image mosaic
    width_multiplier: float | None = None
    fpn_channels: int | None = None
    fpn: bool | None = None  # RetinaNet: false = one level from c5 with every anchor on it (§9)
    head_convs: int | None = None
    representation_size: int | None = None
    anchor_sizes: tuple[float, ...] = ()  # one per level; empty: the model's default
    anchors: tuple[float, ...] = ()  # YOLO: w1,h1,w2,h2,... pixels; empty: k-means or the model's default
    anchor_kmeans: bool = True  # YOLO without anchors=: 1-IoU k-means of the training boxes at run start
    anchor_count: int = 0  # YOLO k-means: this many anchors (0: the model's own number; v3 3 per scale)
    fusion: Literal["concat", "sum"] | None = None  # YOLOv3: upsampled map concatenated (paper) or summed
    ignore_threshold: float | None = None  # YOLO: no objectness negative above this IoU (v3 0.5, v2 0.6)
    objectness_prior: float | None = None  # YOLO: initial objectness probability (0: the papers' bias 0)
    xy_loss: Literal["sse", "bce"] | None = None  # YOLOv3 box centre: the paper's SSE or darknet's BCE
    class_activation: Literal["sigmoid", "softmax"] | None = None  # YOLOv3 classes: the paper's or v2's
    assign_threshold: float | None = None  # YOLOv3: also anchors of shape IoU > this (darknet iou_thresh)
    neck_widths: tuple[int, ...] = ()  # YOLOv3: the neck's 1x1 widths at strides 8, 16, 32 (empty: model's)
    scales: int | None = None  # YOLOv3: 3 detection scales (the paper) or 1 (stride 32 only, as YOLOv2)
    # RetinaNet: l1 | smooth_l1 | giou; YOLOv3: sse (the paper) | giou | diou | ciou (darknet's iou_loss)
    box_loss: Literal["l1", "smooth_l1", "sse", "giou", "diou", "ciou"] | None = None
    roi_op: Literal["align", "pool"] | None = None  # two-stage detectors: RoI Align or RoI Pool (§24)
    refine_anchors: bool | None = None  # RefineDet: ODM from the ARM-refined anchors (false: the originals)
    negative_filtering: bool | None = None  # RefineDet: anchors with ARM background > 0.99 leave the ODM
    score_threshold: float = 0.05
    nms_method: NMSMethod = "hard"
    nms_threshold: float = 0.5
    soft_nms_sigma: float = 0.5
    detections_per_image: int = 100
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N | mps
    amp: bool = False
    channels_last: bool = False
    backbone_weights: str = ""  # a local torchvision-format checkpoint of the backbone
    freeze_at: int = -1  # -1: nothing frozen; N: the stem and the first N stages
    eval_every: int = 1  # epochs between validations (the last epoch is always evaluated)
    patience: int = 0  # stop after this many evaluations without a better COCO AP (0: never)
    resume: str = ""  # a run folder to continue exactly
    tensorboard: bool = True
    on_corrupt: Literal["raise", "skip"] = "raise"
    seed: int = 0
    workers: int = 0
    threads: int = 0  # torch threads (0: torch's default)
    progress: bool = True

    def __post_init__(self) -> None:
        check_types(self)
        _check_model(self)
        _check_data(self)
        check_training_fields(self)
        _check_postprocess(self)
        check_run_fields(self)


def _check_model(r: DetectRecipe) -> None:
    names = list_models()
    if r.model not in names:
        close = difflib.get_close_matches(r.model, names, n=4)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        detectors = [
            n for n in names if n.startswith(("retinanet", "fasterrcnn", "yolo", "cascade", "refinedet"))
        ]
        raise ConfigError(f"model={r.model!r}: unknown; {hint}detectors: {', '.join(detectors)}")
    accepted = inspect.signature(get_model_builder(r.model)).parameters
    require("num_classes" in accepted, "model", r.model, "a detector (its builder takes num_classes)")
    for key in MODEL_OPTIONS:
        value = getattr(r, key)
        if value is not None and value != () and key not in accepted:
            raise ConfigError(f"{key}={value!r}: model {r.model!r} has no such option")
    require(
        r.width_multiplier is None or is_number(r.width_multiplier, 0, 8, open_low=True),
        "width_multiplier",
        r.width_multiplier,
        "a number in (0, 8]",
    )
    for key in ("fpn_channels", "head_convs", "representation_size"):
        value = getattr(r, key)
        require(value is None or is_integer(value, 1), key, value, "an integer >= 1")
    require(
        all(is_number(s, 0, open_low=True) for s in r.anchor_sizes),
        "anchor_sizes",
        r.anchor_sizes,
        "positive sizes in pixels, one per level",
    )
    require(
        not r.anchors or (len(r.anchors) % 2 == 0 and all(is_number(v, 0, open_low=True) for v in r.anchors)),
        "anchors",
        r.anchors,
        "(width, height) pairs of positive pixel sizes: w1,h1,w2,h2,...",
    )
    require(is_integer(r.anchor_count, 0), "anchor_count", r.anchor_count, "an integer >= 0 (0: the model's)")
    if r.anchor_count and "anchors" not in accepted:
        raise ConfigError(f"anchor_count={r.anchor_count!r}: model {r.model!r} takes no anchors")
    if r.anchors and "anchors" not in accepted:
        raise ConfigError(f"anchors={r.anchors!r}: model {r.model!r} has no such option")
    require(
        r.ignore_threshold is None or is_number(r.ignore_threshold, 0, 1),
        "ignore_threshold",
        r.ignore_threshold,
        "a number in [0, 1]",
    )
    require(
        all(is_integer(w, 1) for w in r.neck_widths) and len(r.neck_widths) in (0, 3),
        "neck_widths",
        r.neck_widths,
        "three integers >= 1 (strides 8, 16, 32)",
    )
    require(r.scales in (None, 1, 3), "scales", r.scales, "3 (the paper) or 1 (stride 32 only)")
    require(
        r.assign_threshold is None or is_number(r.assign_threshold, 0, 1),
        "assign_threshold",
        r.assign_threshold,
        "a number in [0, 1] (1: one anchor per ground truth, the paper)",
    )
    require(
        r.objectness_prior is None or (is_number(r.objectness_prior, 0, 1) and r.objectness_prior < 1),
        "objectness_prior",
        r.objectness_prior,
        "0 (off) or a probability in (0, 1)",
    )
    require(
        is_integer(r.freeze_at, -1) and r.freeze_at <= 4,
        "freeze_at",
        r.freeze_at,
        "-1 (nothing frozen) or 0..4 (the stem and that many stages)",
    )


def _check_data(r: DetectRecipe) -> None:
    require(bool(r.data.strip()), "data", r.data, "'shapes' or a dataset path")
    shapes = r.data == "shapes"
    require(
        not (shapes and r.val_data), "val_data", r.val_data, "empty with data=shapes (shapes makes its own)"
    )
    require(
        r.data_format in ("auto", "shapes") if shapes else r.data_format != "shapes",
        "data_format",
        r.data_format,
        "'shapes' (or auto) with data=shapes, and coco|voc|yolo|auto with a dataset path",
    )
    for key in ("num_train", "num_val"):
        require(is_integer(getattr(r, key), 1), key, getattr(r, key), "an integer >= 1")
    require(is_integer(r.num_crowded, 0), "num_crowded", r.num_crowded, "an integer >= 0")
    require(is_integer(r.image_size, 32), "image_size", r.image_size, "an integer >= 32")
    require(is_integer(r.min_size, 0), "min_size", r.min_size, "an integer >= 0 (0: native size)")
    require(is_integer(r.max_size, 0), "max_size", r.max_size, "an integer >= 0 (0: no cap)")
    if r.max_size:
        require(
            r.min_size > 0, "max_size", r.max_size, "0 unless min_size > 0 (the shorter side to resize to)"
        )
        require(r.max_size >= r.min_size, "max_size", r.max_size, f"0 or >= min_size ({r.min_size})")
    require(is_number(r.hflip, 0, 1), "hflip", r.hflip, "a probability in [0, 1]")
    require(is_number(r.mosaic, 0, 1), "mosaic", r.mosaic, "a probability in [0, 1]")
    jitter = r.scale_jitter
    require(
        jitter == ()
        or (
            len(jitter) == 2
            and all(is_number(v, 0, 10, open_low=True) for v in jitter)
            and jitter[0] <= jitter[1]
        ),
        "scale_jitter",
        jitter,
        "empty (off) or two factors low,high with 0 < low <= high <= 10",
    )
    _check_input_scale(r)


def _check_input_scale(r: DetectRecipe) -> None:
    """letterbox / multiscale (darknet's YOLO input, :class:`~visionkit.models.detectors.ResizedInput`)."""
    if r.letterbox:
        require(r.min_size > 0, "letterbox", r.letterbox, "false unless min_size > 0 (the square's side)")
        require(
            not r.max_size, "letterbox", r.letterbox, "false with max_size (min_size is the square's side)"
        )
    low_high = r.multiscale
    require(
        low_high == ()
        or (
            len(low_high) == 2
            and all(is_integer(v, 32) and v % 32 == 0 for v in low_high)
            and low_high[0] <= low_high[1]
            and r.min_size > 0
        ),
        "multiscale",
        low_high,
        "empty (off) or low,high: multiples of 32, 32 <= low <= high, with min_size > 0",
    )
    require(is_integer(r.multiscale_every, 1), "multiscale_every", r.multiscale_every, "an integer >= 1")


def _check_postprocess(r: DetectRecipe) -> None:
    require(
        is_number(r.score_threshold, 0, 1) and r.score_threshold < 1,
        "score_threshold",
        r.score_threshold,
        "a number in [0, 1)",
    )
    require(r.nms_method in NMS_METHODS, "nms_method", r.nms_method, f"one of {list(NMS_METHODS)}")
    require(is_number(r.nms_threshold, 0, 1), "nms_threshold", r.nms_threshold, "a number in [0, 1]")
    require(is_number(r.soft_nms_sigma, 0, open_low=True), "soft_nms_sigma", r.soft_nms_sigma, "a number > 0")
    require(
        is_integer(r.detections_per_image, 1),
        "detections_per_image",
        r.detections_per_image,
        "an integer >= 1",
    )


def recipe_from_overrides(overrides: list[str] | tuple[str, ...]) -> DetectRecipe:
    """The recipe of ``key=value`` overrides: on the defaults, or — with ``resume=RUN_DIR`` — on that run's
    own recipe (``config.json``), so ``resume=RUN_DIR`` alone continues the run as it was.

    Example:
        >>> recipe_from_overrides(["epochs=3", "lr=0.01"]).lr
        0.01
    """
    return recipe_with_resume(DetectRecipe, overrides)
