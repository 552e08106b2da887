"""Reading a PyTorch file of tensors and plain data (``torch.load(weights_only=True)``) with one clear
reason when it fails. Below every package (like :mod:`visionkit.errors`): the model, engine and deploy
loaders and the training checkpoints all read files this way, and each names the file and what it
expected.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["UnreadableFileError", "load_error_summary", "load_weights_only"]


class UnreadableFileError(Exception):
    """``torch.load`` failed on a file; the message is :func:`load_error_summary`'s one line."""


def load_weights_only(
    path: str | os.PathLike[str], *, mmap: bool = False, map_location: str | torch.device = "cpu"
) -> Any:
    """``torch.load(path, map_location=map_location, weights_only=True)``, every failure of the load as an
    :class:`UnreadableFileError` with its one-line reason. Torch raises ``OSError``, ``RuntimeError``,
    ``EOFError``, ``UnpicklingError``, ``ValueError`` or ``struct.error`` for a corrupt or foreign file,
    depending on where its bytes end; the loaders name the file and say what they expected.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile(suffix=".pt") as f:
        ...     _ = f.write(b"junk"); f.flush()
        ...     load_weights_only(f.name)
        Traceback (most recent call last):
        ...
        visionkit.torchfile.UnreadableFileError: unpack requires a buffer of 4 bytes
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # any failure of the unpickler: the file is not what a loader reads
        raise UnreadableFileError(load_error_summary(error)) from None


def load_error_summary(error: BaseException) -> str:
    """One line saying why ``torch.load`` failed: torch's weights-only refusal spans a dozen lines of
    advice; what matters is the unpickler's reason (a foreign or corrupt file).

    Example:
        >>> load_error_summary(RuntimeError("PytorchStreamReader failed reading zip archive\\nmore"))
        'PytorchStreamReader failed reading zip archive'
    """
    text = str(error).strip()
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = next((line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()), "")
        return f"not a PyTorch file of tensors and plain data ({reason or 'unknown content'})"
    return text.splitlines()[0][:300] if text else type(error).__name__
