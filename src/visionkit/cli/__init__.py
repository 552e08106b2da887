"""The ``visionkit`` command line: the only place where every part of the package meets.

Each command group lives in its own module of this package and is registered in :data:`COMMANDS`;
a module is imported only when its command runs, so ``visionkit --help`` stays fast.

Errors: the group is the one error boundary of every command. visionkit's own errors
(:mod:`visionkit.errors`) print as one ``Error: ...`` line — exit 2 for a
:class:`~visionkit.errors.ConfigError` (a usage error: a bad key or value), exit 1 for the others — and
show their traceback only with
``visionkit --debug ...`` or ``VISIONKIT_DEBUG=1``. Any other exception is a bug and keeps its traceback.
Exit codes: 0 success, 1 error, 2 usage error.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import click

from visionkit import __version__
from visionkit.errors import ConfigError, VisionkitError

#: command name -> (module, attribute, one-line help). Add a command by adding a row.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("visionkit.cli.data", "data", "Detection datasets: convert COCO/VOC/YOLO, generate shapes."),
    "info": ("visionkit.cli.info", "info", "Versions, threads and devices."),
    "summary": ("visionkit.cli.summary", "summary", "Per-layer params, MACs/FLOPs, shapes of a model."),
    "eval": ("visionkit.cli.eval", "evaluate", "Score detections (COCO/VOC AP), a detector or a segmenter."),
    "predict": ("visionkit.cli.predict", "predict", "Detect objects or segment images with a model."),
    "demo": ("visionkit.cli.demo", "demo", "Run the main demonstration job (what `make demo` runs)."),
    "lab": ("visionkit.cli.lab", "lab", "The executable handbook: experiments, verdicts, errata, HTML book."),
    "compress": (
        "visionkit.cli.compress",
        "compress",
        "Prune, share or factorise a trained classifier or detector backbone, measured.",
    ),
    "train": ("visionkit.cli.train", "train", "Train a classifier, detector or segmenter from a recipe."),
    "export": ("visionkit.cli.export", "export", "Export a trained model to ONNX (fused, int8 calibrated)."),
}


class LazyGroup(click.Group):
    """A click group that imports a command's module only when that command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute, _ = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; visionkit's own errors become one ``Error:`` line (see the module docstring)."""
        try:
            return super().invoke(ctx)
        except VisionkitError as error:
            if ctx.params.get("debug") or debug_from_environment():
                raise
            if isinstance(error, ConfigError):
                raise click.UsageError(str(error)) from None
            raise click.ClickException(str(error)) from None

    def format_commands(self, ctx: click.Context, formatter: Any) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def debug_from_environment() -> bool:
    """``VISIONKIT_DEBUG`` set to anything but empty / 0 / false / no / off."""
    return os.environ.get("VISIONKIT_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="visionkit")
@click.option("--debug", is_flag=True, help="Show tracebacks of visionkit's errors (or VISIONKIT_DEBUG=1).")
def main(debug: bool) -> None:
    """visionkit: computer-vision components you can trust, and a CLI to train, evaluate and export.

    Exit codes: 0 success, 1 error (one 'Error:' line), 2 usage error (a bad option, key or value).
    """


__all__ = ["COMMANDS", "debug_from_environment", "main"]
