"""The C loops of NMS / Soft-NMS (visionkit.ops._nms_native) against the PyTorch engines and the plain loops.

Both backends compute the IoU with the same arithmetic in the same dtype, so hard NMS must give identical
indices and linear Soft-NMS identical scores; Gaussian Soft-NMS may differ in the last bit of an ``exp``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nms_references import assert_soft_scores, overlapping_earlier, ref_nms, ref_soft_nms

from visionkit.ops import _native_nms
from visionkit.ops.nms import batched_nms, nms
from visionkit.ops.soft_nms import batched_soft_nms, soft_nms

pytestmark = pytest.mark.skipif(_native_nms._kernels is None, reason="the C kernels are not built")


def both(monkeypatch: pytest.MonkeyPatch, fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the C loops, then with the PyTorch engines."""
    monkeypatch.setattr(_native_nms, "enabled", True)
    native = fn(*args, **kwargs)
    monkeypatch.setattr(_native_nms, "enabled", False)
    engines = fn(*args, **kwargs)
    monkeypatch.setattr(_native_nms, "enabled", True)
    return native, engines


def scene(num_boxes: int, seed: int, dtype=torch.float32, num_labels: int = 1, offset: float = 0.0):
    """Clustered boxes of widely mixed sizes (2–400 px, several width octaves) plus some degenerate ones."""
    g = torch.Generator().manual_seed(seed)
    num_objects = max(1, num_boxes // 25)
    centres = torch.rand(num_objects, 2, generator=g, dtype=torch.float64) * 1000
    sizes = torch.exp(torch.empty(num_objects, 2, dtype=torch.float64).uniform_(0.7, 6.0, generator=g))
    owner = torch.randint(num_objects, (num_boxes,), generator=g)
    wh = sizes[owner] * torch.exp(torch.randn(num_boxes, 2, generator=g, dtype=torch.float64) * 0.15)
    c = centres[owner] + torch.randn(num_boxes, 2, generator=g, dtype=torch.float64) * 0.15 * sizes[owner]
    boxes = torch.cat((c - wh / 2, c + wh / 2), dim=1) + offset
    degenerate = torch.rand(num_boxes, generator=g) < 0.03
    boxes[degenerate, 2] = boxes[degenerate, 0] - torch.rand(int(degenerate.sum()), generator=g).double()
    scores = torch.rand(num_boxes, generator=g, dtype=torch.float64)
    scores[torch.rand(num_boxes, generator=g) < 0.1] = 0.5  # ties
    labels = torch.randint(num_labels, (num_boxes,), generator=g)
    return boxes.to(dtype), scores.to(dtype), labels


def test_kernels_are_built_where_a_compiler_exists() -> None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) on this machine")
    assert _native_nms._kernels is not None, "a C compiler exists but visionkit.ops._nms_native was not built"
    assert _native_nms.backend_name().startswith("C kernels")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("num_boxes", [0, 1, 2, 300, 3000])
def test_nms_identical_to_engines(monkeypatch, dtype, threshold, num_boxes) -> None:
    boxes, scores, labels = scene(num_boxes, seed=num_boxes + int(threshold * 10), dtype=dtype, num_labels=7)
    native, engines = both(monkeypatch, nms, boxes, scores, threshold)
    assert native.tolist() == engines.tolist()
    native, engines = both(monkeypatch, batched_nms, boxes, scores, labels, threshold)
    assert native.tolist() == engines.tolist()
    if num_boxes <= 300 and dtype == torch.float64:  # the plain loop computes in float64 and is slow
        assert native.tolist() == ref_nms(boxes, scores, threshold, labels)


def test_nms_huge_coordinates_and_spread_labels(monkeypatch) -> None:
    for dtype, offset in ((torch.float64, 1e9), (torch.float32, 1e6)):
        boxes, scores, labels = scene(2000, seed=3, dtype=dtype, num_labels=3, offset=offset)
        labels = labels * 10**12 - 5  # arbitrary int64 values, negative included
        native, engines = both(monkeypatch, batched_nms, boxes, scores, labels, 0.5)
        assert native.tolist() == engines.tolist()
        native, engines = both(monkeypatch, nms, boxes, scores, 0.5)
        assert native.tolist() == engines.tolist()


@pytest.mark.parametrize("method", ["linear", "gaussian"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_boxes", [0, 1, 200, 2000])
def test_soft_nms_equals_engines(monkeypatch, method, dtype, num_boxes) -> None:
    boxes, scores, labels = scene(num_boxes, seed=7 + num_boxes, dtype=dtype, num_labels=3)
    for fn, args in ((soft_nms, (boxes, scores)), (batched_soft_nms, (boxes, scores, labels))):
        (keep, decayed), (keep_engines, decayed_engines) = both(
            monkeypatch, fn, *args, method=method, sigma=0.4, iou_threshold=0.35
        )
        assert keep.tolist() == keep_engines.tolist()
        assert decayed.dtype == decayed_engines.dtype == dtype
        if method == "linear":  # same factors multiplied in the same order: bit-identical
            assert torch.equal(decayed, decayed_engines)
        else:  # only exp differs (libm in C; libm, SLEEF or MKL VML in torch): a bound per box
            decays = overlapping_earlier(boxes, keep, labels if fn is batched_soft_nms else None)
            assert_soft_scores(decayed, decayed_engines, decays, "gaussian", sigma=0.4)


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_soft_nms_equals_reference_loop_with_negative_scores(method) -> None:
    boxes, scores, labels = scene(150, seed=11, dtype=torch.float64, num_labels=2)
    scores = scores * 2 - 1  # negative scores: a decay raises them
    keep, decayed = batched_soft_nms(boxes, scores, labels, method=method, score_threshold=-0.5)
    want_keep, want_scores, decays = ref_soft_nms(boxes, scores, method, 0.5, 0.3, -0.5, labels)
    assert keep.tolist() == want_keep
    assert_soft_scores(decayed, want_scores, decays, method)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(*[st.integers(0, 12)] * 4, st.integers(0, 3), st.integers(0, 2)), min_size=0, max_size=40
    ),
    threshold=st.sampled_from([0.0, 0.2, 0.5, 0.9]),
    method=st.sampled_from(["linear", "gaussian"]),
)
def test_native_hypothesis(rows, threshold, method) -> None:
    """Tiny integer boxes: many exact ties, duplicates, zero-area and inverted boxes, IoU exactly at t."""
    boxes = torch.tensor([r[:4] for r in rows], dtype=torch.float64).reshape(-1, 4)
    scores = torch.tensor([r[4] / 4 for r in rows], dtype=torch.float64)
    labels = torch.tensor([r[5] for r in rows], dtype=torch.int64)
    assert nms(boxes, scores, threshold).tolist() == ref_nms(boxes, scores, threshold)
    assert batched_nms(boxes, scores, labels, threshold).tolist() == ref_nms(boxes, scores, threshold, labels)
    keep, decayed = batched_soft_nms(boxes, scores, labels, method=method, iou_threshold=threshold)
    want_keep, want_scores, decays = ref_soft_nms(boxes, scores, method, 0.5, threshold, 0.001, labels)
    assert keep.tolist() == want_keep
    assert_soft_scores(decayed, want_scores, decays, method)


def test_concurrent_calls_release_the_gil_and_stay_exact() -> None:
    boxes, scores, labels = scene(4000, seed=5, num_labels=4)
    want = batched_nms(boxes, scores, labels, 0.5).tolist()
    want_soft = soft_nms(boxes, scores, method="gaussian")[0].tolist()
    results: list[bool] = []

    def work() -> None:
        for _ in range(3):
            results.append(batched_nms(boxes, scores, labels, 0.5).tolist() == want)
            results.append(soft_nms(boxes, scores, method="gaussian")[0].tolist() == want_soft)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 24


def test_usable_only_for_cpu_float32_float64() -> None:
    labels = torch.zeros(2, dtype=torch.int32)
    assert _native_nms.usable(torch.zeros(2, 4), torch.zeros(2, dtype=torch.float64), labels)
    assert not _native_nms.usable(torch.zeros(2, 4, dtype=torch.float16))
    assert not _native_nms.usable(torch.zeros(2, 4, device="meta"))


def test_environment_variable_turns_the_kernels_off() -> None:
    code = (
        "import torch; from visionkit.ops import _native_nms, nms; "
        "print(_native_nms.backend_name()); "
        "print(nms(torch.tensor([[0., 0, 4, 4], [0, 0, 4, 3]]), torch.tensor([0.9, 0.8]), 0.5).tolist())"
    )
    env = {**os.environ, "VISIONKIT_NATIVE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["PyTorch (C kernels disabled)", "[0]"]


def test_many_labels_times_width_octaves_use_the_searched_index(monkeypatch) -> None:
    """3000 two-box objects, one label each, widths over 12 octaves: the (label, level) table would exceed
    its memory bound, so the kernel finds segments by binary search — same results as the engines."""
    g = torch.Generator().manual_seed(9)
    centres = torch.rand(3000, 2, generator=g, dtype=torch.float64) * 5000
    sizes = torch.exp2(torch.rand(3000, 2, generator=g, dtype=torch.float64) * 12)
    owner = torch.arange(3000).repeat_interleave(2)
    wh = sizes[owner] * (1 + 0.2 * torch.rand(6000, 2, generator=g, dtype=torch.float64))
    c = centres[owner] + 0.1 * sizes[owner] * torch.randn(6000, 2, generator=g, dtype=torch.float64)
    boxes = torch.cat((c - wh / 2, c + wh / 2), dim=1)
    scores = torch.rand(6000, generator=g, dtype=torch.float64)
    native, engines = both(monkeypatch, batched_nms, boxes, scores, owner, 0.5)
    assert native.tolist() == engines.tolist()
    assert native.numel() < 6000  # objects' boxes do suppress each other
    (keep, decayed), (keep_e, decayed_e) = both(monkeypatch, batched_soft_nms, boxes, scores, owner)
    assert keep.tolist() == keep_e.tolist() and torch.equal(decayed, decayed_e)


def test_mixed_dtypes_rank_by_the_exact_scores(monkeypatch) -> None:
    """Integer boxes (compared in float32) with float64 scores that tie only after rounding to float32:
    the C ranking reads the float64 scores, like torch.sort."""
    boxes = torch.tensor(
        [[0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [20, 20, 30, 29]], dtype=torch.int32
    )
    scores = torch.tensor([0.5, 0.5 + 1e-12, 0.25, 0.25], dtype=torch.float64)
    labels = torch.tensor([3, 3, -1, -1])
    for fn, args in ((nms, (boxes, scores, 0.5)), (batched_nms, (boxes, scores, labels, 0.5))):
        native, engines = both(monkeypatch, fn, *args)
        assert native.tolist() == engines.tolist() == [1, 2]
    half_boxes, half_scores = boxes.half(), scores.half()
    native, engines = both(monkeypatch, nms, half_boxes, half_scores, 0.5)
    assert native.tolist() == engines.tolist() == [0, 2]  # float16 scores tie: lower index first


def test_bindings_reject_unknown_dtype_codes() -> None:
    kernels = _native_nms._kernels
    calls = [
        lambda: kernels.nms(5, 0, 0, 0, 0.5, 0),
        lambda: kernels.nms_scored(0, 0, 7, 0, 0, 0, 0.5, 0),
        lambda: kernels.soft_nms(2, 0, 0, 0, 0, True, 0.5, 0.3, 0.001, 0, 0),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="dtype codes must be 0"):
            call()
