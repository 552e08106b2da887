"""Run lab experiments: seeded, figures saved as PNG, results cached by code version.

:func:`run_experiment` seeds every RNG, calls the experiment with a :class:`LabContext` (``quick`` flag,
seeded generators, :meth:`LabContext.figure` to save a matplotlib figure as PNG) and stores the
:class:`~visionkit.lab.results.Result` as JSON under ``out/cache/``. The cache key is the
:func:`code_version` of the experiment: a hash of its module's source and of every visionkit module it
imports (transitively), plus the torch version, the mode and the seed — so ``visionkit lab all`` reruns
only the experiments whose code (or library code) changed.

Example:
    >>> from visionkit.lab.registry import experiment
    >>> result = run_experiment(experiment("§13"), out="lab", quick=True)
    >>> result.verdicts[0].holds
    True
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import visionkit
from visionkit.engine.checkpoint import seed_everything
from visionkit.lab.registry import Experiment
from visionkit.lab.results import Figure, Findings, Result

__all__ = ["LabContext", "code_version", "run_experiment", "run_experiments"]

_CACHE_FORMAT = 1
_DOTTED = re.compile(r"^visionkit(\.[a-z_][a-z0-9_]*)+$")


@dataclass
class LabContext:
    """What an experiment gets: the mode, the seed, and where its figures go.

    Attributes:
        quick: a small run (for tests and ``--quick``): fewer samples, epochs and repeats.
        seed: every random draw derives from it.
        out: the book's folder; figures are written to ``out/figures/<experiment>/<name>.png``.
        name: the experiment's name.
    """

    quick: bool
    seed: int
    out: Path
    name: str
    figures: list[Figure] = field(default_factory=list)

    def generator(self, offset: int = 0) -> torch.Generator:
        """A torch CPU generator seeded with ``seed + offset``."""
        return torch.Generator().manual_seed(self.seed + offset)

    def rng(self, offset: int = 0) -> np.random.Generator:
        """A NumPy generator seeded with ``seed + offset``."""
        return np.random.default_rng(self.seed + offset)

    def pick(self, quick: Any, full: Any) -> Any:
        """``quick`` in quick mode, else ``full``."""
        return quick if self.quick else full

    def figure(self, figure: Any, name: str, caption: str) -> Figure:
        """Save a matplotlib ``figure`` as PNG (then close it) and record it for the book."""
        import matplotlib.pyplot as plt

        relative = Path("figures") / self.name / f"{name}.png"
        path = self.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp.png")
        figure.savefig(temporary, dpi=80)
        plt.close(figure)
        os.replace(temporary, path)
        entry = Figure(name, caption, relative.as_posix())
        self.figures.append(entry)
        return entry


def _module_file(name: str) -> Path | None:
    """The source file of visionkit module ``name`` (found on disk, nothing imported), or ``None``."""
    root = Path(visionkit.__file__).parent
    base = root.joinpath(*name.split(".")[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _visionkit_imports(path: Path, module: str) -> frozenset[str]:
    """Names of the visionkit modules ``path`` imports (see :func:`_parsed_imports`), parsed once per file
    version in a process."""
    return _parsed_imports(path, module, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _parsed_imports(path: Path, module: str, mtime_ns: int) -> frozenset[str]:
    """Names of the visionkit modules ``path`` imports (absolute or relative, any depth), and string
    constants naming one (modules imported with ``importlib`` at run time)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            stem = ".".join(p for p in (base, node.module or "") if p)
            names.add(stem)
            names.update(f"{stem}.{alias.name}" for alias in node.names)  # submodules imported by name
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.match(node.value):
            names.add(node.value)  # a module imported by name at run time (the model registry does)
    return frozenset(n for n in names if n == "visionkit" or n.startswith("visionkit."))


def _closure(module: str) -> dict[str, Path]:
    """The visionkit modules ``module`` depends on through imports, with their files (packages' inits too)."""
    seen: dict[str, Path] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        path = _module_file(name)
        if path is None:
            continue
        seen[name] = path
        parents = [".".join(name.split(".")[:i]) for i in range(2, name.count(".") + 1)]
        pending += [p for p in parents if p not in seen]
        pending += [n for n in _visionkit_imports(path, name) if n not in seen]
    return seen


def code_version(experiment: Experiment, *, quick: bool, seed: int, threads: int = 1) -> str:
    """Hash of the experiment's code and everything it imports from visionkit, the torch version, mode,
    seed and thread count (16 hex digits)."""
    digest = hashlib.sha256(f"{_CACHE_FORMAT}|{torch.__version__}|{quick}|{seed}|{threads}".encode())
    modules = _closure(experiment.module) | _closure("visionkit.lab.runner")
    for name in sorted(modules):
        digest.update(name.encode())
        digest.update(modules[name].read_bytes())
    return digest.hexdigest()[:16]


def _cache_path(out: Path, experiment: Experiment, quick: bool) -> Path:
    return out / "cache" / f"{experiment.name}-{'quick' if quick else 'full'}.json"


def _cached(path: Path, version: str, out: Path) -> Result | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None  # a torn or foreign file: recompute
    if data.get("code_version") != version:
        return None
    result = Result.from_dict(data)
    if not all((out / figure.path).is_file() for figure in result.figures):
        return None
    return result


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def run_experiment(
    experiment: Experiment,
    out: str | os.PathLike[str],
    *,
    quick: bool = False,
    seed: int = 0,
    use_cache: bool = True,
    threads: int = 1,
) -> Result:
    """Run one experiment (or return its cached result when its code version is unchanged).

    Args:
        experiment: from :mod:`visionkit.lab.registry`.
        out: the book's folder (``figures/`` and ``cache/`` go inside).
        quick: the small run.
        seed: seeds Python, NumPy, torch and the context's generators.
        use_cache: reuse a stored result of the same code version; ``False`` always recomputes.
        threads: torch CPU threads while it runs (restored afterwards). One by default: the lab's models
            are small, one thread is fastest for them on a busy machine and keeps results reproducible.

    Returns:
        The :class:`Result` (also written to ``out/cache/<name>-<quick|full>.json``).
    """
    out = Path(out)
    version = code_version(experiment, quick=quick, seed=seed, threads=threads)
    path = _cache_path(out, experiment, quick)
    if use_cache and (cached := _cached(path, version, out)) is not None:
        return cached
    seed_everything(seed)
    context = LabContext(quick=quick, seed=seed, out=out, name=experiment.name)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        findings = experiment.function(context)
    finally:
        torch.set_num_threads(previous_threads)
    seconds = time.perf_counter() - start
    if not isinstance(findings, Findings) or not findings.verdicts:
        raise TypeError(f"experiment {experiment.name!r} must return Findings with at least one verdict")
    result = Result(
        name=experiment.name,
        sections=experiment.sections,
        title=experiment.title,
        verdicts=findings.verdicts,
        tables=findings.tables,
        figures=context.figures,
        numbers={k: float(v) for k, v in findings.numbers.items()},
        notes=findings.notes,
        quick=quick,
        seed=seed,
        seconds=round(seconds, 3),
        code_version=version,
    )
    _write_atomic(path, json.dumps(result.to_dict(), indent=1, ensure_ascii=False) + "\n")
    return result


def run_experiments(
    chosen: Iterable[Experiment],
    out: str | os.PathLike[str],
    *,
    quick: bool = False,
    seed: int = 0,
    use_cache: bool = True,
    threads: int = 1,
    progress: Any = None,
) -> list[Result]:
    """Run several experiments in order; ``progress(experiment, result)`` is called after each."""
    results = []
    for entry in chosen:
        result = run_experiment(entry, out, quick=quick, seed=seed, use_cache=use_cache, threads=threads)
        if progress is not None:
            progress(entry, result)
        results.append(result)
    return results
