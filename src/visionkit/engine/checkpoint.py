"""Atomic, verifiable training checkpoints and every random-number-generator state.

A checkpoint is one ``torch.save`` file holding plain state dicts (model, optimizer, scheduler, grad
scaler, hooks), counters (epoch, step, position inside the epoch) and the RNG states of Python,
NumPy, torch and CUDA. It is written to a temporary file in the same folder, flushed, ``fsync``-ed and
moved over the target with ``os.replace``, so a crash mid-write never leaves a half-written file under
the final name. Loading checks the file and names it in every error; :func:`load_latest_checkpoint`
falls back to the previous good file when the newest is truncated or incompatible.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionkit.errors import CheckpointError
from visionkit.torchfile import UnreadableFileError, load_weights_only

FORMAT_VERSION = 1
_NAME = re.compile(r"^checkpoint_(\d+)\.pt$")


def capture_rng_state() -> dict[str, Any]:
    """Return the Python, NumPy, torch (and CUDA, when present) RNG states as tensors/plain values."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    python_version, python_internal, python_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": [python_version, list(python_internal), python_gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`capture_rng_state` returned."""
    python_version, python_internal, python_gauss = state["python"]
    random.setstate((python_version, tuple(python_internal), python_gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (all devices); ``deterministic`` asks torch for deterministic kernels.

    Example:
        >>> seed_everything(0); a = torch.rand(1); seed_everything(0)
        >>> bool(torch.equal(a, torch.rand(1)))
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + flush + fsync + ``os.replace``).

    Args:
        state: a dict of tensors, numbers, strings, lists and dicts (what ``torch.save`` stores).
        path: the final file name; its folder is created.

    Returns:
        The path written.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "checkpoint_1.pt"
        >>> _ = save_checkpoint({"step": 1}, target)
        >>> load_checkpoint(target)["step"]
        1
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, **state}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:  # make the rename itself durable
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; errors name the file.

    Raises:
        CheckpointError: the file is missing, truncated/corrupt, or not a visionkit checkpoint of
            this format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        state = load_weights_only(path, map_location=map_location)
    except UnreadableFileError as error:
        raise CheckpointError(f"checkpoint file {path} is truncated or unreadable ({error})") from None
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"checkpoint file {path} is not a visionkit checkpoint (no format_version)")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint file {path} has format_version {state['format_version']}, expected {FORMAT_VERSION}"
        )
    return state


def load_model_weights(
    model: torch.nn.Module, state: dict[str, Any], path: str | os.PathLike[str], name: str
) -> None:
    """``model.load_state_dict(state)`` (strict), a mismatch reported as a
    :class:`~visionkit.errors.CheckpointError` naming the file and the model ``name``.

    Example:
        >>> load_model_weights(torch.nn.Linear(2, 3), torch.nn.Linear(2, 2).state_dict(), "m.pt", "linear")
        Traceback (most recent call last):
        ...
        visionkit.errors.CheckpointError: weights 'm.pt': the weights do not fit linear: ...
    """
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"weights {str(path)!r}: the weights do not fit {name}: {error}") from None


def checkpoint_path(directory: str | os.PathLike[str], step: int) -> Path:
    """The file name used for the checkpoint taken after optimizer step ``step``."""
    return Path(directory) / f"checkpoint_{step:08d}.pt"


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint files in ``directory``, newest (highest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(match.group(1)), p) for p in directory.iterdir() if (match := _NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def load_latest_checkpoint(
    directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]]:
    """Load the newest readable checkpoint in ``directory``, warning about (and skipping) bad ones.

    Raises:
        CheckpointError: no checkpoint in the folder is readable (the message lists each failure).
    """
    failures = []
    for path in list_checkpoints(directory):
        try:
            return path, load_checkpoint(path, map_location)
        except CheckpointError as error:
            warnings.warn(f"{error}; falling back to the previous checkpoint", RuntimeWarning, stacklevel=2)
            failures.append(str(error))
    detail = "; ".join(failures) if failures else "no checkpoint_*.pt files"
    raise CheckpointError(f"no usable checkpoint in {directory}: {detail}")


def prune_checkpoints(directory: str | os.PathLike[str], keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints in ``directory``."""
    for path in list_checkpoints(directory)[keep:]:
        path.unlink(missing_ok=True)


__all__ = [
    "CheckpointError",
    "capture_rng_state",
    "checkpoint_path",
    "list_checkpoints",
    "load_checkpoint",
    "load_latest_checkpoint",
    "prune_checkpoints",
    "restore_rng_state",
    "save_checkpoint",
    "seed_everything",
]
