"""Registered FCNs: ``fcn32s_vgg16``, ``fcn16s_vgg16``, ``fcn8s_vgg16`` (the paper's nets),
``fcn8s_resnet50``, ``fcn8s_mobilenet_v2``, and the CPU-sized ``fcn32s_small``, ``fcn16s_small``,
``fcn8s_small``.

VGG FCNs scale their skips as the authors' at-once net (pool4 × 0.01, pool3 × 1e-4): unnormalised VGG
features are large next to the class scores. The BN backbones (ResNet, MobileNetV2, the small VGG) take
their skips unscaled.

Example:
    >>> from visionkit.models import create_model, list_models
    >>> list_models("fcn*")[:3]
    ['fcn16s_small', 'fcn16s_vgg16', 'fcn32s_small']
    >>> create_model("fcn16s_vgg16", num_classes=21, alignment="caffe").skip_offsets  # score_pool4 cut by 5
    [(0, 5)]
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import TypeVar

from visionkit.models.backbones.base import Backbone
from visionkit.models.registry import create_model, list_models, register_model
from visionkit.models.segmentation.encoders import VGG_CONFIGS, Alignment, BackboneEncoder, VGGEncoder
from visionkit.models.segmentation.fcn import FCN

__all__ = ["SMALL_WIDTHS", "list_segmenters", "register_segmenter"]

Builder = TypeVar("Builder", bound=Callable[..., FCN])
_SEGMENTERS: set[str] = set()


def register_segmenter(name: str | None = None) -> Callable[[Builder], Builder]:
    """:func:`~visionkit.models.register_model` for a builder whose models meet the segmentation contract
    (:mod:`visionkit.models.segmentation.fcn`); :func:`list_segmenters` lists them."""

    def decorator(builder: Builder) -> Builder:
        register_model(name)(builder)
        _SEGMENTERS.add(name or builder.__name__)
        return builder

    return decorator


def list_segmenters(pattern: str = "*") -> list[str]:
    """Sorted names of the registered segmentation models matching ``pattern``.

    Example:
        >>> list_segmenters("fcn8s_*")
        ['fcn8s_mobilenet_v2', 'fcn8s_resnet50', 'fcn8s_small', 'fcn8s_vgg16']
    """
    list_models()  # registers the built-in models
    return sorted(name for name in _SEGMENTERS if fnmatch.fnmatchcase(name, pattern))


#: VGG skips of the at-once net, finest last: pool4 × 0.01, pool3 × 1e-4
VGG_SKIP_SCALES = (0.01, 1e-4)
#: widths of the small VGG's five stages (one conv each, BN, 2×2 max-pool after each)
SMALL_WIDTHS = (16, 32, 64, 96, 128)


def _skips(variant: int, names: tuple[str, str]) -> tuple[str, ...]:
    return {32: (), 16: names[:1], 8: names}[variant]


def _vgg16_fcn(
    variant: int, num_classes: int, alignment: Alignment, learn_upsampling: bool, dropout: float
) -> FCN:
    encoder = VGGEncoder(VGG_CONFIGS[16], alignment=alignment, dropout=dropout)
    skips = _skips(variant, ("pool4", "pool3"))
    return FCN(
        encoder,
        num_classes,
        top="fc7",
        skips=skips,
        skip_scales=VGG_SKIP_SCALES[: len(skips)],
        learn_upsampling=learn_upsampling,
    )


@register_segmenter()
def fcn32s_vgg16(
    *,
    num_classes: int = 21,
    alignment: Alignment = "same",
    learn_upsampling: bool = False,
    dropout: float = 0.5,
) -> FCN:
    """FCN-32s on a convolutionalised VGG16 (134 M parameters at 21 classes)."""
    return _vgg16_fcn(32, num_classes, alignment, learn_upsampling, dropout)


@register_segmenter()
def fcn16s_vgg16(
    *,
    num_classes: int = 21,
    alignment: Alignment = "same",
    learn_upsampling: bool = False,
    dropout: float = 0.5,
) -> FCN:
    """FCN-16s on a convolutionalised VGG16: one skip from pool4 (× 0.01)."""
    return _vgg16_fcn(16, num_classes, alignment, learn_upsampling, dropout)


@register_segmenter()
def fcn8s_vgg16(
    *,
    num_classes: int = 21,
    alignment: Alignment = "same",
    learn_upsampling: bool = False,
    dropout: float = 0.5,
) -> FCN:
    """FCN-8s on a convolutionalised VGG16: skips from pool4 (× 0.01) and pool3 (× 1e-4), at once."""
    return _vgg16_fcn(8, num_classes, alignment, learn_upsampling, dropout)


def _backbone_fcn(backbone: Backbone, num_classes: int, learn_upsampling: bool) -> FCN:
    encoder = BackboneEncoder(backbone)
    return FCN(encoder, num_classes, top="c5", skips=("c4", "c3"), learn_upsampling=learn_upsampling)


@register_segmenter()
def fcn8s_resnet50(*, num_classes: int = 21, learn_upsampling: bool = False) -> FCN:
    """FCN-8s on ResNet-50's c5 (stride 32) with skips from c4 and c3."""
    backbone = create_model("resnet50", features_only=True)
    return _backbone_fcn(backbone, num_classes, learn_upsampling)  # type: ignore[arg-type]


@register_segmenter()
def fcn8s_mobilenet_v2(
    *, num_classes: int = 21, width_multiplier: float = 1.0, learn_upsampling: bool = False
) -> FCN:
    """FCN-8s on MobileNetV2's c5 (the 1280-channel stride-32 layer) with skips from c4 and c3."""
    backbone = create_model("mobilenet_v2", features_only=True, width_multiplier=width_multiplier)
    return _backbone_fcn(backbone, num_classes, learn_upsampling)  # type: ignore[arg-type]


def _small_fcn(
    variant: int, num_classes: int, widths: tuple[int, ...], learn_upsampling: bool, dropout: float
) -> FCN:
    if len(widths) != 5 or min(widths) < 1:
        raise ValueError(f"widths must be five positive stage widths, got {widths}")
    config: list[int | str] = [item for width in widths for item in (width, "M")]
    encoder = VGGEncoder(config, batch_norm=True, fc_channels=widths[-1], fc_kernel=3, dropout=dropout)
    skips = _skips(variant, ("pool4", "pool3"))
    return FCN(encoder, num_classes, top="fc7", skips=skips, learn_upsampling=learn_upsampling)


@register_segmenter()
def fcn32s_small(
    *,
    num_classes: int = 4,
    widths: tuple[int, ...] = SMALL_WIDTHS,
    learn_upsampling: bool = False,
    dropout: float = 0.0,
) -> FCN:
    """A CPU-sized FCN-32s: a five-stage VGG with BN (one 3×3 conv per stage), 3×3 ``fc6``."""
    return _small_fcn(32, num_classes, widths, learn_upsampling, dropout)


@register_segmenter()
def fcn16s_small(
    *,
    num_classes: int = 4,
    widths: tuple[int, ...] = SMALL_WIDTHS,
    learn_upsampling: bool = False,
    dropout: float = 0.0,
) -> FCN:
    """The small FCN-16s (pool4 skip)."""
    return _small_fcn(16, num_classes, widths, learn_upsampling, dropout)


@register_segmenter()
def fcn8s_small(
    *,
    num_classes: int = 4,
    widths: tuple[int, ...] = SMALL_WIDTHS,
    learn_upsampling: bool = False,
    dropout: float = 0.0,
) -> FCN:
    """The small FCN-8s (pool4 and pool3 skips): the demo's and the tests' segmentation model."""
    return _small_fcn(8, num_classes, widths, learn_upsampling, dropout)
