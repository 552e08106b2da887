"""The registry of lab experiments, by handbook topic.

An experiment is a function ``(LabContext) -> Findings`` registered with :func:`register`; every module of
:mod:`visionkit.lab.experiments` is imported by :func:`load_experiments`, so a new module there is all it
takes to add one. :func:`experiment` finds one by name or section, :func:`select` all that match a key.

Example:
    >>> load_experiments()
    >>> experiment("§36").name
    'inception-1x1'
    >>> [e.name for e in select("§12")]
    ['separable-conv-cost']
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass

from visionkit.errors import ConfigError
from visionkit.lab.results import Findings

__all__ = [
    "Experiment",
    "experiment",
    "experiments",
    "load_experiments",
    "register",
    "section_order",
    "select",
]

_REGISTRY: dict[str, Experiment] = {}
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_SECTION = re.compile(r"^§([1-9]|[1-3][0-9])$")


@dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
        name: unique lowercase-dashed name (``"soft-nms"``).
        sections: the handbook sections it tests (``("§11", "§16", "§17")``).
        title: one line for the book.
        function: ``(LabContext) -> Findings``.
        module: the module that defines it (its source is part of the cache key).
        errata: it holds ``"fact"`` claims: ``visionkit lab errata`` runs it.
    """

    name: str
    sections: tuple[str, ...]
    title: str
    function: Callable[..., Findings]
    module: str
    errata: bool = False

    @property
    def order(self) -> tuple[float, str]:
        """Sort key: first section number, then name."""
        return (section_order(self.sections[0]), self.name)


def section_order(section: str) -> float:
    """``"§8"`` -> 8.0; ``"frontier"`` (the handbook's 前沿, printed between §36 and §37) -> 36.5.

    Example:
        >>> section_order("§12"), section_order("frontier")
        (12.0, 36.5)
    """
    if section == "frontier":
        return 36.5
    if not _SECTION.match(section):
        raise ValueError(f"section must look like '§1'..'§39' or be 'frontier', got {section!r}")
    return float(section[1:])


def register(
    name: str, sections: tuple[str, ...] | str, title: str, *, errata: bool = False
) -> Callable[[Callable[..., Findings]], Callable[..., Findings]]:
    """Decorator: register ``function`` as experiment ``name`` for ``sections``.

    Raises:
        ValueError: a bad name or section, or a name already registered by another function.
    """
    sections = (sections,) if isinstance(sections, str) else tuple(sections)
    if not _NAME.match(name):
        raise ValueError(f"experiment name must be lowercase letters, digits and dashes, got {name!r}")
    if not sections:
        raise ValueError(f"experiment {name!r} needs at least one section")
    for section in sections:
        section_order(section)

    def decorator(function: Callable[..., Findings]) -> Callable[..., Findings]:
        entry = Experiment(name, sections, title, function, function.__module__, errata)
        existing = _REGISTRY.get(name)
        if existing is not None and (existing.module, existing.function.__qualname__) != (
            entry.module,
            function.__qualname__,
        ):
            raise ValueError(f"experiment {name!r} is already registered by {existing.module}")
        _REGISTRY[name] = entry
        return function

    return decorator


def load_experiments() -> None:
    """Import every module of :mod:`visionkit.lab.experiments` (each registers its experiments)."""
    package = importlib.import_module("visionkit.lab.experiments")
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{module.name}")


def experiments() -> list[Experiment]:
    """Every registered experiment, in handbook order (loads them first)."""
    load_experiments()
    return sorted(_REGISTRY.values(), key=lambda e: e.order)


def select(key: str) -> list[Experiment]:
    """Experiments named ``key``, or covering section ``key`` (``"§8"``, also ``"8"``); ``"all"``: every one.

    Raises:
        ConfigError: nothing matches; the message lists the valid names and sections.
    """
    every = experiments()
    if key == "all":
        return every
    section = f"§{key}" if key.isdigit() else key
    found = [e for e in every if e.name == key or section in e.sections]
    if not found:
        names = ", ".join(e.name for e in every)
        sections = ", ".join(dict.fromkeys(s for e in every for s in e.sections))
        raise ConfigError(f"no lab experiment {key!r}; names: {names}; sections: {sections}")
    return found


def experiment(key: str) -> Experiment:
    """The one experiment named ``key`` or the only one covering section ``key``.

    Raises:
        ConfigError: none matches, or a section has several (the message names them).
    """
    found = select(key)
    if len(found) > 1:
        raise ConfigError(f"section {key!r} has {len(found)} experiments: {', '.join(e.name for e in found)}")
    return found[0]
