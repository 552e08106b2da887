"""The §9 FPN experiment: the interval outcome and the verdicts on fixed numbers (holds, inconclusive,
contradicted), the size note both ways, and the quick run: step-matched, outcomes read off its intervals."""

from __future__ import annotations

from pathlib import Path

import pytest

from visionkit.lab.experiments import s09_fpn_small_objects as experiment
from visionkit.lab.registry import experiment as find
from visionkit.lab.runner import run_experiment

FPN, SINGLE = experiment.MODELS


def test_interval_outcome_reads_the_interval() -> None:
    assert experiment.interval_outcome(0.001, 0.3) == "holds"
    assert experiment.interval_outcome(0.0, 0.3) == "inconclusive"  # touching 0 is not above it
    assert experiment.interval_outcome(-0.1, 0.1) == "inconclusive"
    assert experiment.interval_outcome(-0.3, -0.001) == "contradicted"
    with pytest.raises(ValueError, match=r"low=0\.2 is above high=0\.1"):
        experiment.interval_outcome(0.2, 0.1)


def rows(fpn_small: float, single_small: float) -> dict:
    return {FPN: {"APs": fpn_small, "AP": 0.3}, SINGLE: {"APs": single_small, "AP": 0.25}}


@pytest.mark.parametrize(
    ("small", "overall", "holds", "words"),
    [
        ((0.02, 0.2), (0.01, 0.1), [True, True], ["holds", "holds"]),
        ((-0.05, 0.2), (0.01, 0.1), [False, True], ["inconclusive", "holds"]),
        ((-0.2, -0.02), (-0.1, 0.05), [False, False], ["contradicted", "inconclusive"]),
    ],
)
def test_verdicts_come_from_the_intervals(small: tuple, overall: tuple, holds: list, words: list) -> None:
    gains = {"APs": dict(zip(("low", "high"), small, strict=True)),
             "AP": dict(zip(("low", "high"), overall, strict=True))}  # fmt: skip
    verdicts = experiment.judge_pyramid(rows(0.3, 0.1), gains)
    assert [v.holds for v in verdicts] == holds
    assert [v.measured.rsplit(": ", 1)[1] for v in verdicts] == words
    assert verdicts[0].measured.startswith("+0.2000 (95 % CI")  # the point gain 0.3 − 0.1
    assert not any(v.is_erratum for v in verdicts)  # empirical claims: a failure is a finding


def test_size_note_both_ways() -> None:
    assert "mostly on small" in experiment.size_note({"APs": 0.3, "APm": 0.5}, {"APs": 0.1, "APm": 0.45})
    assert "not specific" in experiment.size_note({"APs": 0.3, "APm": 0.5}, {"APs": 0.1, "APm": 0.3})


def test_quick_run_is_step_matched_and_its_verdicts_follow_its_intervals(lab_quick_out: Path) -> None:
    result = run_experiment(find("fpn-small-objects"), lab_quick_out, quick=True)
    numbers = result.numbers
    assert numbers[f"{FPN}/steps"] == numbers[f"{SINGLE}/steps"] == 2.0  # 8 images, batch 4, one epoch
    # anchors of a 128-px image, by hand: 9 per cell on 16², 8², 4², 2², 1² cells; 45 on the 4×4 c5 map
    assert numbers[f"{FPN}/anchors / image"] == 9 * (256 + 64 + 16 + 4 + 1)
    assert numbers[f"{SINGLE}/anchors / image"] == 45 * 16
    for verdict, key in zip(result.verdicts, ("APs", "AP"), strict=True):
        outcome = experiment.interval_outcome(numbers[f"gain_{key}_low"], numbers[f"gain_{key}_high"])
        assert verdict.measured.endswith(outcome) and verdict.holds == (outcome == "holds")
