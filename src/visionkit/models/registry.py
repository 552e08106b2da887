"""One flat registry of whole models (torchvision ``register_model`` / timm ``create_model`` style).

Register a builder function with :func:`register_model`; build it by name with :func:`create_model`;
find names with :func:`list_models`. Only whole models are registered (classification backbones,
detectors, segmentation networks); blocks and heads are imported directly.

A builder is a plain function that takes keyword arguments with defaults and returns an
``nn.Module``::

    @register_model()                    # registered as "resnet18" (the function's name)
    def resnet18(*, num_classes: int = 1000) -> ResNet: ...

    @register_model("retinanet_mobilenet_v2_fpn")
    def build_retinanet(*, num_classes: int = 91) -> RetinaNet: ...

:func:`create_model` checks the keyword arguments against the builder's signature *before* calling it
and rejects unknown ones with a ``TypeError`` that names them and lists the accepted ones.

Example:
    >>> from visionkit.models import create_model, list_models
    >>> model = create_model("resnet18", num_classes=10)
    >>> "resnet50" in list_models("resnet*")
    True
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from visionkit.errors import UnknownModelError

__all__ = ["create_model", "get_model_builder", "list_models", "register_model"]

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}

#: Sub-packages whose import registers built-in models. Missing ones (not written yet) are skipped;
#: an import error inside an existing one is raised, never hidden.
_BUILTIN_MODEL_PACKAGES = (
    "visionkit.models.backbones",
    "visionkit.models.detectors",
    "visionkit.models.segmentation",
    "visionkit.models.small",
)
_builtins_loaded = False


def register_model(name: str | None = None) -> Callable[[Builder], Builder]:
    """Decorator that registers a model builder under ``name`` (default: the function's ``__name__``).

    Args:
        name: registry name, e.g. ``"resnet50"``. Must be unique.

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        ValueError: if the name is already registered to a different function.
        TypeError: if used without parentheses (``@register_model`` instead of ``@register_model()``)
            or on something that is not callable.

    Example:
        >>> from torch import nn
        >>> @register_model("doc_example_tiny_mlp")
        ... def tiny_mlp(*, hidden: int = 4) -> nn.Module:
        ...     return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        >>> create_model("doc_example_tiny_mlp", hidden=8)[0].out_features
        8
    """
    if callable(name):
        raise TypeError("register_model must be called: use @register_model() or @register_model('name')")
    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"register_model: name must be a non-empty str or None, got {name!r}")

    def decorator(builder: Builder) -> Builder:
        if not callable(builder):
            raise TypeError(f"register_model: expected a callable builder, got {type(builder).__name__}")
        key = name or builder.__name__
        existing = _REGISTRY.get(key)
        if existing is not None and _qualified(existing) != _qualified(builder):
            raise ValueError(
                f"register_model: name {key!r} is already registered to {_qualified(existing)}; "
                f"cannot register {_qualified(builder)}"
            )
        _REGISTRY[key] = builder
        return builder

    return decorator


def _qualified(function: Callable[..., Any]) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', repr(function))}"


def _load_builtin_models() -> None:
    """Import the packages that register built-in models (once)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    for package in _BUILTIN_MODEL_PACKAGES:
        if importlib.util.find_spec(package) is not None:
            importlib.import_module(package)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of registered models matching a shell-style ``pattern`` (``fnmatch``).

    Example:
        >>> list_models("vgg1[16]")
        ['vgg11', 'vgg16']
    """
    if not isinstance(pattern, str):
        raise TypeError(f"list_models: pattern must be a str, got {type(pattern).__name__}")
    _load_builtin_models()
    return sorted(key for key in _REGISTRY if fnmatch.fnmatchcase(key, pattern))


def get_model_builder(name: str) -> Callable[..., nn.Module]:
    """The builder function registered as ``name``.

    Raises:
        UnknownModelError: (a KeyError) unknown name; the message lists close matches.
    """
    _load_builtin_models()
    if name not in _REGISTRY:
        import difflib

        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}{hint} (see visionkit.models.list_models())")
    return _REGISTRY[name]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments checked against its builder.

    Args:
        name: a name from :func:`list_models`.
        **kwargs: keyword arguments of the builder (e.g. ``num_classes=10``).

    Returns:
        The model (``nn.Module``).

    Raises:
        UnknownModelError: (a KeyError) unknown model name.
        TypeError: keyword arguments the builder does not accept; the message names them and lists
            the accepted ones.

    Example:
        >>> create_model("resnet18", num_classes=10).fc.out_features
        10
    """
    builder = get_model_builder(name)
    parameters = inspect.signature(builder).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if not accepts_any:
        accepted = [
            key
            for key, p in parameters.items()
            if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise TypeError(
                f"create_model({name!r}): unknown keyword argument(s) {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(accepted) if accepted else '(none)'}"
            )
    return builder(**kwargs)
