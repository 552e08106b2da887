"""The built book renders in a real browser: headless Chromium (Debian's ``chromium``, installed here with
apt-get where missing; skipped with the reason where that is impossible) loads every figure, shows the
verdict table, and takes a screenshot. A deleted figure is reported broken, so the check can fail."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionkit.lab.book import write_book
from visionkit.lab.registry import experiment
from visionkit.lab.runner import run_experiments

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def _install_chromium() -> str | None:
    """apt-get install chromium (root only); the reason it failed, or None."""
    if shutil.which("apt-get") is None:
        return "chromium is not installed and apt-get is not available"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "chromium is not installed and installing it needs root"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=environment)
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"{' '.join(command)} failed: {error}"
        if done.returncode != 0:
            return f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()[-300:]}"
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        reason = _install_chromium()
        path = shutil.which("chromium")
        if path is None:
            pytest.skip(reason or "chromium could not be installed")
    return path


def _browse(chromium: str, page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    profile.mkdir(parents=True)  # a fresh, empty profile for every start
    command = [chromium, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=profile)


@pytest.fixture(scope="module")
def book(tmp_path_factory: pytest.TempPathFactory, lab_quick_out: Path) -> tuple[Path, int]:
    chosen = [experiment(name) for name in ("alexnet-params", "metric-examples", "inception-1x1")]
    results = run_experiments(chosen, lab_quick_out, quick=True)
    out = tmp_path_factory.mktemp("book")
    for result in results:  # the book's own folder: its figures beside it
        for figure in result.figures:
            (out / figure.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(lab_quick_out / figure.path, out / figure.path)
    return write_book(results, out), sum(len(r.verdicts) for r in results)


def _body_counts(dom: str) -> tuple[int, int]:
    found = re.search(r'<body[^>]*data-images="(\d+)"[^>]*data-broken-images="(\d+)"', dom)
    assert found, dom[:2000]
    return int(found.group(1)), int(found.group(2))


def test_book_renders_in_chromium(chromium: str, book: tuple[Path, int], tmp_path: Path) -> None:
    page, verdicts = book
    dom = _browse(chromium, page, tmp_path / "profile-dom", "--virtual-time-budget=5000", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    images, broken = _body_counts(dom.stdout)
    assert images == 3 and broken == 0
    table = re.search(r'<table id="verdicts">(.*?)</table>', dom.stdout, re.S)
    assert table and table.group(1).count("<tr>") == verdicts + 1  # header + one row per verdict
    shot = tmp_path / "book.png"
    done = _browse(
        chromium, page, tmp_path / "profile-shot", "--window-size=1200,1600", f"--screenshot={shot}"
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1200) and pixels.std() > 10  # a rendered page, not a blank one


def test_chromium_reports_a_broken_figure(chromium: str, book: tuple[Path, int], tmp_path: Path) -> None:
    page, _ = book
    copy = tmp_path / "copy"
    shutil.copytree(page.parent, copy)
    next((copy / "figures").rglob("*.png")).unlink()
    dom = _browse(
        chromium, copy / "index.html", tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom"
    )
    assert _body_counts(dom.stdout) == (3, 1)
