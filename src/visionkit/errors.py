"""visionkit's own errors: one small hierarchy under :class:`VisionkitError`.

Every error here is an expected problem with what the user gave (a recipe value, a file, a checkpoint, a
model input) or with how a run went (a diverging loss). Its message says what was expected and what came,
naming the argument, key, file, line or index. The ``visionkit`` command prints these as one
``Error: ...`` line (exit 1; a :class:`ConfigError` is a usage error, exit 2) and shows their traceback only
with ``--debug`` or ``VISIONKIT_DEBUG=1``; any other exception is a bug and keeps its traceback.

Each class also derives from the built-in exception that callers caught before the hierarchy existed
(``ValueError``, ``FloatingPointError``, ``KeyError``), so ``except ValueError`` keeps working.

Example:
    >>> from visionkit.errors import ConfigError, VisionkitError
    >>> isinstance(ConfigError("epochs=-1: expected an integer >= 1"), (VisionkitError, ValueError))
    True

This module imports nothing from visionkit, so every layer may raise these errors.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "ExportError",
    "InputShapeError",
    "NonFiniteGradientError",
    "NonFiniteLossError",
    "NotFittedError",
    "UnknownModelError",
    "VisionkitError",
]


class VisionkitError(Exception):
    """Base of every error visionkit raises on purpose (bad input, failed run); not a bug."""


class ConfigError(VisionkitError, ValueError):
    """A recipe key or command option is unknown or its value is invalid; names the key and what is valid."""


class DatasetError(VisionkitError, ValueError):
    """A dataset file or image is malformed; the message names the file (and line, id or index)."""


class CheckpointError(VisionkitError, ValueError):
    """A checkpoint or weights file is missing, truncated, unreadable or from an incompatible format."""


class NonFiniteLossError(VisionkitError, FloatingPointError):
    """The loss became NaN or infinite; the message names the iteration and every loss term."""


class NonFiniteGradientError(VisionkitError, FloatingPointError):
    """The gradient norm was NaN or infinite and ``on_nonfinite_grad="stop"``."""


class NotFittedError(VisionkitError, ValueError):
    """A fitted transform (``transform``, ``inverse_transform``) was called before ``fit``."""


class InputShapeError(VisionkitError, ValueError):
    """A model or op got a tensor of the wrong shape, channels or size; names the expected and given shape."""


class UnknownModelError(VisionkitError, KeyError):
    """No model is registered under this name; the message lists close matches."""

    def __str__(self) -> str:  # KeyError would print the repr of its argument (quotes around it)
        return str(self.args[0]) if self.args else ""


class ExportError(VisionkitError, ValueError):
    """A model cannot be exported or compressed as asked (an unsupported op, a failed accuracy gate)."""


class BackendUnavailableError(VisionkitError, RuntimeError):
    """An optional runtime a command needs is missing (TensorRT, a CUDA GPU); names what is missing and how
    to get it."""
