"""Write tests/data/torchvision_boxes_golden.json: small inputs and torchvision's outputs for box ops and NMS.

Run in the reference environment (torchvision is not a visionkit dependency):

    .venv-bench/bin/python tests/data/make_torchvision_boxes_golden.py

Scores are distinct in every case: torchvision's CPU NMS sorts them with an unstable sort, so ties have
no defined order there (visionkit breaks them by index).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torchvision
from torchvision.ops import boxes as tv_boxes

OUT = Path(__file__).resolve().parent / "torchvision_boxes_golden.json"


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 60
    wh = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 40 + 0.5
    return torch.cat((xy, xy + wh), dim=1)


def clustered(n: int, generator: torch.Generator) -> torch.Tensor:
    centres = torch.rand(max(1, n // 15), 2, generator=generator) * 200
    owner = torch.randint(centres.shape[0], (n,), generator=generator)
    size = 10 + torch.rand(n, 2, generator=generator) * 30
    c = centres[owner] + torch.randn(n, 2, generator=generator) * 4
    return torch.cat((c - size / 2, c + size / 2), dim=1)


def distinct_scores(n: int, generator: torch.Generator) -> torch.Tensor:
    return (torch.randperm(n, generator=generator).float() + 1) / (n + 1)


def main() -> None:
    g = torch.Generator().manual_seed(20240607)
    boxes1, boxes2 = random_boxes(12, g), random_boxes(9, g)
    boxes2[0] = boxes1[0]  # identical pair
    boxes2[1] = boxes1[1] + torch.tensor([100.0, 100.0, 100.0, 100.0], dtype=torch.float64)  # disjoint
    golden: dict[str, object] = {
        "torchvision": torchvision.__version__,
        "torch": torch.__version__,
        "boxes1": boxes1.tolist(),
        "boxes2": boxes2.tolist(),
    }
    for name in ("box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou"):
        golden[name] = getattr(tv_boxes, name)(boxes1, boxes2).tolist()

    nms_cases, batched_cases = [], []
    for case, n, threshold in [("random", 60, 0.5), ("clustered", 300, 0.5), ("clustered-0.3", 300, 0.3)]:
        boxes = (random_boxes(n, g).float() if case == "random" else clustered(n, g)).float()
        scores = distinct_scores(n, g)
        labels = torch.randint(5, (n,), generator=g)
        keep = torchvision.ops.nms(boxes, scores, threshold)
        nms_cases.append(
            dict(
                name=case,
                boxes=boxes.tolist(),
                scores=scores.tolist(),
                iou_threshold=threshold,
                keep=keep.tolist(),
            )
        )
        keep = torchvision.ops.batched_nms(boxes, scores, labels, threshold)
        batched_cases.append(
            dict(
                name=case,
                boxes=boxes.tolist(),
                scores=scores.tolist(),
                labels=labels.tolist(),
                iou_threshold=threshold,
                keep=keep.tolist(),
            )
        )
    # IoU exactly at the threshold (50 / 100): torchvision keeps it too (suppresses only on ">")
    exact = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30]])
    exact_scores = torch.tensor([0.9, 0.8, 0.7])
    nms_cases.append(
        dict(
            name="exact-threshold",
            boxes=exact.tolist(),
            scores=exact_scores.tolist(),
            iou_threshold=0.5,
            keep=torchvision.ops.nms(exact, exact_scores, 0.5).tolist(),
        )
    )
    golden["nms"] = nms_cases
    golden["batched_nms"] = batched_cases
    OUT.write_text(json.dumps(golden))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
