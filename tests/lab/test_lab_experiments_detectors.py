"""The trained-detector experiment (§16, §24): its verdict logic on fixed numbers, both ways."""

from __future__ import annotations

from visionkit.lab.experiments import s16_trained_detectors as experiment

TITLES = list(experiment.MODELS)


def rows(
    one_ap: float, align_ap: float, one_ms: float, align_ms: float, ratio: float, pool_ap75: float
) -> dict:
    return {
        TITLES[0]: {"AP": one_ap, "AP75": 0.5, "ms": one_ms, "ratio": 1000.0},
        TITLES[1]: {"AP": align_ap, "AP75": 0.6, "ms": align_ms, "ratio": ratio},
        TITLES[2]: {"AP": align_ap, "AP75": pool_ap75, "ms": align_ms, "ratio": ratio},
    }


def test_verdicts_hold_when_the_measurements_agree_with_the_handbook() -> None:
    gains = {"two_stage": {"low": 0.01, "high": 0.05}, "align_pool": {"low": 0.02, "high": 0.08}}
    verdicts = experiment.judge_detectors(rows(0.6, 0.65, 10.0, 20.0, 3.0, 0.55), gains)
    assert [v.holds for v in verdicts] == [True, True, True, True]


def test_verdicts_fail_when_they_do_not() -> None:
    gains = {"two_stage": {"low": -0.03, "high": 0.01}, "align_pool": {"low": -0.01, "high": 0.02}}
    verdicts = experiment.judge_detectors(rows(0.7, 0.65, 30.0, 20.0, 2000.0, 0.62), gains)
    assert [v.holds for v in verdicts] == [False, False, False, False]
