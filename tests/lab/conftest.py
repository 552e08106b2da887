"""Lab test settings: one folder of quick lab results shared by the lab tests of a session (also across
pytest-xdist workers), so an experiment that several tests need runs once; the runner's cache is keyed by
code version and written atomically, so sharing it is safe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lab_quick_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = root / "lab-quick-shared"
    folder.mkdir(exist_ok=True)
    return folder
