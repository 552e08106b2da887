"""``visionkit lab``: the executable handbook — list, run and read the experiments, and the errata.

Example::

    visionkit lab list                      # every experiment by handbook section
    visionkit lab run §36                   # one topic (or a name: visionkit lab run soft-nms)
    visionkit lab run §8 --quick            # the small version (seconds)
    visionkit lab all                       # every experiment → runs/lab/index.html (cached by code version)
    visionkit lab errata                    # where the handbook is wrong, each entry computed
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from visionkit.errors import ConfigError

__all__ = ["lab"]

_OUT = click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/lab"),
    show_default=True,
    help="Book folder: index.html, figures/, cache/.",
)
_QUICK = click.option("--quick", is_flag=True, help="Small runs (seconds each): fewer samples and epochs.")
_SEED = click.option("--seed", default=0, show_default=True, type=int, help="Seed of every random draw.")
_THREADS = click.option(
    "--threads",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="torch CPU threads while experiments run.",
)
_FRESH = click.option("--fresh", is_flag=True, help="Ignore cached results and recompute.")
_STYLE = {"holds": "green", "does not hold": "yellow", "erratum": "red"}


def _check_out(out: Path) -> None:
    """Fail before any work when the book folder cannot be created or written."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise ConfigError(f"--out {out} is not writable: {error.strerror or error}") from None


def _verdict_table(results: Sequence[object]) -> Table:
    from visionkit.lab.book import verdict_label

    table = Table(title="Verdicts")
    for column in ("§", "experiment", "claim", "criterion", "measured", "verdict"):
        table.add_column(column, overflow="fold")
    for result in results:
        for verdict in result.verdicts:  # type: ignore[attr-defined]
            label = verdict_label(verdict)
            table.add_row(
                verdict.claim.section,
                result.name,
                verdict.claim.english,  # type: ignore[attr-defined]
                verdict.criterion,
                verdict.measured,
                f"[{_STYLE[label]}]{label}[/]",
            )
    return table


def _run(key: str, out: Path, quick: bool, seed: int, threads: int, fresh: bool, console: Console) -> list:
    from visionkit.lab.book import write_book
    from visionkit.lab.registry import select
    from visionkit.lab.runner import run_experiments

    chosen = select(key)
    _check_out(out)
    start = time.perf_counter()

    def progress(entry: object, result: object) -> None:
        console.print(f"  {', '.join(result.sections)} {result.name}: {result.seconds:.1f} s")  # type: ignore[attr-defined]

    results = run_experiments(
        chosen, out, quick=quick, seed=seed, threads=threads, use_cache=not fresh, progress=progress
    )
    seconds = time.perf_counter() - start
    mode = "quick" if quick else "full"
    page = write_book(
        results,
        out,
        subtitle=f"{len(results)} experiment(s), {mode} mode, seed {seed}, "
        f"{threads} thread(s); this run {seconds:.0f} s (cached results reused)",
    )
    console.print(_verdict_table(results))
    console.print(f"book: {page}  ({seconds:.1f} s)")
    return results


@click.group("lab", context_settings={"help_option_names": ["-h", "--help"]})
def lab() -> None:
    """The executable handbook: each topic an experiment with a figure and a computed verdict."""


@lab.command("list")
def list_experiments() -> None:
    """List the experiments by handbook section."""
    from visionkit.lab.handbook import TOPICS
    from visionkit.lab.registry import experiments

    headings = {section: heading for section, heading, _ in TOPICS}
    table = Table(title="visionkit lab experiments")
    for column in ("§", "name", "title", "errata"):
        table.add_column(column)
    for entry in experiments():
        table.add_row(
            ", ".join(entry.sections),
            entry.name,
            f"{entry.title} ({headings[entry.sections[0]]})",
            "yes" if entry.errata else "",
        )
    Console().print(table)


@lab.command("run")
@click.argument("key")
@_OUT
@_QUICK
@_SEED
@_THREADS
@_FRESH
def run(key: str, out: Path, quick: bool, seed: int, threads: int, fresh: bool) -> None:
    """Run the experiments of section KEY (§8, or 8) or the one named KEY; write OUT/index.html."""
    _run(key, out, quick, seed, threads, fresh, Console())


@lab.command("all")
@_OUT
@_QUICK
@_SEED
@_THREADS
@_FRESH
def run_all(out: Path, quick: bool, seed: int, threads: int, fresh: bool) -> None:
    """Run every experiment (reusing cached results of unchanged code) and write OUT/index.html."""
    _run("all", out, quick, seed, threads, fresh, Console())


@lab.command("errata")
@_OUT
@_SEED
@_FRESH
def errata(out: Path, seed: int, fresh: bool) -> None:
    """Print where the handbook is wrong, each entry proven by its experiment's computation."""
    from visionkit.lab.book import errata as collect
    from visionkit.lab.registry import experiments
    from visionkit.lab.runner import run_experiments

    _check_out(out)
    chosen = [entry for entry in experiments() if entry.errata]
    results = run_experiments(chosen, out, quick=True, seed=seed, use_cache=not fresh)
    console = Console()
    entries = collect(results)
    console.print(
        f"[bold]Errata: where the handbook is wrong[/bold] ({len(entries)}, computed by "
        f"{len(results)} experiments)\n"
    )
    for number, (result, verdict) in enumerate(entries, 1):
        console.print(
            f"[bold]{number}. {verdict.claim.section}[/bold] 「{verdict.claim.quote}」", markup=True
        )
        console.print(f"   [italic]{verdict.claim.english}[/italic]")
        console.print(f"   [red]computed:[/red] {verdict.correction}")
        console.print(f"   test: {verdict.criterion} → {verdict.measured}  [dim]({result.name})[/dim]\n")
