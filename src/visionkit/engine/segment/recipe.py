"""The segmentation recipe: every setting of a run, checked when it is made (``visionkit train segment``).

Example:
    >>> SegmentRecipe(model="fcn16s_small").model
    'fcn16s_small'
    >>> SegmentRecipe(model="retinanet_plain_fpn")
    Traceback (most recent call last):
    ...
    visionkit.errors.ConfigError: model='retinanet_plain_fpn': not a segmentation model; ...
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from visionkit.engine.config import check_types, is_integer, is_number, require
from visionkit.engine.runs import check_run_fields, check_training_fields, recipe_with_resume
from visionkit.errors import ConfigError
from visionkit.models import get_model_builder
from visionkit.models.segmentation import list_segmenters

__all__ = ["MODEL_OPTIONS", "RESUME_FREE_KEYS", "SegmentRecipe", "data_source", "recipe_from_overrides"]

#: Recipe keys passed to the model builder when set (``None`` / empty: the builder's own default).
MODEL_OPTIONS = ("alignment", "learn_upsampling", "width_multiplier", "widths", "dropout")
#: Keys that may differ between a run and its resumption (they do not change what is computed).
RESUME_FREE_KEYS = frozenset({"resume", "progress", "workers", "threads", "device", "tensorboard"})
DATA_KINDS = ("voc", "coco")


@dataclass(frozen=True)
class SegmentRecipe:
    """Everything a segmentation run needs; every field is a ``key=value`` override, checked at
    construction (a :class:`~visionkit.errors.ConfigError` names the key, the value and what is valid).

    ``data`` is ``shapes`` (generated), ``voc:FOLDER`` (``SegmentationClass`` palette PNGs) or
    ``coco:FILE.json`` (instance polygons rasterised; images in ``image_root``, default ``images/`` beside
    the file). Without ``val_data`` / ``val_image_set`` a file dataset is validated on its training images.
    """

    model: str = "fcn8s_small"
    data: str = "shapes"
    val_data: str = ""  # voc:FOLDER or coco:FILE.json (file datasets only)
    image_set: str = ""  # VOC split of ImageSets/Segmentation for training (empty: every mask)
    val_image_set: str = ""  # VOC split for validation (empty: val_data, else the training images)
    image_root: str = ""  # COCO image folder (empty: images/ beside the JSON)
    num_train: int = 512  # shapes only
    num_val: int = 128  # shapes only
    image_size: int = 128  # shapes only
    crop_size: int = 0  # > 0: train on random square crops (padded with void where the image ends)
    scale_jitter: tuple[float, ...] = ()  # (low, high) resize factor for training; empty: off
    hflip: float = 0.5
    epochs: int = 30
    time_limit: float = 0.0  # seconds of training (0: no limit)
    batch_size: int = 8
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = 3e-3
    momentum: float = 0.9  # sgd only
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    clip_norm: float = 10.0
    ema_decay: float = 0.0  # 0: no EMA; e.g. 0.999 (ramped up over the first steps)
    alignment: Literal["same", "caffe"] | None = None  # VGG16 FCNs: visionkit's geometry or Caffe's
    learn_upsampling: bool | None = None  # learn the ×2 / final kernels (default: fixed bilinear)
    width_multiplier: float | None = None  # fcn8s_mobilenet_v2
    widths: tuple[int, ...] = ()  # the small FCNs' five stage widths
    dropout: float | None = None
    boundary_width: int = 3  # pixels on each side of a class edge scored by the boundary metrics
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N | mps
    amp: bool = False
    channels_last: bool = False
    backbone_weights: str = ""  # a local torchvision-format classification checkpoint of the encoder
    eval_every: int = 1  # epochs between validations (the last epoch is always evaluated)
    patience: int = 0  # stop after this many evaluations without a better mIoU (0: never)
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
        check_run_fields(self)


def _check_model(r: SegmentRecipe) -> None:
    names = list_segmenters()
    if r.model not in names:
        close = difflib.get_close_matches(r.model, names, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(
            f"model={r.model!r}: not a segmentation model; {hint}segmentation models: {', '.join(names)}"
        )
    accepted = inspect.signature(get_model_builder(r.model)).parameters
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
    require(
        r.widths == () or (len(r.widths) == 5 and all(is_integer(w, 1) for w in r.widths)),
        "widths",
        r.widths,
        "empty (the default) or five stage widths >= 1",
    )
    require(
        r.dropout is None or (is_number(r.dropout, 0, 1) and r.dropout < 1), "dropout", r.dropout, "in [0, 1)"
    )


def data_source(text: str, key: str = "data") -> tuple[str, Path]:
    """``("voc", FOLDER)`` or ``("coco", FILE)`` of ``voc:FOLDER`` / ``coco:FILE`` (the form only; whether
    the path exists is checked when the data is built).

    Example:
        >>> data_source("voc:VOCdevkit/VOC2012")
        ('voc', PosixPath('VOCdevkit/VOC2012'))
        >>> data_source("VOC2012")
        Traceback (most recent call last):
        ...
        visionkit.errors.ConfigError: data='VOC2012': expected 'shapes', 'voc:FOLDER' or 'coco:FILE.json'
    """
    kind, separator, path = text.partition(":")
    if not separator or kind not in DATA_KINDS or not path.strip():
        raise ConfigError(f"{key}={text!r}: expected 'shapes', 'voc:FOLDER' or 'coco:FILE.json'")
    return kind, Path(path.strip())


def _check_data(r: SegmentRecipe) -> None:
    if r.data != "shapes":
        kind, _ = data_source(r.data)
        if r.val_data:
            data_source(r.val_data, "val_data")
        require(
            not (kind != "voc" and (r.image_set or r.val_image_set)),
            "image_set",
            r.image_set,
            "empty unless data=voc:...",
        )
        require(
            not (kind != "coco" and r.image_root), "image_root", r.image_root, "empty unless data=coco:..."
        )
    else:
        for key in ("val_data", "image_set", "val_image_set", "image_root"):
            require(
                not getattr(r, key), key, getattr(r, key), "empty with data=shapes (shapes makes its own)"
            )
    for key in ("num_train", "num_val"):
        require(is_integer(getattr(r, key), 1), key, getattr(r, key), "an integer >= 1")
    require(is_integer(r.image_size, 32), "image_size", r.image_size, "an integer >= 32")
    require(is_integer(r.crop_size, 0), "crop_size", r.crop_size, "an integer >= 0 (0: no crop)")
    require(is_integer(r.boundary_width, 1), "boundary_width", r.boundary_width, "an integer >= 1 (pixels)")
    require(is_number(r.hflip, 0, 1), "hflip", r.hflip, "a probability in [0, 1]")
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


def recipe_from_overrides(overrides: list[str] | tuple[str, ...]) -> SegmentRecipe:
    """The recipe of ``key=value`` overrides: on the defaults, or — with ``resume=RUN_DIR`` — on that run's
    own recipe (``config.json``).

    Example:
        >>> recipe_from_overrides(["epochs=3", "model=fcn32s_small"]).model
        'fcn32s_small'
    """
    return recipe_with_resume(SegmentRecipe, overrides)
