"""Saving and loading compressed models with plain tensors only (``torch.load(weights_only=True)``).

A compressed ``model.pt`` holds the *base* (what rebuilds the original architecture: the classify run's
recipe), the list of *edits* applied to it, in order, and the state dict of the compressed model:

* ``{"kind": "channels", "shapes": {layer: {"kind", "in", "out"}}}`` — structured pruning
  (:func:`~visionkit.engine.compressed.resize_layers` re-creates the smaller layers);
* ``{"kind": "lowrank", "method": "svd" | "separable" | "tucker2", "ranks": {layer: rank}}``;
* ``{"kind": "share", "bits": b, "layers": [...]}`` — the codebooks are in the state dict, the indices are
  stored bit-packed (``b`` bits each) under ``"packed"``;
* ``{"kind": "sparse", "layers": [...]}`` — those weights are stored in compressed-sparse-row form under
  ``"sparse"`` (float32 values, int32 column indices and row pointers) instead of densely.

Replaying the edits on the base gives the compressed architecture; the state dict then loads strictly.
The engine's task loaders (``load_detector``, ``load_classifier``) read these files too, as ordinary
modules with dense weights (:mod:`visionkit.engine.compressed`): ``eval detect``, ``predict`` and ``export``
take a compressed run's ``model.pt`` as they take a trained one.

Example:
    >>> import io, torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 4))
    >>> payload = compressed_payload(model, {"task": "test"}, [])
    >>> sorted(payload)
    ['base', 'edits', 'kind', 'packed', 'sparse', 'state_dict']
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from visionkit.compress.share import CodebookWeight, pack_indices
from visionkit.engine.checkpoint import load_checkpoint, save_checkpoint
from visionkit.engine.compressed import KIND, replay_structure, stored_state_dict
from visionkit.errors import CheckpointError

__all__ = ["apply_edits", "compressed_payload", "load_compressed", "read_compressed", "save_compressed"]


def apply_edits(model: nn.Module, edits: list[dict[str, Any]]) -> nn.Module:
    """Re-create, in place, the architecture the ``edits`` produced (weights are loaded afterwards): the
    layers of :func:`~visionkit.engine.compressed.replay_structure`, and the codebook parametrization of
    every shared layer (so that its codebook can be fine-tuned)."""
    replay_structure(model, edits)
    for edit in edits:
        for name in edit["layers"] if edit["kind"] == "share" else []:
            module = model.get_submodule(name)
            indices = torch.zeros(module.weight.shape, dtype=torch.uint8)
            parametrize.register_parametrization(
                module, "weight", CodebookWeight(indices, 2 ** edit["bits"]), unsafe=True
            )
    return model


def _edit_bits(edits: list[dict[str, Any]]) -> dict[str, int]:
    return {name: e["bits"] for e in edits if e["kind"] == "share" for name in e["layers"]}


def _sparse_layers(edits: list[dict[str, Any]]) -> list[str]:
    return [name for e in edits if e["kind"] == "sparse" for name in e["layers"]]


def _to_csr(weight: Tensor) -> dict[str, Any]:
    """Compressed sparse rows of ``weight`` viewed as ``(rows, rest)``, with plain tensors."""
    matrix = weight.detach().reshape(weight.shape[0], -1).float()
    nonzero = matrix != 0
    counts = nonzero.sum(1)
    crow = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
    return {
        "shape": list(weight.shape),
        "crow": crow.to(torch.int32),
        "col": nonzero.nonzero()[:, 1].to(torch.int32),  # row-major order, as the values
        "values": matrix[nonzero].clone(),
    }


def compressed_payload(model: nn.Module, base: dict[str, Any], edits: list[dict[str, Any]]) -> dict[str, Any]:
    """The dict :func:`save_compressed` writes (indices packed, sparse weights in CSR form)."""
    state = dict(model.state_dict())
    packed: dict[str, Any] = {}
    for name, bits in _edit_bits(edits).items():
        key = f"{name}.parametrizations.weight.0.indices"
        indices = state.pop(key)
        packed[key] = {"bits": bits, "shape": list(indices.shape), "data": pack_indices(indices, bits)}
    sparse = {}
    for name in _sparse_layers(edits):
        key = f"{name}.weight"
        sparse[key] = _to_csr(state.pop(key))
    return {
        "kind": KIND,
        "base": base,
        "edits": edits,
        "state_dict": state,
        "packed": packed,
        "sparse": sparse,
    }


def save_compressed(
    path: str | Path, model: nn.Module, base: dict[str, Any], edits: list[dict[str, Any]]
) -> Path:
    """Write the compressed model atomically (via :func:`~visionkit.engine.checkpoint.save_checkpoint`)."""
    payload = compressed_payload(model, base, edits)
    del payload["kind"]
    return save_checkpoint({"kind": KIND, **payload}, path)


def read_compressed(path: str | Path) -> dict[str, Any]:
    """Read a compressed ``model.pt`` and restore its full state dict (unpacked, densified).

    Raises:
        CheckpointError: missing, unreadable, or not a compressed model (names the file).
    """
    saved = load_checkpoint(path)
    if saved.get("kind") != KIND:
        raise CheckpointError(f"{path} is not a compressed model (written by visionkit compress)")
    saved["state_dict"] = stored_state_dict(saved)
    return saved


def load_compressed(path: str | Path, build_base: Callable[[dict[str, Any]], nn.Module]) -> nn.Module:
    """Rebuild a compressed model: ``build_base(base)`` → :func:`apply_edits` → strict state-dict load.

    Raises:
        CheckpointError: the file does not match the architecture its edits describe (names the file).
    """
    saved = read_compressed(path)
    model = apply_edits(build_base(saved["base"]), saved["edits"])
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the compressed architecture: {error}") from error
    return model.eval()
