"""Speed of the §10 RPN target pipeline: anchors, box coder, matcher, sampler — ours vs torchvision.

Run: ``python benchmarks/bench_anchors.py``. torchvision is imported when present (the reference venv
``.venv-bench``); without it only our column is printed. Times are the median of several runs, in ms,
on CPU (and CUDA when available). Workload sizes follow a Faster R-CNN FPN on an 800×1088 image:
5 levels × 3 anchors ≈ 273k anchors, 20 ground-truth boxes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from timing import median_ms

from visionkit.ops.anchors import fpn_anchor_generator, kmeans_anchors
from visionkit.ops.box_coder import decode_boxes, encode_boxes
from visionkit.ops.boxes import box_iou
from visionkit.ops.matcher import Matcher
from visionkit.ops.sampler import BalancedPositiveNegativeSampler

try:
    from torchvision.models.detection._utils import BalancedPositiveNegativeSampler as TvSampler
    from torchvision.models.detection._utils import BoxCoder as TvBoxCoder
    from torchvision.models.detection._utils import Matcher as TvMatcher
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TvAnchorGenerator
    from torchvision.models.detection.image_list import ImageList
except ImportError:  # the benchmark also runs without torchvision
    TvAnchorGenerator = None


def timed(function: Callable[[], object], repeats: int = 7, device: str = "cpu") -> float:
    return median_ms(function, repeats, device=device)


def random_boxes(count: int, generator: torch.Generator, device: str) -> torch.Tensor:
    xy = torch.rand(count, 2, generator=generator) * 1000
    wh = torch.rand(count, 2, generator=generator) * 300 + 4
    return torch.cat([xy, xy + wh], dim=1).to(device)


def rows(device: str) -> list[tuple[str, float, float | None]]:
    generator = torch.Generator().manual_seed(0)
    feature_sizes = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]
    images = torch.zeros(2, 3, 800, 1088, device=device)
    maps = [torch.zeros(2, 1, h, w, device=device) for h, w in feature_sizes]
    ours_generator = fpn_anchor_generator()
    anchors = ours_generator(images, maps)[0]
    gt = random_boxes(20, generator, device)
    iou = box_iou(gt, anchors)
    matched_gt = gt[iou.argmax(dim=0)]
    deltas = torch.randn(anchors.shape[0], 4, generator=generator).to(device)
    matches = Matcher(0.7, 0.3, True)(iou)
    out: list[tuple[str, float, float | None]] = []
    tv = TvAnchorGenerator is not None
    if tv:
        tv_generator = TvAnchorGenerator(ours_generator.sizes, ours_generator.aspect_ratios)
        image_list = ImageList(images, [(800, 1088)] * 2)
        tv_coder, tv_matcher = TvBoxCoder((1.0, 1.0, 1.0, 1.0)), TvMatcher(0.7, 0.3, True)
        tv_labels = (matches >= 0).long() - (matches == -2).long()  # torchvision: 1 pos, 0 neg, -1 ignore
        tv_labels[matches == -1] = 0
    n = anchors.shape[0]
    out.append(
        (
            f"anchors FPN 5 levels (n={n}, 2 images)",
            timed(lambda: ours_generator(images, maps), device=device),
            timed(lambda: tv_generator(image_list, maps), device=device) if tv else None,
        )
    )
    out.append(
        (
            f"encode n={n}",
            timed(lambda: encode_boxes(matched_gt, anchors), device=device),
            timed(lambda: tv_coder.encode_single(matched_gt, anchors), device=device) if tv else None,
        )
    )
    out.append(
        (
            f"decode n={n}",
            timed(lambda: decode_boxes(deltas, anchors), device=device),
            timed(lambda: tv_coder.decode_single(deltas, anchors), device=device) if tv else None,
        )
    )
    matcher = Matcher(0.7, 0.3, True)
    out.append(
        (
            f"matcher 20 x {n}",
            timed(lambda: matcher(iou), device=device),
            timed(lambda: tv_matcher(iou), device=device) if tv else None,
        )
    )
    sampler = BalancedPositiveNegativeSampler(256, 0.5)
    out.append(
        (
            f"sampler 256 of {n}, 2 images",
            timed(lambda: sampler([matches, matches]), device=device),
            timed(lambda: TvSampler(256, 0.5)([tv_labels, tv_labels]), device=device) if tv else None,
        )
    )
    wh = (torch.rand(20000, 2, generator=generator) * 300 + 2).to(device)
    out.append(
        (f"kmeans_anchors k=9 on {wh.shape[0]} boxes", timed(lambda: kmeans_anchors(wh, 9), 3, device), None)
    )
    return out


def main() -> None:
    torch.manual_seed(0)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"torchvision: {TvAnchorGenerator is not None}"
    )
    print("| device | op | visionkit ms | torchvision ms | ratio |")
    print("|---|---|---:|---:|---:|")
    for device in devices:
        for name, ours, reference in rows(device):
            ref = f"{reference:.2f}" if reference is not None else "-"
            ratio = f"{reference / ours:.2f}x" if reference is not None and ours > 0 else "-"
            print(f"| {device} | {name} | {ours:.2f} | {ref} | {ratio} |")


if __name__ == "__main__":
    main()
