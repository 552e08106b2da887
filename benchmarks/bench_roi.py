"""RoI Align / RoI Pool speed and peak memory: visionkit vs torchvision, side by side in one process.

    .venv-bench/bin/python benchmarks/bench_roi.py        # with torchvision
    .venv/bin/python benchmarks/bench_roi.py              # visionkit only

Setting from issue #3: features 2×256×50×68 float32 (an 800×1088 batch at stride 16), 512 RoIs,
7×7 output, sampling_ratio 2, spatial_scale 1/16. RoIs are proposal-like boxes of 32–512 px.
Times are the median of several runs; "peak" is the peak resident memory growth of the process while the
op runs (sampled by a background thread), a rough but comparable number for both libraries.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable

import torch

from visionkit.ops.roi_align import roi_align
from visionkit.ops.roi_pool import roi_pool

try:
    import torchvision.ops as tv_ops
except ImportError:  # the benchmark also runs without the reference library
    tv_ops = None


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def measure(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall time (ms) over ``repeats`` runs after one warm-up, and peak RSS growth (MiB)."""
    fn()
    times = []
    baseline, peak, running = _rss_bytes(), [0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], _rss_bytes() - baseline)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    running[0] = False
    sampler.join()
    return statistics.median(times), peak[0] / 2**20


def make_inputs(num_rois: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 256, 50, 68, generator=generator)
    size = torch.exp(torch.empty(num_rois, 2).uniform_(3.466, 6.238, generator=generator))  # 32..512 px
    corner = torch.rand(num_rois, 2, generator=generator) * (torch.tensor([1088.0, 800.0]) - size)
    batch = torch.randint(0, 2, (num_rois, 1), generator=generator).float()
    return features, torch.cat((batch, corner, corner + size), dim=1)


def backward_only(op: Callable, features: torch.Tensor, rois: torch.Tensor) -> Callable[[], object]:
    leaf = features.clone().requires_grad_()
    output = op(leaf, rois)
    grad = torch.randn_like(output)
    return lambda: torch.autograd.grad(output, leaf, grad, retain_graph=True)


def forward_backward(op: Callable, features: torch.Tensor, rois: torch.Tensor) -> Callable[[], object]:
    leaf = features.clone().requires_grad_()

    def run() -> object:
        output = op(leaf, rois)
        return torch.autograd.grad(output, leaf, torch.ones_like(output))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    features, rois = make_inputs(args.rois)
    ours_align = lambda f, r: roi_align(f, r, 7, 1 / 16, 2)  # noqa: E731
    ours_align_max = lambda f, r: roi_align(f, r, 7, 1 / 16, 2, mode="max")  # noqa: E731
    ours_pool = lambda f, r: roi_pool(f, r, 7, 1 / 16)  # noqa: E731
    cases: list[tuple[str, Callable, Callable | None, Callable[..., Callable]]] = [
        (
            "roi_align forward",
            ours_align,
            tv_ops and (lambda f, r: tv_ops.roi_align(f, r, 7, 1 / 16, 2)),
            _forward,
        ),
        (
            "roi_align backward",
            ours_align,
            tv_ops and (lambda f, r: tv_ops.roi_align(f, r, 7, 1 / 16, 2)),
            backward_only,
        ),
        ("roi_align max fwd+bwd", ours_align_max, None, forward_backward),
        ("roi_pool forward", ours_pool, tv_ops and (lambda f, r: tv_ops.roi_pool(f, r, 7, 1 / 16)), _forward),
        (
            "roi_pool backward",
            ours_pool,
            tv_ops and (lambda f, r: tv_ops.roi_pool(f, r, 7, 1 / 16)),
            backward_only,
        ),
        (
            "roi_pool fwd+bwd",
            ours_pool,
            tv_ops and (lambda f, r: tv_ops.roi_pool(f, r, 7, 1 / 16)),
            forward_backward,
        ),
    ]
    print(f"features {list(features.shape)}, {args.rois} RoIs, 7x7, threads {torch.get_num_threads()}")
    header = f"{'case':24} {'visionkit ms':>13} {'peak MiB':>9} {'torchvision ms':>15} {'peak MiB':>9}"
    print(f"{header} {'ratio':>6}")
    for name, ours, reference, kind in cases:
        ours_ms, ours_mib = measure(kind(ours, features, rois), args.repeats)
        if reference is None:
            print(f"{name:24} {ours_ms:13.1f} {ours_mib:9.1f} {'-':>15} {'-':>9} {'-':>6}")
            continue
        ref_ms, ref_mib = measure(kind(reference, features, rois), args.repeats)
        print(
            f"{name:24} {ours_ms:13.1f} {ours_mib:9.1f} {ref_ms:15.1f} {ref_mib:9.1f} {ours_ms / ref_ms:6.2f}"
        )


def _forward(op: Callable, features: torch.Tensor, rois: torch.Tensor) -> Callable[[], object]:
    return lambda: op(features, rois)


if __name__ == "__main__":
    main()
