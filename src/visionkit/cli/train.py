"""``visionkit train``: training commands (``classify`` now; other tasks add subcommands to this group).

Example::

    visionkit train classify model=resnet_digits data=digits epochs=10 lr=0.1 optimizer=sgd schedule=cosine
"""

from __future__ import annotations

import inspect
import json
import os
import time
from pathlib import Path

import click


@click.group()
def train() -> None:
    """Train a model from a recipe: key=value overrides of the recipe's fields."""


def _recipe_help() -> str:
    from visionkit.engine.classify import ClassifyRecipe
    from visionkit.engine.config import describe_recipe

    rows = [
        f"  {name} ({kind}, default {default})" for name, kind, default in describe_recipe(ClassifyRecipe)
    ]
    return "\n".join(rows)


@train.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("overrides", nargs=-1)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run folder.")
@click.option(
    "--resume",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Checkpoint file or folder to continue from.",
)
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes for data-parallel training (torchrun; gloo on CPU, nccl on GPU).",
)
def classify(overrides: tuple[str, ...], out: Path | None, resume: Path | None, nproc: int) -> None:
    """Train an image classifier (digits) and write a run folder.

    OVERRIDES are key=value pairs, e.g. model=resnet_digits epochs=10 lr=0.1 optimizer=sgd
    schedule=cosine; values are cast to the key's type and unknown keys are rejected (keys below).

    The run folder holds config.json, log.csv, checkpoints/, learning_curves.png,
    gradient_flow.png and metrics.json.
    """
    from visionkit.engine.classify import ClassifyRecipe, train_classifier
    from visionkit.engine.config import ConfigError, apply_overrides

    train = train_classifier

    try:
        recipe = apply_overrides(ClassifyRecipe(), list(overrides))
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    run_dir = out or Path("runs") / f"classify-{recipe.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    if nproc > 1 and "LOCAL_RANK" not in os.environ:  # start the ranks; each re-enters this command
        arguments = ["classify", *overrides, "--out", str(run_dir)]
        if resume is not None:
            arguments += ["--resume", str(resume)]
        run_distributed(arguments, nproc)
        return  # rank 0 printed the metrics
    if recipe.teacher:  # distillation: compress.distill sets up the teacher and calls train_classifier
        from visionkit.compress.distill import distill_classifier

        train = distill_classifier
    metrics = run_with_error_record(lambda: train(recipe, run_dir, resume=resume))
    if "LOCAL_RANK" in os.environ and os.environ.get("RANK", "0") != "0":
        return
    shown = {k: v for k, v in metrics.items() if k != "evidence"}
    click.echo(json.dumps(shown, indent=2))
    click.echo(f"run folder: {run_dir}")


def run_distributed(arguments: list[str], nproc: int) -> None:
    """Run ``visionkit train ARGUMENTS`` on ``nproc`` local ranks under torchrun (rank 0 prints)."""
    from visionkit.engine.distributed import launch

    code = launch(__file__, arguments, nproc).returncode
    if code:
        raise click.ClickException(
            f"distributed training failed (exit code {code}); see the rank errors above"
        )


def run_with_error_record(function):
    """Run ``function``; under torchrun, ``record`` writes the traceback for the agent to show."""
    if "LOCAL_RANK" in os.environ:
        import torch.distributed as dist
        from torch.distributed.elastic.multiprocessing.errors import record

        from visionkit.engine.distributed import cleanup

        try:
            result = record(function)()
            if dist.is_initialized():  # leave together: a rank that tore its gloo pairs down while rank 0
                dist.barrier()  # was still writing the run folder aborted ("terminate called ...")
            return result
        finally:
            cleanup()
    return function()


classify.help = inspect.cleandoc(classify.help or "") + "\n\n\b\nRecipe keys:\n" + _recipe_help()

__all__ = ["classify", "train"]

from visionkit.cli.train_detect import detect  # noqa: E402  (detection training lives in its own module)

train.add_command(detect)

from visionkit.cli.train_segment import segment  # noqa: E402  (segmentation training, its own module)

train.add_command(segment)

if __name__ == "__main__":  # the entry point of each torchrun rank (see visionkit.engine.distributed.launch)
    train()
