"""RoI Align / RoI Pool speed and peak memory: visionkit vs torchvision, side by side in one process.

    .venv-bench/bin/python benchmarks/bench_roi.py        # with torchvision
    .venv/bin/python benchmarks/bench_roi.py              # visionkit only

Setting from issue #3: features 2×256×50×68 float32 (an 800×1088 batch at stride 16), 512 RoIs,
7×7 output, sampling_ratio 2, spatial_scale 1/16. RoIs are proposal-like boxes of 32–512 px.
Times are the median of several runs; "peak" is the growth of the process's peak resident memory during
the first call (each case runs in a fresh process), comparable between the two libraries.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from collections.abc import Callable

import torch
from timing import median_ms

from visionkit.ops.roi_align import roi_align
from visionkit.ops.roi_pool import roi_pool

try:
    import torchvision.ops as tv_ops
except ImportError:  # the benchmark also runs without the reference library
    tv_ops = None


def measure(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall time (ms) over ``repeats`` runs, and the peak RSS growth (MiB) of the first run.

    Each case runs in its own process (see :func:`main`), so ``ru_maxrss`` — the process's high-water
    mark — taken before and after the first call measures that op's peak working memory.
    """
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return median_ms(fn, repeats, warmup=False), peak


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


def _cases() -> dict[str, tuple[Callable, Callable | None, Callable[..., Callable]]]:
    def ours_align(f, r):
        return roi_align(f, r, 7, 1 / 16, 2)

    def ours_align_max(f, r):
        return roi_align(f, r, 7, 1 / 16, 2, mode="max")

    def ours_pool(f, r):
        return roi_pool(f, r, 7, 1 / 16)

    tv_align = tv_ops and (lambda f, r: tv_ops.roi_align(f, r, 7, 1 / 16, 2))
    tv_pool = tv_ops and (lambda f, r: tv_ops.roi_pool(f, r, 7, 1 / 16))
    return {
        "roi_align forward": (ours_align, tv_align, _forward),
        "roi_align backward": (ours_align, tv_align, backward_only),
        "roi_align max fwd+bwd": (ours_align_max, None, forward_backward),
        "roi_pool forward": (ours_pool, tv_pool, _forward),
        "roi_pool backward": (ours_pool, tv_pool, backward_only),
        "roi_pool fwd+bwd": (ours_pool, tv_pool, forward_backward),
    }


def run_one(case: str, library: str, num_rois: int, repeats: int) -> None:
    torch.manual_seed(0)
    features, rois = make_inputs(num_rois)
    ours, reference, kind = _cases()[case]
    op = ours if library == "visionkit" else reference
    milliseconds, peak = measure(kind(op, features, rois), repeats)
    print(json.dumps({"ms": milliseconds, "peak_mib": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one", nargs=2, metavar=("CASE", "LIBRARY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(args.one[0], args.one[1], args.rois, args.repeats)
        return
    print(f"features [2, 256, 50, 68], {args.rois} RoIs, 7x7, threads {torch.get_num_threads()}")
    header = f"{'case':24} {'visionkit ms':>13} {'peak MiB':>9} {'torchvision ms':>15} {'peak MiB':>9}"
    print(f"{header} {'ratio':>6}")
    for case, (_, reference, _) in _cases().items():
        results = {}
        for library in ("visionkit", "torchvision") if reference is not None else ("visionkit",):
            command = [sys.executable, __file__, "--rois", str(args.rois), "--repeats", str(args.repeats)]
            output = subprocess.run(
                [*command, "--one", case, library], capture_output=True, text=True, check=True
            )
            results[library] = json.loads(output.stdout.strip().splitlines()[-1])
        ours = results["visionkit"]
        if "torchvision" not in results:
            print(f"{case:24} {ours['ms']:13.1f} {ours['peak_mib']:9.1f} {'-':>15} {'-':>9} {'-':>6}")
            continue
        ref = results["torchvision"]
        ratio = ours["ms"] / ref["ms"]
        row = f"{case:24} {ours['ms']:13.1f} {ours['peak_mib']:9.1f} {ref['ms']:15.1f} {ref['peak_mib']:9.1f}"
        print(f"{row} {ratio:6.2f}")


def _forward(op: Callable, features: torch.Tensor, rois: torch.Tensor) -> Callable[[], object]:
    return lambda: op(features, rois)


if __name__ == "__main__":
    main()
