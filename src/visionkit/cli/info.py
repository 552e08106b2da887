"""``visionkit info``: what this installation runs on."""

from __future__ import annotations

import json
import platform
import sys

import click
import torch

from visionkit import __version__


def collect_info() -> dict[str, object]:
    """Return versions, thread counts and available devices as a plain dict.

    Example:
        >>> info = collect_info()
        >>> {'visionkit', 'torch', 'cuda', 'mps'} <= set(info)
        True
    """
    import numpy

    from visionkit.ops._native_nms import backend_name

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    return {
        "visionkit": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cuda": cuda,
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "mps": mps,
        "default_device": "cuda" if cuda else ("mps" if mps else "cpu"),
        "nms_backend": backend_name(),
    }


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(as_json: bool) -> None:
    """Print versions, threads and devices."""
    data = collect_info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="visionkit info", show_header=False)
    for key, value in data.items():
        table.add_row(key, str(value))
    Console().print(table)
