"""The flat model registry: register, list, create, and reject bad names / keyword arguments."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from torch import nn

from visionkit.models import create_model, get_model_builder, list_models, register_model, registry


def _linear(*, in_features: int = 2, out_features: int = 3) -> nn.Module:
    return nn.Linear(in_features, out_features)


@pytest.fixture(autouse=True)
def _registered() -> Iterator[None]:
    """Register the test model for these tests only: registered at import, it leaked into every test that
    is parametrised over ``list_models()`` and collected after this file (e.g. the fusion test)."""
    register_model("test_registry_linear")(_linear)
    yield
    registry._REGISTRY.pop("test_registry_linear", None)


def test_register_create_and_list() -> None:
    model = create_model("test_registry_linear", out_features=5)
    assert isinstance(model, nn.Linear) and model.out_features == 5
    assert "test_registry_linear" in list_models("test_registry_*")
    assert list_models("test_registry_*") == sorted(list_models("test_registry_*"))
    assert get_model_builder("test_registry_linear") is _linear


def test_unknown_keyword_is_named() -> None:
    with pytest.raises(TypeError, match=r"'hidden'.*accepted: in_features, out_features"):
        create_model("test_registry_linear", hidden=4)


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(KeyError, match="test_registry_linear"):
        create_model("test_registry_linaer")


def test_duplicate_name_rejected_and_bare_decorator_rejected() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_model("test_registry_linear")
        def other() -> nn.Module:
            return nn.Identity()

    with pytest.raises(TypeError, match="must be called"):
        register_model(_linear)  # type: ignore[arg-type]


def test_list_models_pattern_type() -> None:
    with pytest.raises(TypeError, match="pattern"):
        list_models(3)  # type: ignore[arg-type]
