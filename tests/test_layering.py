"""The one-way import layering of CONTRIBUTING.md: a package may import only from packages of a lower rank."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "visionkit"

# ops (torch only) -> nn/losses/data -> models -> metrics/analysis/viz -> engine -> compress -> deploy -> lab
# -> cli. compress sits above engine: pruning, weight sharing and distillation fine-tune with the trainer.
RANK = {
    "ops": 0,
    "nn": 1,
    "losses": 1,
    "data": 1,
    "models": 2,
    "metrics": 3,
    "analysis": 3,
    "viz": 3,
    "engine": 4,
    "compress": 5,
    "deploy": 6,
    "lab": 7,
    "cli": 8,
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    package = path.relative_to(SRC.parent).with_suffix("").parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this file's package
                base = package[: len(package) - node.level]
                name = ".".join((*base, node.module) if node.module else base)
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "visionkit" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def test_every_subpackage_has_a_rank() -> None:
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(RANK), f"unranked subpackages: {packages - set(RANK)}"


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_one_way(path: Path) -> None:
    own = path.relative_to(SRC).parts[0]
    own_rank = RANK.get(own, -1)  # top-level modules such as __init__.py sit below every layer
    bad = []
    for lineno, module in _imports(path):
        layer = _layer(module)
        if layer is None or layer == own:
            continue
        if RANK[layer] >= own_rank:
            bad.append(f"line {lineno}: {module} (rank {RANK[layer]}) from {own} (rank {own_rank})")
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_ops_import_only_torch_and_stdlib() -> None:
    allowed = set(sys.stdlib_module_names) | {"torch", "visionkit"}
    for path in (SRC / "ops").rglob("*.py"):
        for lineno, module in _imports(path):
            root = module.split(".")[0]
            assert root in allowed, f"{path.name}:{lineno} imports {module} (ops: torch + stdlib only)"
