"""Compressed ``model.pt`` files (``visionkit compress``) read by the task loaders, as ordinary modules.

A compressed file describes itself (:mod:`visionkit.compress.io` writes it): ``kind`` is
``"visionkit.compressed"``, ``base`` is what the task's own builder needs (a classify recipe, or a detector's
builder name and arguments), ``edits`` the list of changes made to that model, in order, and
``state_dict`` / ``packed`` / ``sparse`` its weights. This module replays the edits with plain layers and
loads the weights, so that :func:`~visionkit.engine.detect.load_detector` and
:func:`~visionkit.engine.classify.load_classifier` — the one loader of each task, used by ``eval detect``,
``predict``, ``export`` and ``teacher=`` — read a compressed model without importing
:mod:`visionkit.compress`, which ranks above the engine:

* ``channels`` (structured pruning): smaller ``Conv2d`` / ``Linear`` / ``BatchNorm`` (:func:`resize_layers`);
* ``lowrank``: an ``nn.Sequential`` of factor layers in place of a layer (:func:`factorized_structure`);
* ``share`` and ``sparse`` keep the architecture: the bit-packed indices and the compressed-sparse-row
  weights are decoded into the dense weights the compressed model computes with (``codebook[indices]``
  and the CSR values at their positions: the same tensors, so the outputs are equal).

The loaded model is for inference, export and distillation; fine-tuning the codebooks of a shared model
needs :func:`visionkit.compress.io.load_compressed` (it keeps the parametrization).

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 4, 1))
    >>> shapes = {"0": {"kind": "conv", "in": 3, "out": 8}, "1": {"kind": "norm", "in": 8, "out": 8},
    ...           "3": {"kind": "conv", "in": 8, "out": 4}}
    >>> small = replay_structure(net, [{"kind": "channels", "shapes": shapes}])
    >>> small[0].out_channels, small[3].in_channels
    (8, 8)
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from visionkit.errors import CheckpointError, ConfigError, ExportError, VisionkitError

__all__ = [
    "KIND",
    "compressed_task",
    "csr_to_dense",
    "factorized_structure",
    "is_compressed",
    "load_compressed_model",
    "replay_structure",
    "resize_layers",
    "resized_layer",
    "stored_state_dict",
    "unpack_indices",
]

KIND = "visionkit.compressed"


def is_compressed(saved: Any) -> bool:
    """Whether a loaded ``model.pt`` payload is a compressed model (written by ``visionkit compress``)."""
    return isinstance(saved, dict) and saved.get("kind") == KIND


def compressed_task(saved: Any) -> str | None:
    """The task (``"classify"``, ``"detect"``) of a compressed payload; ``None`` for any other payload."""
    if not is_compressed(saved) or not isinstance(saved.get("base"), dict):
        return None
    return saved["base"].get("task")


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Set the submodule ``name`` (dotted) of ``model`` to ``module``."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def resized_layer(old: nn.Module, kind: str, inputs: int, outputs: int) -> nn.Module:
    """An uninitialised layer like ``old`` with ``inputs``/``outputs`` channels (same dtype and device);
    ``kind`` ``"depthwise"`` makes a convolution of ``outputs`` groups."""
    factory = {"dtype": next(old.parameters()).dtype, "device": next(old.parameters()).device}
    if isinstance(old, nn.Conv2d):
        return nn.Conv2d(
            inputs, outputs, old.kernel_size, old.stride, old.padding, old.dilation,
            groups=outputs if kind == "depthwise" else 1, bias=old.bias is not None,
            padding_mode=old.padding_mode, **factory,
        )  # fmt: skip
    if isinstance(old, nn.Linear):
        return nn.Linear(inputs, outputs, bias=old.bias is not None, **factory)
    if isinstance(old, nn.BatchNorm2d | nn.BatchNorm1d):
        return type(old)(outputs, old.eps, old.momentum, old.affine, old.track_running_stats, **factory)
    raise ExportError(f"cannot rebuild layer of type {type(old).__name__}")


def resize_layers(model: nn.Module, shapes: dict[str, dict[str, Any]]) -> nn.Module:
    """Re-create the architecture of a pruned model (uninitialised layers of the saved sizes), in place.

    Raises:
        ExportError: a layer in ``shapes`` does not exist in ``model``.
    """
    for name, shape in shapes.items():
        try:
            old = model.get_submodule(name)
        except AttributeError:
            raise ExportError(f"pruned layer {name!r} does not exist in this model") from None
        replace_module(model, name, resized_layer(old, shape["kind"], int(shape["in"]), int(shape["out"])))
    return model


def linear_structure(linear: nn.Linear, rank: int) -> tuple[nn.Linear, nn.Linear]:
    """``Linear(in, rank, bias=False)`` and ``Linear(rank, out)`` (uninitialised) for a rank-``rank`` SVD."""
    factory = {"dtype": linear.weight.dtype, "device": linear.weight.device}
    first = nn.Linear(linear.in_features, rank, bias=False, **factory)
    second = nn.Linear(rank, linear.out_features, bias=linear.bias is not None, **factory)
    return first, second


def check_factorizable(conv: nn.Conv2d) -> None:
    """Raise :class:`ExportError` unless ``conv`` has ``groups=1`` and numeric zero padding."""
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ExportError(f"cannot factorise {conv}: only groups=1 convolutions with numeric zero padding")


def separable_structure(conv: nn.Conv2d, rank: int) -> nn.Sequential:
    """A ``k_h×1`` convolution ``in → rank`` then a ``1×k_w`` one ``rank → out`` (uninitialised)."""
    check_factorizable(conv)
    factory = {"dtype": conv.weight.dtype, "device": conv.weight.device}
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    vertical = nn.Conv2d(conv.in_channels, rank, (kh, 1), (sh, 1), (ph, 0), (dh, 1), bias=False, **factory)
    horizontal = nn.Conv2d(rank, conv.out_channels, (1, kw), (1, sw), (0, pw), (1, dw),
                           bias=conv.bias is not None, **factory)  # fmt: skip
    return nn.Sequential(vertical, horizontal)


def tucker2_structure(conv: nn.Conv2d, ranks: tuple[int, int]) -> nn.Sequential:
    """``1×1 in → r_in``, the ``k×k`` core ``r_in → r_out`` and ``1×1 r_out → out`` (uninitialised)."""
    check_factorizable(conv)
    rank_in, rank_out = ranks
    factory = {"dtype": conv.weight.dtype, "device": conv.weight.device}
    core = nn.Conv2d(rank_in, rank_out, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                     bias=False, **factory)  # fmt: skip
    return nn.Sequential(
        nn.Conv2d(conv.in_channels, rank_in, 1, bias=False, **factory),
        core,
        nn.Conv2d(rank_out, conv.out_channels, 1, bias=conv.bias is not None, **factory),
    )


def factorized_structure(module: nn.Module, method: str, rank: Any) -> nn.Sequential:
    """The factorised layers for ``module`` (uninitialised), as used when loading a saved model:
    ``method`` ``"svd"`` (Linear), ``"separable"`` or ``"tucker2"`` (``rank = [r_in, r_out]``)."""
    if method == "svd":
        return nn.Sequential(*linear_structure(module, int(rank)))  # type: ignore[arg-type]
    if method == "separable":
        return separable_structure(module, int(rank))  # type: ignore[arg-type]
    return tucker2_structure(module, (int(rank[0]), int(rank[1])))  # type: ignore[arg-type]


def unpack_indices(packed: Tensor, bits: int, count: int) -> Tensor:
    """Inverse of :func:`visionkit.compress.share.pack_indices`: the first ``count`` ``bits``-bit indices
    of the little-endian bit stream ``packed`` (flat uint8), as uint8 ``(count,)``."""
    if not (isinstance(bits, int) and 1 <= bits <= 8):
        raise ConfigError(f"bits={bits!r}: expected an integer from 1 to 8 (2 to 256 shared values)")
    stream = ((packed.long()[:, None] >> torch.arange(8)) & 1).flatten()[: count * bits]
    return (stream.view(count, bits) << torch.arange(bits)).sum(1).to(torch.uint8)


def csr_to_dense(stored: dict[str, Any]) -> Tensor:
    """The dense tensor of ``stored`` (``shape``, int32 ``crow`` / ``col``, ``values``): compressed sparse
    rows of the tensor viewed as ``(shape[0], rest)``."""
    shape = stored["shape"]
    dense = torch.zeros(shape[0], math.prod(shape[1:]), dtype=stored["values"].dtype)
    rows = torch.repeat_interleave(torch.arange(shape[0]), torch.diff(stored["crow"].long()))
    dense[rows, stored["col"].long()] = stored["values"]
    return dense.reshape(shape)


def replay_structure(model: nn.Module, edits: list[dict[str, Any]]) -> nn.Module:
    """Re-create, in place, the layers that the ``channels`` and ``lowrank`` edits changed (``share`` and
    ``sparse`` change no layer). Raises :class:`CheckpointError` for an edit of unknown kind."""
    for edit in edits:
        kind = edit["kind"]
        if kind == "channels":
            resize_layers(model, edit["shapes"])
        elif kind == "lowrank":
            for name, rank in edit["ranks"].items():
                layers = factorized_structure(model.get_submodule(name), edit["method"], rank)
                replace_module(model, name, layers)
        elif kind not in ("share", "sparse"):
            raise CheckpointError(f"unknown compression edit {kind!r}")
    return model


def stored_state_dict(saved: dict[str, Any]) -> dict[str, Tensor]:
    """The state dict of the compressed model: ``state_dict`` with the packed indices unpacked and the
    sparse weights made dense (shared layers keep their ``parametrizations.weight`` entries)."""
    state = dict(saved["state_dict"])
    for key, stored in saved["packed"].items():
        count = math.prod(stored["shape"])
        state[key] = unpack_indices(stored["data"], stored["bits"], count).reshape(stored["shape"])
    for key, stored in saved["sparse"].items():
        state[key] = csr_to_dense(stored)
    return state


def dense_state_dict(saved: dict[str, Any]) -> dict[str, Tensor]:
    """:func:`stored_state_dict` with every shared weight decoded: ``weight = codebook[indices]``."""
    state = stored_state_dict(saved)
    for edit in saved["edits"]:
        for name in edit["layers"] if edit["kind"] == "share" else []:
            codebook = state.pop(f"{name}.parametrizations.weight.original")
            indices = state.pop(f"{name}.parametrizations.weight.0.indices")
            state[f"{name}.weight"] = codebook[indices.long()]
    return state


def load_compressed_model(
    path: str | os.PathLike[str],
    saved: dict[str, Any],
    task: str,
    build: Callable[[dict[str, Any]], nn.Module],
) -> nn.Module:
    """The compressed model of the payload ``saved`` (read from ``path``), in eval mode: ``build(base)``
    (the task's builder), :func:`replay_structure`, then a strict load of :func:`dense_state_dict`.

    Raises:
        CheckpointError: not a compressed ``task`` model, or a description or weights that do not fit the
            model the base builds (a corrupt or mismatched file) — the message names the file.
    """
    where = f"weights {str(Path(path))!r}"
    if compressed_task(saved) != task:
        found = compressed_task(saved)
        raise CheckpointError(f"{where}: a compressed {found!r} model, not a compressed {task!r} model")
    try:
        base = build(saved["base"])  # a ConfigError (a bad override) is the caller's and passes through
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{where}: the compressed model's base is incomplete ({error!r})") from None
    try:
        model = replay_structure(base, saved["edits"])
        model.load_state_dict(dense_state_dict(saved))
    except VisionkitError as error:
        raise CheckpointError(f"{where}: the compressed model cannot be rebuilt: {error}") from None
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{where}: the compressed model's description or weights do not fit its base model "
            f"({type(error).__name__}: {error})"
        ) from None
    return model.eval()
