"""Golden values for visionkit.ops anchors / box_coder / matcher from torchvision.

Run in the reference venv (torchvision is not a visionkit dependency):

    /work/main/.venv-bench/bin/python tests/data/make_torchvision_coder_golden.py

Writes ``tests/data/torchvision_coder_golden.pt`` (small): inputs and torchvision's outputs for
``BoxCoder.encode_single/decode_single`` (several weights, multi-class deltas, huge deltas),
``AnchorGenerator`` (single level k=9, a 5-level FPN, non-divisible image sizes) and ``Matcher``
(random IoU with ties, values exactly at the thresholds, with and without low-quality matches).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder, Matcher
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

OUT = Path(__file__).resolve().parent / "torchvision_coder_golden.pt"


def random_boxes(generator: torch.Generator, count: int, dtype: torch.dtype) -> torch.Tensor:
    xy = torch.rand(count, 2, generator=generator, dtype=torch.float64) * 500
    wh = torch.rand(count, 2, generator=generator, dtype=torch.float64) * 200 + 1
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def coder_cases(generator: torch.Generator) -> list[dict]:
    cases = []
    for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 4.0, 0.5)]:
        for dtype in (torch.float32, torch.float64):
            coder = BoxCoder(weights)
            gt, proposals = random_boxes(generator, 64, dtype), random_boxes(generator, 64, dtype)
            deltas = (torch.randn(64, 4 * 3, generator=generator, dtype=torch.float64) * 2).to(dtype)
            deltas[:4, 2::4] = 1e4  # huge: clamped at log(1000/16)
            deltas[4:8, 3::4] = -1e4
            cases.append(
                {
                    "weights": weights,
                    "gt": gt,
                    "proposals": proposals,
                    "encoded": coder.encode_single(gt, proposals),
                    "deltas": deltas,
                    "decoded": coder.decode_single(deltas, proposals),
                }
            )
    return cases


def anchor_cases() -> list[dict]:
    configs = [
        (((128, 256, 512),), ((0.5, 1.0, 2.0),), (400, 544), [(25, 34)]),
        (((32, 64, 128),), ((0.5, 1.0, 2.0),), (67, 93), [(9, 12)]),
        (
            ((32,), (64,), (128,), (256,), (512,)),
            ((0.5, 1.0, 2.0),) * 5,
            (160, 208),
            [(40, 52), (20, 26), (10, 13), (5, 7), (3, 4)],
        ),
        (((16, 23.5), (48,)), ((0.25, 1.0, 3.0), (1.0,)), (100, 75), [(13, 10), (4, 3)]),
    ]
    cases = []
    for sizes, ratios, image_size, feature_sizes in configs:
        generator = AnchorGenerator(sizes, ratios)
        images = ImageList(torch.zeros(2, 3, *image_size), [image_size, image_size])
        feature_maps = [torch.zeros(2, 4, h, w) for h, w in feature_sizes]
        anchors = generator(images, feature_maps)
        cases.append(
            {
                "sizes": sizes,
                "aspect_ratios": ratios,
                "image_size": image_size,
                "feature_sizes": feature_sizes,
                "anchors": anchors[0],
                "num_anchors_per_location": generator.num_anchors_per_location(),
            }
        )
    return cases


def matcher_cases(generator: torch.Generator) -> list[dict]:
    cases = []
    for num_gt, num_anchors in [(1, 50), (5, 200), (12, 300)]:
        # Quantised IoU values: many exact ties and values exactly at 0.3 / 0.7.
        iou = torch.randint(0, 11, (num_gt, num_anchors), generator=generator).float() / 10
        iou[:, : num_anchors // 2] *= 0.5
        for allow in (False, True):
            matcher = Matcher(0.7, 0.3, allow_low_quality_matches=allow)
            cases.append(
                {"iou": iou, "high": 0.7, "low": 0.3, "allow": allow, "matches": matcher(iou.clone())}
            )
    # Real boxes vs real anchors, the RPN setting.
    gt = random_boxes(generator, 6, torch.float32)
    anchors = random_boxes(generator, 400, torch.float32)
    iou = torchvision.ops.box_iou(gt, anchors)
    for high, low in ((0.7, 0.3), (0.5, 0.5)):
        matcher = Matcher(high, low, allow_low_quality_matches=True)
        cases.append({"iou": iou, "high": high, "low": low, "allow": True, "matches": matcher(iou.clone())})
    return cases


def main() -> None:
    generator = torch.Generator().manual_seed(20261127)
    golden = {
        "torchvision_version": torchvision.__version__,
        "torch_version": torch.__version__,
        "bbox_xform_clip": math.log(1000.0 / 16),
        "coder": coder_cases(generator),
        "anchors": anchor_cases(),
        "matcher": matcher_cases(generator),
    }
    torch.save(golden, OUT)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes) with torchvision {torchvision.__version__}")


if __name__ == "__main__":
    main()
