"""Smoke test of the registered VGG variants (the rest of the registry: test_models_smoke.py)."""

from __future__ import annotations

import pytest
from test_models_smoke import run_smoke_test

from visionkit.models import list_models


@pytest.mark.parametrize("name", list_models("vgg*"))
def test_smoke_vgg(name: str) -> None:
    run_smoke_test(name)
