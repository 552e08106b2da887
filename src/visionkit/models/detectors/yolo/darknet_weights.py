"""Darknet ``.weights`` files: read a user's darknet checkpoint into our YOLOv3 / YOLOv2, and write one.

The official binary layout (darknet ``parser.c``: ``save_weights`` / ``load_weights``), little-endian:

* header: ``major``, ``minor``, ``revision`` as int32, then ``seen`` (images trained on) as int64 when
  ``major·10 + minor >= 2`` (and both < 1000), else as int32;
* then, per ``[convolutional]`` layer in cfg order: with batch norm its ``biases`` (β), ``scales`` (γ),
  ``rolling_mean``, ``rolling_variance`` (``n`` float32 each), without batch norm its ``biases``; then the
  kernels ``n × c × k × k`` float32 (PyTorch's ``[out, in, kh, kw]`` order).

The cfg order of our models (:func:`darknet_layers`): the backbone's convolutions in module order (Darknet-53:
stem, then per stage the 3×3/2 conv and each residual's 1×1, 3×3; Darknet-19 without its classifier), then
for YOLOv3, coarse scale first, the five-conv set, the head's 3×3 and 1×1 output, and the lateral 1×1 before
the upsampling (``yolov3.cfg``); for YOLOv2 the two 3×3/1024, the passthrough 1×1/64, the 3×3 after the
concatenation and the 1×1 output (``yolo-voc.cfg``). Darknet's batch norm divides by ``sqrt(var) + 1e-6``
where PyTorch uses ``sqrt(var + 1e-5)``; the weights are the same numbers.

Example:
    >>> import io
    >>> from visionkit.models import create_model
    >>> model = create_model("yolov2_plain", num_classes=2)
    >>> buffer = io.BytesIO()
    >>> save_darknet_weights(model, buffer, seen=64)
    >>> _ = buffer.seek(0)
    >>> load_darknet_weights(create_model("yolov2_plain", num_classes=2), buffer)
    {'major': 0, 'minor': 2, 'revision': 0, 'seen': 64, 'layers': 14}
"""

from __future__ import annotations

import io
import os
import struct
from typing import BinaryIO

import numpy as np
import torch
from torch import nn

from visionkit.errors import CheckpointError

__all__ = ["darknet_layers", "load_darknet_weights", "save_darknet_weights"]

Layer = tuple[nn.Conv2d, nn.BatchNorm2d | None]


def _pairs(module: nn.Module) -> list[Layer]:
    """(conv, the batch norm right after it or None) for every conv inside ``module``, in module order."""
    layers: list[Layer] = []
    modules = list(module.modules())
    for index, item in enumerate(modules):
        if isinstance(item, nn.Conv2d):
            following = modules[index + 1] if index + 1 < len(modules) else None
            layers.append((item, following if isinstance(following, nn.BatchNorm2d) else None))
    return layers


def darknet_layers(model: nn.Module) -> list[Layer]:
    """The ``[convolutional]`` layers of a YOLOv3 / YOLOv2 (or a Darknet backbone) in darknet cfg order."""
    from visionkit.models.detectors.yolo.yolov2 import YOLOv2Neck
    from visionkit.models.detectors.yolo.yolov3 import YOLOv3

    if not isinstance(model, YOLOv3):
        return _pairs(model)
    layers = _pairs(model.backbone)
    neck, blocks = model.neck, list(model.head.blocks)
    if isinstance(neck, YOLOv2Neck):
        return layers + _pairs(neck.convs) + _pairs(neck.passthrough) + _pairs(neck.fuse) + _pairs(blocks[0])
    for position, conv_set in enumerate(neck.sets):  # coarse to fine
        layers += _pairs(conv_set) + _pairs(blocks[len(blocks) - 1 - position])
        if position < len(neck.laterals):
            layers += _pairs(neck.laterals[position])
    return layers


def _open(target: str | os.PathLike[str] | BinaryIO, mode: str) -> tuple[BinaryIO, bool]:
    if isinstance(target, (str, os.PathLike)):
        return open(target, mode), True  # closed by the caller
    return target, False


def _name(target: object) -> str:
    return str(target) if isinstance(target, (str, os.PathLike)) else "<stream>"


def load_darknet_weights(model: nn.Module, source: str | os.PathLike[str] | BinaryIO) -> dict[str, int]:
    """Copy a darknet ``.weights`` file into ``model`` (module docstring). Returns the header and the
    number of layers read.

    Raises:
        CheckpointError: a missing file, a truncated header or layer (naming the layer and what it
            needs), or bytes left over after the last layer (the file is for a different model).
    """
    try:
        handle, owned = _open(source, "rb")
    except OSError as error:
        raise CheckpointError(f"darknet weights {_name(source)!r}: cannot open ({error})") from None
    try:
        data = handle.read()
    finally:
        if owned:
            handle.close()
    name = _name(source)
    if len(data) < 16:
        raise CheckpointError(f"darknet weights {name!r}: {len(data)} bytes, too short for the header")
    major, minor, revision = struct.unpack_from("<3i", data, 0)
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    (seen,) = struct.unpack_from("<q" if wide else "<i", data, 12)
    offset = 20 if wide else 16
    floats = np.frombuffer(data, dtype="<f4", offset=offset, count=(len(data) - offset) // 4)
    position = 0
    layers = darknet_layers(model)
    with torch.no_grad():
        for index, (conv, norm) in enumerate(layers):
            targets = (
                [norm.bias, norm.weight, norm.running_mean, norm.running_var]
                if norm is not None
                else [conv.bias]
            )
            targets.append(conv.weight)
            for tensor in targets:
                assert tensor is not None  # a conv without batch norm has a bias in these models
                count = tensor.numel()
                if position + count > floats.size:
                    raise CheckpointError(
                        f"darknet weights {name!r}: truncated at layer {index} of {len(layers)} "
                        f"(needs {count} more values, {floats.size - position} left)"
                    )
                values = torch.from_numpy(floats[position : position + count].copy())
                tensor.copy_(values.view_as(tensor))
                position += count
    if position != floats.size or (len(data) - offset) % 4:
        raise CheckpointError(
            f"darknet weights {name!r}: {floats.size - position} values left after the model's "
            f"{len(layers)} layers (a file for another model or cfg)"
        )
    return {"major": major, "minor": minor, "revision": revision, "seen": int(seen), "layers": len(layers)}


def save_darknet_weights(
    model: nn.Module,
    target: str | os.PathLike[str] | BinaryIO,
    *,
    seen: int = 0,
    version: tuple[int, int, int] = (0, 2, 0),
) -> None:
    """Write ``model`` as a darknet ``.weights`` file (header ``version``, ``seen`` as int64)."""
    major, minor, revision = version
    out = io.BytesIO()
    out.write(struct.pack("<3i", major, minor, revision))
    wide = major * 10 + minor >= 2 and major < 1000 and minor < 1000
    out.write(struct.pack("<q" if wide else "<i", seen))
    for conv, norm in darknet_layers(model):
        parts = (
            [norm.bias, norm.weight, norm.running_mean, norm.running_var] if norm is not None else [conv.bias]
        )
        for tensor in [*parts, conv.weight]:
            assert tensor is not None
            out.write(tensor.detach().cpu().float().numpy().astype("<f4").tobytes())
    handle, owned = _open(target, "wb")
    try:
        handle.write(out.getvalue())
    finally:
        if owned:
            handle.close()
