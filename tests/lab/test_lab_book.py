"""The lab's mechanism: results and verdicts, the registry, the cached seeded runner and the HTML book."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from visionkit.errors import ConfigError
from visionkit.lab import registry
from visionkit.lab.book import book_context, errata, verdict_label, write_book
from visionkit.lab.report import referenced_images
from visionkit.lab.results import Claim, Findings, Result, Table, judge
from visionkit.lab.runner import code_version, run_experiment

FACT = Claim("§33", "Recall=2/6=30%", "recall is 30 %", kind="fact")
EMPIRICAL = Claim("§13", "参数数目远大于所有Conv Layer的参数和", "FC dominates")


def test_judge_requires_a_computed_boolean() -> None:
    assert judge(FACT, "c", 0.3, holds=0.3 == 0.3).holds is True
    with pytest.raises(TypeError, match="boolean"):
        judge(FACT, "c", 0.3, holds=0.3)
    import numpy as np
    import torch

    assert judge(FACT, "c", 1.0, holds=np.float64(1.0) > 0).holds is True
    assert judge(FACT, "c", 1.0, holds=torch.tensor(1.0) < 0).holds is False


def test_erratum_only_for_facts_that_fail_and_correction_only_then() -> None:
    wrong = judge(FACT, "== 0.30", 2 / 6, holds=False, correction="33.3 %")
    right = judge(FACT, "== 0.30", 0.3, holds=True, correction="ignored")
    finding = judge(EMPIRICAL, "≥ 10×", 2.0, holds=False)
    assert [verdict_label(v) for v in (wrong, right, finding)] == ["erratum", "holds", "does not hold"]
    assert wrong.correction == "33.3 %" and right.correction == "" and not finding.is_erratum


def test_claim_rejects_bad_kind_and_empty_quote() -> None:
    with pytest.raises(ValueError, match="kind"):
        Claim("§1", "x", "y", kind="opinion")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quote"):
        Claim("§1", " ", "y")


def test_registry_lookup_by_section_and_name() -> None:
    assert registry.experiment("§36").name == "inception-1x1"
    assert registry.experiment("inception-1x1").sections == ("§36", "§15")
    assert [e.name for e in registry.select("36")] == ["inception-1x1"]
    assert registry.select("§15") == registry.select("§36")
    orders = [e.order for e in registry.experiments()]
    assert orders == sorted(orders)
    with pytest.raises(ConfigError, match=r"no lab experiment 'nope'.*inception-1x1"):
        registry.select("nope")


def test_register_rejects_bad_names_sections_and_duplicates() -> None:
    with pytest.raises(ValueError, match="lowercase"):
        registry.register("Bad Name", "§1", "t")
    with pytest.raises(ValueError, match="section"):
        registry.register("ok-name", "§99", "t")
    registry.experiments()

    def other(ctx: object) -> Findings:
        raise AssertionError

    with pytest.raises(ValueError, match="already registered"):
        registry.register("inception-1x1", "§36", "t")(other)
    assert registry.section_order("frontier") == 36.5


def test_runner_caches_by_code_version_and_is_deterministic(tmp_path: Path) -> None:
    entry = registry.experiment("pooling-gradients")
    first = run_experiment(entry, tmp_path, quick=True)
    cache = tmp_path / "cache" / "pooling-gradients-quick.json"
    stored = json.loads(cache.read_text(encoding="utf-8"))
    assert stored["code_version"] == code_version(entry, quick=True, seed=0, threads=1)
    # a stored result of the same code version is returned as stored (doctored here to prove it)
    stored["numbers"] = {"mean_sum_error": -1.0}
    cache.write_text(json.dumps(stored), encoding="utf-8")
    assert run_experiment(entry, tmp_path, quick=True).numbers == {"mean_sum_error": -1.0}
    # another code version (any source in the import closure changed) means a rerun
    stored["code_version"] = "stale"
    cache.write_text(json.dumps(stored), encoding="utf-8")
    rerun = run_experiment(entry, tmp_path, quick=True)
    assert rerun.numbers == first.numbers  # seeded: the same numbers again
    assert json.loads(cache.read_text(encoding="utf-8"))["code_version"] == first.code_version
    assert code_version(entry, quick=False, seed=0) != first.code_version
    assert code_version(entry, quick=True, seed=1) != first.code_version


def test_code_version_covers_the_import_closure() -> None:
    from visionkit.lab.runner import _closure

    modules = _closure("visionkit.lab.experiments.s13_parameter_counts")
    assert "visionkit.analysis.summary" in modules  # imported directly
    assert "visionkit.models.backbones.alexnet" in modules  # imported by name at run time (model registry)
    assert "visionkit.lab.results" in modules


def test_cache_ignores_torn_files_and_missing_figures(tmp_path: Path) -> None:
    entry = registry.experiment("pooling-gradients")
    first = run_experiment(entry, tmp_path, quick=True)
    (tmp_path / first.figures[0].path).unlink()
    second = run_experiment(entry, tmp_path, quick=True)  # figure missing: recomputed, figure back
    assert (tmp_path / second.figures[0].path).is_file()
    (tmp_path / "cache" / "pooling-gradients-quick.json").write_text("{torn", encoding="utf-8")
    assert run_experiment(entry, tmp_path, quick=True).numbers == first.numbers


def _result(name: str, verdicts: list, figures: list | None = None) -> Result:
    return Result(
        name,
        ("§33",),
        "t",
        verdicts,
        [Table.of("numbers", [{"a": 1.5e-9, "b": "x"}])],
        figures or [],
        {},
        ["a note"],
        True,
        0,
        0.1,
        "v",
    )


def test_book_lists_verdicts_errata_and_topics(tmp_path: Path) -> None:
    wrong = judge(FACT, "== 0.30", 2 / 6, holds=False, correction="2/6 = 33.3 %")
    fine = judge(FACT, "== 0.30", 0.3, holds=True)
    results = [_result("metric-examples", [wrong, fine])]
    context = book_context(results)
    assert context["counts"] == {"holds": 1, "does not hold": 0, "erratum": 1}
    assert [row["correction"] for row in context["errata"]] == ["2/6 = 33.3 %"]
    assert [pair[1] for pair in errata(results)] == [wrong]
    page = write_book(results, tmp_path).read_text(encoding="utf-8")
    assert 'id="verdicts"' in page and "2/6 = 33.3 %" in page and "Recall=2/6=30%" in page
    assert "1.5e-09" in page  # table values keep their magnitude
    assert page.count("No experiment in this book yet") == len(context["topics"]) - 1


def test_book_refuses_missing_or_remote_images(tmp_path: Path) -> None:
    from visionkit.lab.results import Figure

    verdict = judge(FACT, "c", 1, holds=True)
    missing = _result("m", [verdict], [Figure("f", "cap", "figures/m/f.png")])
    with pytest.raises(ValueError, match=r"missing images: \['figures/m/f.png'\]"):
        write_book([missing], tmp_path)
    remote = _result("m", [verdict], [Figure("f", "cap", "https://example.org/f.png")])
    with pytest.raises(ValueError, match="relative"):
        write_book([remote], tmp_path)
    (tmp_path / "figures" / "m").mkdir(parents=True)
    (tmp_path / "figures" / "m" / "f.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    page = write_book([missing], tmp_path).read_text(encoding="utf-8")
    assert referenced_images(page) == ["figures/m/f.png"]


def test_docstring_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import doctest
    import importlib

    monkeypatch.chdir(tmp_path)  # the examples write their files (lab/) into the working folder
    for name in ("results", "registry", "handbook", "book", "runner"):
        module = importlib.import_module(f"visionkit.lab.{name}")
        assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0, name
