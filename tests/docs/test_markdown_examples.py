"""Every ``python`` block of README.md and of the site's pages (docs/) runs, with its printed output compared.

A page's blocks run in order in one namespace (a later block may use an earlier block's names), in an empty
temporary working folder. The output of a block is the plain (or ``text``) block on the very next line;
a block without one must print nothing. No block is skipped: a page whose example is slow runs it on a
small input written into the example itself.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def fenced_blocks(text: str) -> list[tuple[str, str, int, int, int]]:
    """``(language, body, first line, start offset, end offset)`` of every fenced block of ``text``."""
    return [
        (m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1, m.start(), m.end())
        for m in FENCE.finditer(text)
    ]


def python_examples(text: str) -> list[tuple[str, str | None, int]]:
    """``(code, expected output or None, line)`` of every ``python`` block of a Markdown text."""
    blocks = fenced_blocks(text)
    examples = []
    for index, (language, body, line, _, end) in enumerate(blocks):
        if language != "python":
            continue
        expected = None
        if index + 1 < len(blocks):
            next_language, next_body, _, next_start, _ = blocks[index + 1]
            if next_language in ("", "text") and text[end:next_start] == "\n":
                expected = next_body
        examples.append((body, expected, line))
    return examples


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


PAGES = [page for page in pages() if python_examples(page.read_text(encoding="utf-8"))]


def _normalize(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip("\n").splitlines())


def test_the_pages_with_examples_are_found() -> None:
    names = {page.relative_to(ROOT).as_posix() for page in PAGES}
    assert {"README.md", "docs/guides/nms.md", "docs/getting-started.md"} <= names, names


def test_blocks_and_their_outputs_are_paired() -> None:
    text = "a\n```python\nprint(1)\n```\n```text\n1\n```\n\n```python\nx = 2\n```\n\n```\nnot output\n```\n"
    assert python_examples(text) == [("print(1)\n", "1\n", 2), ("x = 2\n", None, 9)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(ROOT).as_posix())
def test_python_blocks_run_and_print_what_the_page_shows(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__main__"}
    name = page.relative_to(ROOT).as_posix()
    for code, expected, line in python_examples(page.read_text(encoding="utf-8")):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, f"{name}:{line}", "exec"), namespace)
        want = "" if expected is None else expected
        assert _normalize(printed.getvalue()) == _normalize(want), f"{name}, the block at line {line}"
