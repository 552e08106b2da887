"""NMS, batched NMS and soft-NMS speed (and peak memory): visionkit vs torchvision vs numpy loops.

    .venv-bench/bin/python benchmarks/bench_nms.py            # with torchvision
    .venv/bin/python benchmarks/bench_nms.py                  # visionkit and numpy only
    .venv/bin/python benchmarks/bench_nms.py --threads 1      # fix the intra-op threads

"visionkit" rows use the C loops (CPU); "visionkit torch engines" rows the pure-PyTorch engines that run
on other devices or where the C kernels are not built.

Workload from issue #2: clustered boxes (N/50 objects of 16–160 px in a 1333×800 image, each box jitters
its object by ~10 %, uniform scores; :func:`make_crowded_boxes`), IoU threshold 0.5.
batched_nms adds 80 uniformly drawn labels. Soft-NMS: linear N_t = 0.3 and gaussian σ = 0.5, score
threshold 0.001. Times are medians of several runs in one process; every result is checked against the
numpy loop (same kept indices). "peak MiB" is the peak resident memory above the pre-call level during the
first call, each in a fresh process (a dense 20k×20k float32 IoU matrix alone would be 1526 MiB).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
from collections.abc import Callable

import numpy as np
import torch
from timing import median_ms

from visionkit.ops import _native_nms, batched_nms, nms, soft_nms

try:
    import torchvision
    from torchvision.ops import boxes as tv_boxes
except ImportError:  # the benchmark also runs without the reference library
    torchvision = None
    tv_boxes = None


def make_crowded_boxes(num_boxes: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num_boxes // 50`` objects, log-uniform 16–160 px, in 1333×800; boxes jitter them by ~10 %."""
    g = torch.Generator().manual_seed(seed)
    num_objects = max(1, num_boxes // 50)
    centres = torch.rand(num_objects, 2, generator=g) * torch.tensor([1333.0, 800.0])
    sizes = torch.exp(torch.empty(num_objects, 2).uniform_(math.log(16.0), math.log(160.0), generator=g))
    owner = torch.randint(num_objects, (num_boxes,), generator=g)
    wh = sizes[owner] * torch.exp(torch.randn(num_boxes, 2, generator=g) * 0.1)
    centre = centres[owner] + torch.randn(num_boxes, 2, generator=g) * 0.1 * sizes[owner]
    boxes = torch.cat((centre - wh / 2, centre + wh / 2), dim=1)
    return boxes, torch.rand(num_boxes, generator=g), torch.cat((centres - sizes / 2, centres + sizes / 2), 1)


# ------------------------------------------------------------------------------------------ numpy loops
def numpy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """The classic vectorised-numpy greedy loop (one kept box per iteration)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        width = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        height = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = width * height
        order = rest[inter / (areas[i] + areas[rest] - inter) <= threshold]
    return np.array(keep, dtype=np.int64)


def numpy_soft_nms(boxes, scores, method, sigma=0.5, nt=0.3, score_threshold=0.001):
    """The classic soft-NMS loop (Bodla et al.'s reference, vectorised over the remaining boxes)."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    scores = scores.copy()
    remaining = np.nonzero(scores >= score_threshold)[0]
    keep, kept_scores = [], []
    while remaining.size:
        best = np.argmax(scores[remaining])
        i = remaining[best]
        keep.append(i)
        kept_scores.append(scores[i])
        remaining = np.delete(remaining, best)
        width = np.clip(np.minimum(x2[i], x2[remaining]) - np.maximum(x1[i], x1[remaining]), 0, None)
        height = np.clip(np.minimum(y2[i], y2[remaining]) - np.maximum(y1[i], y1[remaining]), 0, None)
        inter = width * height
        iou = inter / (areas[i] + areas[remaining] - inter)
        decay = np.where(iou > nt, 1 - iou, 1.0) if method == "linear" else np.exp(-(iou * iou) / sigma)
        scores[remaining] *= decay
        remaining = remaining[scores[remaining] >= score_threshold]
    return np.array(keep, dtype=np.int64), np.array(kept_scores)


# ------------------------------------------------------------------------------------------ cases
def engines(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` run with visionkit's pure-PyTorch engines (the C loops switched off for the call)."""

    def call() -> object:
        _native_nms.enabled = False
        try:
            return fn()
        finally:
            _native_nms.enabled = True

    return call


def cases() -> dict[str, tuple[Callable[[], Callable[[], object]], int]]:
    """name -> (builder returning the timed call, repeats)."""

    def data(n: int, labelled: bool = False):
        boxes, scores, _ = make_crowded_boxes(n, seed=0)
        labels = torch.randint(80, (n,), generator=torch.Generator().manual_seed(1))
        return boxes, scores, labels

    table: dict[str, tuple[Callable[[], Callable[[], object]], int]] = {}
    for n in (1000, 5000, 20000):
        repeats = 9 if n < 20000 else 5

        def ours(n=n):
            b, s, _ = data(n)
            return lambda: nms(b, s, 0.5)

        def tv(n=n):
            b, s, _ = data(n)
            return lambda: torchvision.ops.nms(b, s, 0.5)

        def np_loop(n=n):
            b, s, _ = data(n)
            bn, sn = b.numpy(), s.numpy()
            return lambda: numpy_nms(bn, sn, 0.5)

        table[f"nms N={n} visionkit"] = (ours, repeats)
        table[f"nms N={n} visionkit torch engines"] = (lambda ours=ours: engines(ours()), repeats)
        if torchvision is not None:
            table[f"nms N={n} torchvision"] = (tv, repeats)
        table[f"nms N={n} numpy loop"] = (np_loop, 3 if n == 20000 else repeats)
    for strategy in ("auto", "offset", "per_class"):

        def batched(strategy=strategy):
            b, s, lab = data(20000, True)
            return lambda: batched_nms(b, s, lab, 0.5, strategy=strategy)

        table[f"batched_nms N=20000 80 cls visionkit {strategy}"] = (batched, 5)
        if strategy == "auto":
            engine_case = (lambda batched=batched: engines(batched()), 5)
            table["batched_nms N=20000 80 cls visionkit torch engines auto"] = engine_case
    if torchvision is not None:
        for name in ("batched_nms", "_batched_nms_coordinate_trick", "_batched_nms_vanilla"):
            if hasattr(tv_boxes, name):

                def tv_batched(name=name):
                    b, s, lab = data(20000, True)
                    fn = getattr(tv_boxes, name)
                    return lambda: fn(b, s, lab, 0.5)

                slow = name == "_batched_nms_coordinate_trick"  # about 2 s a call here
                table[f"batched_nms N=20000 80 cls torchvision {name}"] = (tv_batched, 1 if slow else 3)
    for n in (1000, 5000):
        for method in ("linear", "gaussian"):

            def soft(n=n, method=method):
                b, s, _ = data(n)
                return lambda: soft_nms(b, s, method)

            def np_soft(n=n, method=method):
                b, s, _ = data(n)
                bn, sn = b.numpy().astype(np.float64), s.numpy().astype(np.float64)
                return lambda: numpy_soft_nms(bn, sn, method)

            table[f"soft_nms {method} N={n} visionkit"] = (soft, 5)
            table[f"soft_nms {method} N={n} visionkit torch engines"] = (lambda soft=soft: engines(soft()), 5)
            table[f"soft_nms {method} N={n} numpy loop"] = (np_soft, 3)
    return table


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field))


def first_call_peak_mib(fn: Callable[[], object]) -> float:
    """Peak resident memory above the resident size before the call (Linux: the high-water mark is reset
    through /proc/self/clear_refs; elsewhere ru_maxrss, which may hide peaks below earlier ones)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        before = _status_kib("VmRSS:")
        fn()
        return (_status_kib("VmHWM:") - before) / 1024
    except OSError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def peak_memory(name: str) -> float:
    """Run one case in a fresh process; peak RSS growth (MiB) of its first call."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-case", name], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)["peak_mib"]


def check_equal() -> None:
    """Every fast result equals the numpy loop's kept indices (a benchmark of wrong code is worthless)."""
    boxes, scores, _ = make_crowded_boxes(5000, seed=0)
    assert nms(boxes, scores, 0.5).tolist() == numpy_nms(boxes.numpy(), scores.numpy(), 0.5).tolist()
    b64, s64 = boxes.double(), scores.double()
    assert engines(lambda: nms(boxes, scores, 0.5))().tolist() == nms(boxes, scores, 0.5).tolist()
    for method in ("linear", "gaussian"):
        keep, _ = soft_nms(b64, s64, method)
        assert keep.tolist() == numpy_soft_nms(b64.numpy(), s64.numpy(), method)[0].tolist(), method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--memory-case", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--no-memory", action="store_true", help="skip the per-case memory processes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    table = cases()
    if args.memory_case:
        fn = table[args.memory_case][0]()
        print(json.dumps({"peak_mib": first_call_peak_mib(fn)}))
        return
    check_equal()
    tv_version = torchvision.__version__ if torchvision is not None else "not installed"
    print(f"torch {torch.__version__}, torchvision {tv_version}, {torch.get_num_threads()} threads")
    print(f"visionkit NMS backend: {_native_nms.backend_name()}")
    print(f"{'case':<62} {'median ms':>10} {'peak MiB':>9}")
    memory_cases = {"nms N=20000 visionkit", "nms N=20000 torchvision", "soft_nms gaussian N=5000 visionkit"}
    memory_cases.add("nms N=20000 visionkit torch engines")
    memory_cases.add("batched_nms N=20000 80 cls visionkit auto")
    for name, (build, repeats) in table.items():
        milliseconds = median_ms(build(), repeats)
        peak = f"{peak_memory(name):9.1f}" if name in memory_cases and not args.no_memory else f"{'':>9}"
        print(f"{name:<62} {milliseconds:10.2f} {peak}", flush=True)


if __name__ == "__main__":
    main()
