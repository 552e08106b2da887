"""Every ``>>>`` example in visionkit's docstrings runs, with its printed output compared (doctest).

One test per module that has examples, so a stale example fails with the module's name; a module that
cannot be imported fails rather than vanishing from the list.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import visionkit

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_names() -> list[str]:
    names = ["visionkit"]
    names += [info.name for info in pkgutil.walk_packages(visionkit.__path__, "visionkit.")]
    return sorted(names)


def _examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    found = doctest.DocTestFinder(exclude_empty=True).find(module, name)
    return [test for test in found if test.examples]  # the finder leaves out objects re-exported here


MODULES = _module_names()
WITH_EXAMPLES = [name for name in MODULES if _examples(name)]


def test_the_walk_finds_the_packages_examples() -> None:
    """The walk sees every subpackage and enough examples that a broken discovery cannot pass quietly."""
    for package in ("ops", "nn", "losses", "data", "models", "metrics", "engine", "compress", "lab", "cli"):
        assert any(name.startswith(f"visionkit.{package}.") for name in WITH_EXAMPLES), package
    assert "visionkit.ops.nms" in WITH_EXAMPLES
    assert sum(len(t.examples) for name in WITH_EXAMPLES for t in _examples(name)) > 400


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_docstring_examples_run(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples write their files ("mask.png", "runs/...") into an empty folder
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in _examples(name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (see above)"


def test_no_example_is_skipped() -> None:
    """A slow example runs on a small input it makes itself; none is marked ``+SKIP``."""
    skipped = [
        f"{name}: {example.source.strip()}"
        for name in WITH_EXAMPLES
        for test in _examples(name)
        for example in test.examples
        if example.options.get(doctest.SKIP)
    ]
    assert skipped == []
