"""Every ``$ visionkit ...`` line shown in README.md and on the site's pages is a command that exists today.

Each line is resolved through the Click groups to its command and parsed by it (options, arguments,
choices; nothing runs). The ``key=value`` items of a recipe command must name a key of that recipe (or
``cfg``) and cast to its type, so a renamed key or a removed option fails here instead of in a user's
terminal.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pytest

from visionkit.cli import main
from visionkit.compress.run import CompressRecipe
from visionkit.deploy.export import ExportRecipe
from visionkit.engine.classify import ClassifyRecipe
from visionkit.engine.config import _field_types, cast_value
from visionkit.engine.detect import DetectRecipe
from visionkit.engine.segment import SegmentRecipe
from visionkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
RECIPES = {
    "train classify": ClassifyRecipe,
    "train detect": DetectRecipe,
    "train segment": SegmentRecipe,
    "eval detect": DetectRecipe,
    "eval segment": SegmentRecipe,
    "compress": CompressRecipe,
    "export": ExportRecipe,
}
PREDICT_KEYS = {"weights", "nms", "score_threshold", "out"}


def command_lines() -> list[tuple[str, int, str]]:
    """``(page, line number, command line)`` of every ``$ visionkit`` line of the README and docs/."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if line.startswith("$ visionkit"):
                found.append((page.relative_to(ROOT).as_posix(), number, line[2:]))
    return found


def resolve(words: list[str]) -> tuple[str, click.Command, list[str]]:
    """The command a ``visionkit`` argument list runs: its path, the command and its own arguments."""
    context = main.make_context("visionkit", [*words], resilient_parsing=True)
    command: click.Command = main
    args = [*words]
    path = []
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        name, found, args = command.resolve_command(context, args)
        if name is None or found is None:
            raise click.UsageError(f"no such command: visionkit {' '.join([*path, args[0]])}")
        command = found
        path.append(name)
        context = command.make_context(name, [*args], parent=context, resilient_parsing=True)
    return " ".join(path), command, args


LINES = command_lines()


def test_the_pages_show_command_lines() -> None:
    pages = {page for page, _, _ in LINES}
    assert {"README.md", "docs/guides/own-data.md", "docs/getting-started.md"} <= pages
    assert len(LINES) > 40


def check_line(page: str, number: int, line: str) -> None:
    """Raise (a Click usage error or an AssertionError) when ``line`` is not a valid visionkit command."""
    words = shlex.split(line, comments=True)[1:]
    path, command, args = resolve(words)
    where = f"{page}:{number}: {line}"
    if "--help" in args or "-h" in args:
        return
    try:  # options, arguments, choices
        command.make_context(path.split()[-1] if path else "visionkit", [*args])
    except click.BadParameter as error:  # the files a line names are the reader's, not here
        assert "does not exist" in str(error), f"{where}: {error}"
    items = [a for a in args if "=" in a and not a.startswith("-")]
    recipe = next((RECIPES[key] for key in RECIPES if path == key or path.startswith(key + " ")), None)
    if recipe is not None:
        fields = _field_types(recipe)
        for item in items:
            key, _, value = item.partition("=")
            known = key in fields or key == "cfg" or (key == "weights" and path.startswith("eval"))
            assert known, f"{where}: {recipe.__name__} has no key {key!r}"
            if key in fields:
                cast_value(key, value, fields[key])
    elif path == "predict":
        assert {item.partition("=")[0] for item in items} <= PREDICT_KEYS, where


@pytest.mark.parametrize(("page", "number", "line"), LINES, ids=[f"{p}:{n}" for p, n, _ in LINES])
def test_command_line_exists_and_parses(page: str, number: int, line: str) -> None:
    check_line(page, number, line)


def test_a_stale_line_fails() -> None:
    with pytest.raises(AssertionError, match="DetectRecipe has no key 'epochz'"):
        check_line("page.md", 1, "visionkit train detect epochz=3")
    with pytest.raises(ConfigError, match="epochs='many': expected int"):
        check_line("page.md", 1, "visionkit train detect epochs=many")
    with pytest.raises(click.UsageError, match="no such command"):
        check_line("page.md", 1, "visionkit trian detect")
    with pytest.raises(click.NoSuchOption):
        check_line("page.md", 1, "visionkit predict images/ --nmz hard")
    with pytest.raises(AssertionError, match="'softer' is not one of"):
        check_line("page.md", 1, "visionkit predict images/ --nms softer")
