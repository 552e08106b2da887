"""Output paths are made ready before any work starts, so no result is computed and then lost."""

from __future__ import annotations

import os
from pathlib import Path

import click

__all__ = ["output_file", "output_folder"]


def output_folder(path: Path, option: str) -> Path:
    """Create folder ``path`` now (and its parents); a usage error naming ``option`` if that fails."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        message = f"cannot create the folder {path}: {error.strerror or error}"
        raise click.BadParameter(message, param_hint=option) from None
    if not os.access(path, os.W_OK):
        raise click.BadParameter(f"the folder {path} is not writable", param_hint=option)
    return path


def output_file(path: str | Path | None, option: str) -> Path | None:
    """Make sure file ``path`` can be written later: its folder exists (created now) and is writable, and
    ``path`` is not a folder. ``None`` passes through."""
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise click.BadParameter(f"{path} is a folder, expected a file name", param_hint=option)
    output_folder(path.parent if str(path.parent) else Path("."), option)
    if path.exists() and not os.access(path, os.W_OK):
        raise click.BadParameter(f"{path} exists and is not writable", param_hint=option)
    return path
