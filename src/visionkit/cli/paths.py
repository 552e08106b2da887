"""Output paths are made ready before any work starts, so no result is computed and then lost."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from visionkit.errors import ConfigError

__all__ = ["output_file", "output_folder", "prepare_run_folder"]


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


def prepare_run_folder(recipe: Any, out: Path | None, task: str) -> Path:
    """The run folder of a training command, created now (so a bad path fails before any work); refuses to
    overwrite a run. ``recipe.resume`` (a run folder) continues there; the default is
    ``runs/<task>-<model>-<time>``."""
    if recipe.resume:
        if out is not None and out.resolve() != Path(recipe.resume).resolve():
            raise ConfigError(f"--out {out}: a resumed run continues in its own folder {recipe.resume}")
        return Path(recipe.resume)
    run_dir = out or Path("runs") / f"{task}-{recipe.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (run_dir / "config.json").exists() and "LOCAL_RANK" not in os.environ:
        raise ConfigError(
            f"--out {run_dir}: already holds a run (config.json); choose another folder, or "
            f"continue it with resume={run_dir}"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise click.BadParameter(
            f"cannot create the run folder {run_dir}: {error}", param_hint="--out"
        ) from None
    return run_dir
