"""Every registered lab experiment runs in quick mode and returns a well-formed, serialisable result; every
claim quotes the handbook verbatim (where the handbook is present: ../shared/seed, or $VISIONKIT_SHARED)."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
from pathlib import Path

import pytest

from visionkit.lab.handbook import TOPICS
from visionkit.lab.registry import experiments
from visionkit.lab.results import Claim, Result
from visionkit.lab.runner import run_experiment

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("VISIONKIT_SHARED", ROOT.parent / "shared"))
HANDBOOK = SHARED / "seed" / "000_9867e0abe0a080e7.txt"
needs_handbook = pytest.mark.skipif(not HANDBOOK.is_file(), reason=f"handbook not present at {HANDBOOK}")

NAMES = [entry.name for entry in experiments()]
TIMED = {
    "separable-conv-cost",
    "compression-speed-storage",
    "deploy-fusion-int8",
}  # CPU times differ run to run


def _claims() -> list[Claim]:
    package = importlib.import_module("visionkit.lab.experiments")
    found: list[Claim] = []
    for module in pkgutil.iter_modules(package.__path__):
        loaded = importlib.import_module(f"{package.__name__}.{module.name}")
        found += [value for value in vars(loaded).values() if isinstance(value, Claim)]
    return found


@pytest.mark.parametrize("name", NAMES)
def test_experiment_runs_quick(name: str, lab_quick_out: Path) -> None:
    entry = next(e for e in experiments() if e.name == name)
    tmp_path = lab_quick_out
    result = run_experiment(entry, tmp_path, quick=True, use_cache=False)  # always runs (and fills the cache)
    assert result.verdicts and result.quick and result.name == name
    for verdict in result.verdicts:
        assert isinstance(verdict.holds, bool)
        assert verdict.claim.section in {*entry.sections}, (verdict.claim.section, entry.sections)
        assert verdict.criterion and verdict.measured
        assert verdict.correction == "" or verdict.is_erratum
    for figure in result.figures:
        assert (tmp_path / figure.path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stored = json.loads((tmp_path / "cache" / f"{name}-quick.json").read_text(encoding="utf-8"))
    assert Result.from_dict(stored).to_dict() == stored  # the stored JSON round-trips
    assert stored["code_version"] == result.code_version
    if name not in TIMED:  # seeded: the numbers are those of this run (another worker may have rewritten it)
        assert stored["numbers"] == json.loads(json.dumps(result.numbers))
    assert all(isinstance(value, float) for value in result.numbers.values())


def test_every_experiment_section_is_a_handbook_topic() -> None:
    sections = {section for section, _, _ in TOPICS}
    for entry in experiments():
        assert set(entry.sections) <= sections, entry


@needs_handbook
def test_claims_quote_the_handbook_verbatim() -> None:
    text = HANDBOOK.read_text(encoding="utf-8")
    plain = text.replace("**", "")  # markdown bold is not part of a quote (but `**` is Python's power)
    claims = _claims()
    assert len(claims) >= 20
    missing = [(claim.section, claim.quote) for claim in claims if claim.quote not in text + plain]
    assert not missing, missing


@needs_handbook
def test_table_of_contents_headings_are_the_handbooks() -> None:
    text = HANDBOOK.read_text(encoding="utf-8")
    for section, heading, _ in TOPICS:
        printed = f"### {section.strip('§')}、{heading}" if section != "frontier" else f"### {heading}"
        assert printed in text, printed
