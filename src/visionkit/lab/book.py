"""The lab's book: one HTML page (``runs/lab/index.html``) from the experiments' results.

The page follows the handbook's table of contents (:mod:`visionkit.lab.handbook`); each topic shows its
experiments — the claims quoted in Chinese with an English rendering, the criterion, the measured value
and the computed verdict, tables, figures (PNG files beside the page) and notes. A summary table of every
verdict and the errata list (facts that do not hold) come first. :func:`write_book` refuses to write a
page that refers to a missing image.

Example:
    >>> from visionkit.lab.registry import select
    >>> from visionkit.lab.runner import run_experiments
    >>> results = run_experiments(select("§13"), "lab", quick=True)
    >>> write_book(results, "lab")
    PosixPath('lab/index.html')
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from visionkit.lab.handbook import TOPICS
from visionkit.lab.registry import section_order
from visionkit.lab.report import referenced_images
from visionkit.lab.results import Result, Verdict, format_value
from visionkit.viz import metrics_table_html

__all__ = ["book_context", "errata", "verdict_label", "write_book"]

TEMPLATE = "book.html.j2"


def verdict_label(verdict: Verdict) -> str:
    """``"holds"``, ``"erratum"`` (a fact that does not hold) or ``"does not hold"`` (empirical)."""
    if verdict.holds:
        return "holds"
    return "erratum" if verdict.is_erratum else "does not hold"


def errata(results: Sequence[Result]) -> list[tuple[Result, Verdict]]:
    """Every verdict that proves the handbook wrong (a ``"fact"`` claim that does not hold), in book order."""
    ordered = sorted(results, key=lambda r: (section_order(r.sections[0]), r.name))
    found = [(result, verdict) for result in ordered for verdict in result.verdicts if verdict.is_erratum]
    return sorted(found, key=lambda pair: section_order(pair[1].claim.section))


def _cells(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [{key: format_value(value) for key, value in row.items()} for row in rows]


def _verdict_view(verdict: Verdict) -> dict[str, Any]:
    return {
        "section": verdict.claim.section,
        "quote": verdict.claim.quote,
        "english": verdict.claim.english,
        "kind": verdict.claim.kind,
        "criterion": verdict.criterion,
        "measured": verdict.measured,
        "label": verdict_label(verdict),
        "correction": verdict.correction,
    }


def _result_view(result: Result) -> dict[str, Any]:
    return {
        "name": result.name,
        "title": result.title,
        "sections": ", ".join(result.sections),
        "verdicts": [_verdict_view(v) for v in result.verdicts],
        "tables": [metrics_table_html(_cells(t.rows), caption=t.title) for t in result.tables if t.rows],
        "figures": [{"src": f.path, "caption": f.caption} for f in result.figures],
        "notes": result.notes,
        "seconds": f"{result.seconds:.1f}",
        "mode": "quick" if result.quick else "full",
        "code_version": result.code_version,
    }


def book_context(results: Sequence[Result], *, subtitle: str = "") -> dict[str, Any]:
    """The template's context: ``summary`` rows, ``errata``, ``topics`` (handbook order) and counts."""
    ordered = sorted(results, key=lambda r: (section_order(r.sections[0]), r.name))
    topics = []
    for section, heading, english in TOPICS:
        members = [_result_view(r) for r in ordered if r.sections[0] == section]
        also = [r.name for r in ordered if section in r.sections[1:]]
        topics.append(
            {
                "section": section,
                "anchor": f"topic-{section.strip('§')}",
                "heading": heading,
                "english": english,
                "results": members,
                "also": also,
            }
        )
    summary = [{**_verdict_view(v), "experiment": r.name} for r in ordered for v in r.verdicts]
    labels = [row["label"] for row in summary]
    return {
        "title": "visionkit lab: the handbook, executed",
        "subtitle": subtitle,
        "summary": summary,
        "counts": {label: labels.count(label) for label in ("holds", "does not hold", "erratum")},
        "errata": [{**_verdict_view(v), "experiment": r.name} for r, v in errata(ordered)],
        "topics": topics,
    }


def write_book(results: Sequence[Result], out: str | os.PathLike[str], *, subtitle: str = "") -> Path:
    """Render ``out/index.html`` from ``results`` (their figures must already be under ``out``).

    Raises:
        ValueError: the page refers to an image that is missing (all are named) or not relative.
    """
    out = Path(out)
    template = resources.files("visionkit.lab").joinpath("templates", TEMPLATE).read_text("utf-8")
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True)
    page = environment.from_string(template).render(**book_context(results, subtitle=subtitle))
    sources = referenced_images(page)
    remote = [src for src in sources if "://" in src or src.startswith("/")]
    if remote:
        raise ValueError(f"book images must be relative paths beside the page, got {remote}")
    missing = [src for src in sources if not (out / src).is_file()]
    if missing:
        raise ValueError(f"book {out / 'index.html'} refers to missing images: {missing}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
