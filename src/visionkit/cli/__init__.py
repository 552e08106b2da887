"""The ``visionkit`` command line: the only place where every part of the package meets.

Each command group lives in its own module of this package and is registered in :data:`COMMANDS`;
a module is imported only when its command runs, so ``visionkit --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from visionkit import __version__

#: command name -> (module, attribute, one-line help). Add a command by adding a row.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("visionkit.cli.data", "data", "Detection datasets: convert COCO/VOC/YOLO, generate shapes."),
    "info": ("visionkit.cli.info", "info", "Versions, threads and devices."),
    "summary": ("visionkit.cli.summary", "summary", "Per-layer params, MACs/FLOPs, shapes of a model."),
    "eval": ("visionkit.cli.eval", "evaluate", "Score detections against COCO ground truth (COCO/VOC AP)."),
    "predict": ("visionkit.cli.predict", "predict", "Detect objects in images with a trained detector."),
    "demo": ("visionkit.cli.demo", "demo", "Run the main demonstration job (what `make demo` runs)."),
    "train": ("visionkit.cli.train", "train", "Train from a recipe: visionkit train classify key=value ..."),
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

    def format_commands(self, ctx: click.Context, formatter: Any) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="visionkit")
def main() -> None:
    """visionkit: computer-vision components you can trust, and a CLI to train, evaluate and export."""


__all__ = ["COMMANDS", "main"]
