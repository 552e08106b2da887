"""``visionkit compress METHOD weights=RUN/model.pt key=value ...``: prune, share or factorise a classifier
or a detector's backbone.

Example::

    visionkit compress prune weights=runs/digits/model.pt ratio=0.5 finetune_epochs=3 --out runs/pruned
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path

import click

METHOD_HELP = {
    "prune": "structured channel pruning (structured=false: magnitude sparsity)",
    "share": "k-means weight sharing (bits=4: 16 shared values per layer)",
    "lowrank": "SVD of Linear layers, separable or Tucker-2 convolutions (factorization=...)",
}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("method", type=click.Choice(sorted(METHOD_HELP)))
@click.argument("overrides", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run folder.")
def compress(method: str, overrides: tuple[str, ...], out: Path | None) -> None:
    """Compress a trained classifier (or a detector's backbone) and measure it against the original.

    METHOD is prune, share or lowrank; OVERRIDES are key=value pairs (keys below), weights= is required.
    The run folder holds config.json, model.pt (the compressed model) and report.json (parameters, MACs,
    bytes on disk, latency at batch 1 and 8, test accuracy before / after / after fine-tuning).
    """
    from visionkit.compress.run import CompressRecipe, compress_model
    from visionkit.engine.config import apply_overrides

    recipe = apply_overrides(CompressRecipe(), list(overrides))
    run_dir = out or Path("runs") / f"compress-{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    report = compress_model(method, recipe, run_dir)
    shown = {k: v for k, v in report.items() if k not in ("details", "rows")}
    click.echo(json.dumps(shown, indent=2))
    _print_table(report)
    click.echo(f"run folder: {run_dir}")


def _print_table(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"compress {report['method']} ({report['model']})")
    columns = ("parameters", "macs", "bytes_on_disk", "latency_ms_b1", "latency_ms_b8", "test_accuracy")
    if report.get("task") == "detect":  # the backbone is what was compressed; AP on the validation set
        columns = ("parameters", "backbone_macs", "bytes_on_disk", "latency_ms_b1", "latency_ms_b8", "AP")
    table.add_column("model")
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in report["rows"].items():
        table.add_row(
            name, *(f"{row[c]:,.4g}" if isinstance(row[c], float) else f"{row[c]:,}" for c in columns)
        )
    Console().print(table)


def _recipe_help() -> str:
    from visionkit.compress.run import CompressRecipe
    from visionkit.engine.config import describe_recipe

    return "\n".join(
        f"  {name} ({kind}, default {default})" for name, kind, default in describe_recipe(CompressRecipe)
    )


compress.help = (
    inspect.cleandoc(compress.help or "")
    + "\n\n\b\nMethods:\n"
    + "\n".join(f"  {name}: {text}" for name, text in METHOD_HELP.items())
    + "\n\n\b\nKeys:\n"
    + _recipe_help()
)

__all__ = ["compress"]
