"""Fixtures of the ops tests: the NMS backend switch (C kernels vs pure PyTorch engines)."""

from __future__ import annotations

import pytest

from visionkit.ops import _native_nms


@pytest.fixture(params=["native", "torch"])
def nms_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test once with the C loops and once with the PyTorch engines (same expected results)."""
    if request.param == "native" and _native_nms._kernels is None:
        pytest.skip("the C kernels are not built (no C compiler at install time)")
    monkeypatch.setattr(_native_nms, "enabled", request.param == "native")
    return request.param


@pytest.fixture
def torch_engines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force the PyTorch engines (tests of their internal paths and switches)."""
    monkeypatch.setattr(_native_nms, "enabled", False)
