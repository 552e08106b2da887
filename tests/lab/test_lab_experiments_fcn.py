"""The §22 FCN experiment: the size check against the models' own sizes, and the verdict logic on fixed
numbers, both ways."""

from __future__ import annotations

from visionkit.lab.experiments import s22_fcn as experiment


def test_any_size_reads_the_built_models() -> None:
    for name in experiment.MODELS.values():
        found = experiment.any_size(name, ((40, 72), (33, 65)))
        assert found["outputs"] == [(40, 72), (33, 65)] and found["linear"] == 0


def _rows(coarse: float, fine: float) -> dict:
    return {
        "FCN-32s": {"mIoU": coarse, "boundary_mIoU": coarse / 2},
        "FCN-8s": {"mIoU": fine, "boundary_mIoU": fine / 2},
    }


def test_verdicts_hold_when_the_measurements_agree() -> None:
    shapes = {"inputs": [(64, 64), (77, 101)], "outputs": [(64, 64), (77, 101)], "linear": 0}
    gains = {"mIoU": {"low": 0.1, "high": 0.3}, "boundary": {"low": 0.2, "high": 0.4}}
    assert [v.holds for v in experiment.judge_fcn(shapes, _rows(0.6, 0.9), gains)] == [True, True, True]


def test_verdicts_fail_when_they_do_not() -> None:
    shapes = {"inputs": [(64, 64), (77, 101)], "outputs": [(64, 64), (64, 96)], "linear": 0}
    gains = {"mIoU": {"low": -0.1, "high": 0.3}, "boundary": {"low": 0.0, "high": 0.4}}
    verdicts = experiment.judge_fcn(shapes, _rows(0.6, 0.6), gains)
    assert [v.holds for v in verdicts] == [False, False, False]
    assert verdicts[0].is_erratum and "77×101 → 64×96" in verdicts[0].correction
    with_linear = {"inputs": [(64, 64)], "outputs": [(64, 64)], "linear": 1}
    assert not experiment.judge_fcn(with_linear, _rows(0.6, 0.9), gains)[0].holds
