"""``visionkit summary MODEL --input 1x3x224x224``: per-layer shapes, parameters, MACs and FLOPs."""

from __future__ import annotations

import json

import click


def parse_input_size(text: str) -> tuple[int, ...]:
    """``"1x3x224x224"`` -> ``(1, 3, 224, 224)``.

    Example:
        >>> parse_input_size("1x3x64x64")
        (1, 3, 64, 64)
    """
    parts = text.lower().replace("×", "x").split("x")
    try:
        size = tuple(int(part) for part in parts)
    except ValueError:
        raise click.BadParameter(
            f"expected sizes like 1x3x224x224, got {text!r}", param_hint="--input"
        ) from None
    if not size or any(value <= 0 for value in size):
        raise click.BadParameter(f"sizes must be positive integers, got {text!r}", param_hint="--input")
    return size


@click.command()
@click.argument("model_name")
@click.option("--input", "input_text", default="1x3x224x224", show_default=True, help="Input shape NxCxHxW.")
@click.option("--num-classes", type=int, default=None, help="Passed to the model builder.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
@click.option("--max-rows", type=int, default=None, help="Show only the first N layers in the table.")
def summary(
    model_name: str, input_text: str, num_classes: int | None, as_json: bool, max_rows: int | None
) -> None:
    """Per-layer output shape, parameters, MACs, FLOPs (= 2 × MACs) and receptive field of MODEL_NAME."""
    import torch

    from visionkit.analysis import summary as summarize
    from visionkit.models import create_model, list_models
    from visionkit.models.backbones import Backbone

    if model_name not in list_models():
        raise click.BadParameter(
            f"unknown model {model_name!r}; available: {', '.join(list_models())}", param_hint="MODEL_NAME"
        )
    input_size = parse_input_size(input_text)
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    with torch.device("meta"):  # shapes and counts only: no memory, no weights initialised
        model = create_model(model_name, **kwargs)
    if isinstance(model, Backbone):
        result = summarize(model, input_size, device="meta")
    else:  # detectors take a list of (C, H, W) images and run data-dependent post-processing
        if len(input_size) != 4:
            raise click.BadParameter(f"expected NxCxHxW, got {input_text!r}", param_hint="--input")
        model = create_model(model_name, **kwargs)
        images = [torch.zeros(input_size[1:]) for _ in range(input_size[0])]
        result = summarize(model, inputs=images)
    if as_json:
        click.echo(json.dumps({"model": model_name, **result.to_dict()}, indent=2))
        return
    from rich.console import Console

    console = Console()
    if not console.is_terminal or console.width < 150:
        console = Console(width=160)  # the table has nine columns; never truncate names or numbers
    console.print(result.to_rich_table(f"{model_name} @ {'x'.join(map(str, input_size))}", max_rows))
    console.print(
        f"params {result.total_params:,} | MACs {result.total_macs:,} ({result.total_macs / 1e9:.3f} G) | "
        f"FLOPs {result.total_flops:,} (= 2 × MACs) | "
        f"other ops (norm, activations, pooling, adds) {result.total_other_ops:,}"
    )
    uncounted = ", ".join(result.uncounted) if result.uncounted else "none"
    console.print(f"uncounted modules/ops: {uncounted}")
