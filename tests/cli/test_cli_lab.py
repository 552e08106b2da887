"""`visionkit lab` through click's CliRunner: list, run (quick) with the book written, errata, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from visionkit.cli import main
from visionkit.lab.registry import experiments


def test_lab_list_names_every_experiment() -> None:
    result = CliRunner().invoke(main, ["lab", "list"], terminal_width=200)
    assert result.exit_code == 0, result.output
    for entry in experiments():
        assert entry.name in result.output


def test_lab_run_section_quick_writes_the_book(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["lab", "run", "§13", "--quick", "--out", str(tmp_path)], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "34,944" in result.output and "holds" in result.output
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert (
        "alexnet-params" in page
        and (tmp_path / "figures" / "alexnet-params" / "alexnet_params.png").is_file()
    )
    assert (tmp_path / "cache" / "alexnet-params-quick.json").is_file()


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab tests' shared quick-results folder (tests/lab/conftest.py): cached experiments run once."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "lab-quick-shared"
    folder.mkdir(exist_ok=True)
    return folder


def test_lab_errata_prints_computed_corrections(shared_out: Path) -> None:
    result = CliRunner().invoke(main, ["lab", "errata", "--out", str(shared_out)], terminal_width=200)
    assert result.exit_code == 0, result.output
    for expected in ("387,072", "157,184", "2/6 = 33.3%", "x -= learning_rate * dx", "ZeroDivisionError"):
        assert expected in result.output, expected
    count = sum(1 for line in result.output.splitlines() if line[:1].isdigit() and ". §" in line[:6])
    assert f"({count}, computed by {sum(e.errata for e in experiments())} experiments)" in result.output


def test_lab_rejects_unknown_key_and_bad_out(tmp_path: Path) -> None:
    unknown = CliRunner().invoke(main, ["lab", "run", "§99", "--out", str(tmp_path)])
    assert unknown.exit_code == 2 and "no lab experiment '§99'" in unknown.output
    blocker = tmp_path / "file"
    blocker.write_text("")
    bad_out = CliRunner().invoke(main, ["lab", "run", "§13", "--quick", "--out", str(blocker)])
    assert bad_out.exit_code == 2 and "--out" in bad_out.output and "is a file" in bad_out.output
    below_file = CliRunner().invoke(main, ["lab", "run", "§13", "--quick", "--out", str(blocker / "book")])
    assert below_file.exit_code == 2 and "is not writable" in below_file.output, below_file.output
    assert not (tmp_path / "cache").exists()  # nothing computed before the checks
