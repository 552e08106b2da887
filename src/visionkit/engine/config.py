"""Plain-Python configuration: frozen dataclass recipes plus ``key=value`` overrides (ultralytics style).

A recipe is a ``@dataclass(frozen=True)`` whose fields have defaults and simple types: ``int``,
``float``, ``bool``, ``str``, ``Literal[...]`` choices, ``X | None`` and ``tuple[int, ...]`` /
``tuple[float, ...]``. :func:`apply_overrides` casts each ``key=value`` string to the field's type and
rejects unknown keys (listing the valid ones) and values of the wrong type or outside the choices.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Recipe:
    ...     lr: float = 0.1
    ...     epochs: int = 10
    >>> apply_overrides(Recipe(), ["lr=0.5", "epochs=3"])
    Recipe(lr=0.5, epochs=3)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from visionkit.errors import ConfigError

RecipeT = TypeVar("RecipeT")
_TRUE, _FALSE = ("true", "yes", "1", "on"), ("false", "no", "0", "off")
_NONE = ("none", "null")


def _field_types(recipe_type: type) -> dict[str, Any]:
    hints = typing.get_type_hints(recipe_type)
    return {field.name: hints[field.name] for field in dataclasses.fields(recipe_type)}


def cast_value(key: str, text: str, annotation: Any) -> Any:
    """Cast the string ``text`` to ``annotation`` (see the module docstring); errors name ``key``."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        if text.strip().lower() in _NONE and type(None) in arguments:
            return None
        inner = [a for a in arguments if a is not type(None)]
        errors = []
        for candidate in inner:
            try:
                return cast_value(key, text, candidate)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError("; ".join(errors))
    if origin is Literal:
        choices = list(arguments)
        for choice in choices:
            if str(choice) == text:
                return choice
        raise ConfigError(f"{key}={text!r}: expected one of {choices}")
    if origin is tuple:
        element = arguments[0] if arguments else str
        parts = [p for p in text.replace("(", "").replace(")", "").split(",") if p.strip()]
        return tuple(cast_value(key, p.strip(), element) for p in parts)
    if annotation is bool:
        if text.strip().lower() in _TRUE:
            return True
        if text.strip().lower() in _FALSE:
            return False
        raise ConfigError(f"{key}={text!r}: expected a boolean (true/false)")
    if annotation in (int, float):
        try:
            value = annotation(text) if annotation is float else int(text)
        except ValueError:
            raise ConfigError(f"{key}={text!r}: expected {annotation.__name__}") from None
        return value
    if annotation is str:
        return text
    raise ConfigError(f"{key}: unsupported field type {annotation!r}")


def apply_overrides(recipe: RecipeT, overrides: Sequence[str]) -> RecipeT:
    """Return a copy of ``recipe`` with ``key=value`` overrides applied (values cast to field types).

    ``cfg=FILE`` (a YAML or JSON file of ``key: value``; a run's ``config.json`` is one) is applied first,
    wherever it stands; the other ``key=value`` items then win over it.

    Raises:
        ConfigError: malformed item, unknown key (the message lists the valid keys) or bad value.
    """
    if not dataclasses.is_dataclass(recipe) or isinstance(recipe, type):
        raise TypeError(f"recipe must be a dataclass instance, got {type(recipe).__name__}")
    annotations = _field_types(type(recipe))
    files = [item.partition("=")[2].strip() for item in overrides if item.partition("=")[0].strip() == "cfg"]
    for file in files:
        recipe = apply_config_file(recipe, file)
    overrides = [item for item in overrides if item.partition("=")[0].strip() != "cfg"]
    changes: dict[str, Any] = {}
    for item in overrides:
        key, separator, text = item.partition("=")
        key = key.strip()
        if not separator or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        if key not in annotations:
            raise ConfigError(f"unknown key {key!r}; valid keys: {', '.join(annotations)}")
        changes[key] = cast_value(key, text.strip(), annotations[key])
    return dataclasses.replace(recipe, **changes)  # type: ignore[type-var]


def apply_config_file(recipe: RecipeT, path: str | os.PathLike[str]) -> RecipeT:
    """A copy of ``recipe`` with the keys of a YAML or JSON file applied, cast and checked like command-line
    values (a string value is cast to the field's type; a list becomes a tuple).

    Raises:
        ConfigError: unreadable file, not a mapping, an unknown key, a recipe of another kind (a run's
            ``recipe`` entry) or a bad value — naming the file and the key.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cfg={str(path)!r}: cannot read it ({error.strerror or error})") from None
    import yaml

    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:  # json.JSONDecodeError is a ValueError
        raise ConfigError(f"cfg={str(path)!r}: not valid JSON/YAML ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"cfg={str(path)!r}: expected a mapping of key: value, got {type(data).__name__}")
    kind = data.pop("recipe", type(recipe).__name__)
    if kind != type(recipe).__name__:
        raise ConfigError(f"cfg={str(path)!r}: holds a {kind}, not a {type(recipe).__name__}")
    annotations = _field_types(type(recipe))
    changes: dict[str, Any] = {}
    for key, value in data.items():
        if key not in annotations:
            raise ConfigError(f"cfg={str(path)!r}: unknown key {key!r}; valid keys: {', '.join(annotations)}")
        if isinstance(value, str) and annotations[key] is not str:
            try:
                value = cast_value(key, value, annotations[key])
            except ConfigError as error:
                raise ConfigError(f"cfg={str(path)!r}: {error}") from None
        changes[key] = tuple(value) if isinstance(value, list) else value
    try:
        return dataclasses.replace(recipe, **changes)  # type: ignore[type-var]
    except ConfigError as error:
        raise ConfigError(f"cfg={str(path)!r}: {error}") from None


def recipe_to_dict(recipe: Any) -> dict[str, Any]:
    """The recipe as a JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(recipe)))


def save_recipe(recipe: Any, path: str | os.PathLike[str]) -> Path:
    """Write the recipe as JSON (with its class name) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"recipe": type(recipe).__name__, **recipe_to_dict(recipe)}, indent=2) + "\n")
    return path


def load_recipe(recipe_type: type[RecipeT], path: str | os.PathLike[str]) -> RecipeT:
    """Read a recipe written by :func:`save_recipe`; unknown keys are an error naming the file."""
    data = json.loads(Path(path).read_text())
    data.pop("recipe", None)
    annotations = _field_types(recipe_type)
    unknown = sorted(set(data) - set(annotations))
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; valid keys: {', '.join(annotations)}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return recipe_type(**values)


def _fits(value: Any, annotation: Any) -> bool:
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return any(_fits(value, argument) for argument in arguments)
    if origin is Literal:
        return value in arguments
    if origin is tuple:
        element = arguments[0] if arguments else Any
        return isinstance(value, tuple) and all(_fits(v, element) for v in value)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return annotation is Any or isinstance(value, annotation)


def check_types(recipe: Any) -> None:
    """Raise a :class:`ConfigError` for the first field whose value does not have the field's type (a
    recipe built in Python with ``amp="yes"`` is refused as ``amp="yes"`` is on the command line)."""
    for name, annotation in _field_types(type(recipe)).items():
        value = getattr(recipe, name)
        if not _fits(value, annotation):
            expected = (
                str(annotation).replace("typing.", "")
                if not isinstance(annotation, type)
                else annotation.__name__
            )
            raise ConfigError(f"{name}={value!r}: expected {expected}")


def require(valid: bool, key: str, value: Any, expected: str) -> None:
    """Raise a :class:`ConfigError` ``"key=value: expected ..."`` unless ``valid`` (for ``__post_init__``).

    Example:
        >>> require(3 >= 1, "epochs", 3, "an integer >= 1")
        >>> require(-1 >= 1, "epochs", -1, "an integer >= 1")
        Traceback (most recent call last):
        ...
        visionkit.errors.ConfigError: epochs=-1: expected an integer >= 1
    """
    if not valid:
        raise ConfigError(f"{key}={value!r}: expected {expected}")


def is_integer(value: Any, minimum: int | None = None) -> bool:
    """An ``int`` (not a bool) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def is_number(value: Any, low: float = -math.inf, high: float = math.inf, *, open_low: bool = False) -> bool:
    """A finite real number in ``[low, high]`` (``(low, high]`` with ``open_low``)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return (value > low if open_low else value >= low) and value <= high


def describe_recipe(recipe_type: type) -> list[tuple[str, str, str]]:
    """``(name, type, default)`` rows for help texts."""
    rows = []
    for field in dataclasses.fields(recipe_type):
        annotation = _field_types(recipe_type)[field.name]
        kind = annotation.__name__ if isinstance(annotation, type) else str(annotation).replace("typing.", "")
        rows.append((field.name, kind, repr(field.default)))
    return rows


__all__ = [
    "ConfigError",
    "apply_config_file",
    "apply_overrides",
    "cast_value",
    "check_types",
    "describe_recipe",
    "is_integer",
    "is_number",
    "load_recipe",
    "recipe_to_dict",
    "require",
    "save_recipe",
]
