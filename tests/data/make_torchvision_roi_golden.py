"""Golden values from torchvision for the RoI ops and the losses (run with the reference venv).

    .venv-bench/bin/python tests/data/make_torchvision_roi_golden.py

Writes ``tests/data/torchvision_roi_golden.pt``: a flat dict of small float64 tensors (inputs, outputs
and input gradients of ``sum(output * weight)``), read by tests/ops/test_ops_roi*.py and
tests/losses/test_losses_*.py. torchvision is only used here, never by the package or the test venv.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torchvision import ops

OUTPUT = Path(__file__).with_name("torchvision_roi_golden.pt")


def _rois() -> torch.Tensor:
    """RoIs [K, 5] in input pixels: inside, on the border, partly/fully outside, tiny, zero-size, inverted."""
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(8, 2, generator=generator, dtype=torch.float64) * 20 - 2
    wh = torch.rand(8, 2, generator=generator, dtype=torch.float64) * 14 + 0.3
    random = torch.cat((xy, xy + wh), 1)
    special = torch.tensor(
        [
            [0.0, 0.0, 27.0, 23.0],  # the whole map
            [-6.0, -4.0, 3.0, 2.0],  # partly outside (top left)
            [25.0, 21.0, 40.0, 33.0],  # partly/mostly outside (bottom right)
            [5.0, 5.0, 5.0, 5.0],  # zero size
            [7.2, 3.1, 7.9, 3.6],  # smaller than a cell
            [9.0, 9.0, 4.0, 6.0],  # inverted
            [-30.0, -30.0, -20.0, -25.0],  # fully outside
            [3.5, 2.5, 20.5, 12.5],  # half-pixel aligned
        ],
        dtype=torch.float64,
    )
    boxes = torch.cat((random, special))
    batch = torch.tensor([i % 2 for i in range(len(boxes))], dtype=torch.float64)
    return torch.cat((batch[:, None], boxes), 1)


def _with_grad(fn, inputs: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    inputs = inputs.clone().requires_grad_()
    out = fn(inputs)
    weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    (out * weight).sum().backward()
    return out.detach(), weight, inputs.grad


def roi_goldens(golden: dict) -> None:
    features = torch.randn(2, 3, 12, 14, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    rois = _rois()
    golden["roi/features"], golden["roi/rois"] = features, rois
    for scale in (0.5, 1.0):
        for aligned in (False, True):
            for ratio in (-1, 0, 1, 2) if scale == 0.5 else (0, 3):
                key = f"roi_align/scale{scale}/aligned{int(aligned)}/ratio{ratio}"
                fn = lambda f, s=scale, a=aligned, r=ratio: ops.roi_align(f, rois, (3, 4), s, r, a)  # noqa: E731
                outputs = _with_grad(fn, features, 7)
                golden[f"{key}/out"], golden[f"{key}/weight"], golden[f"{key}/grad"] = outputs
        key = f"roi_pool/scale{scale}"
        fn = lambda f, s=scale: ops.roi_pool(f, rois, (3, 4), s)  # noqa: E731
        golden[f"{key}/out"], golden[f"{key}/weight"], golden[f"{key}/grad"] = _with_grad(fn, features, 8)


def multiscale_goldens(golden: dict) -> None:
    generator = torch.Generator().manual_seed(2)
    image_sizes = [(128, 160), (120, 150)]  # the padded batch is 128 x 160
    levels = OrderedDict(
        (name, torch.randn(2, 2, 128 // stride, 160 // stride, generator=generator, dtype=torch.float64))
        for name, stride in (("p2", 4), ("p3", 8), ("p4", 16), ("p5", 32))
    )
    sizes = torch.tensor(
        [[20, 20], [60, 40], [120, 150], [300, 200], [500, 400], [8, 900], [224, 224], [447, 450]]
    )
    boxes = []
    for image in range(2):
        xy = torch.rand(len(sizes), 2, generator=generator, dtype=torch.float64) * 60
        boxes.append(torch.cat((xy, xy + sizes.double() + image), 1))
    pooler = ops.MultiScaleRoIAlign(["p2", "p3", "p4", "p5"], output_size=(5, 6), sampling_ratio=2)
    golden["multiscale/out"] = pooler(levels, boxes, image_sizes)
    pooler_aligned = ops.MultiScaleRoIAlign(["p3", "p4", "p5"], output_size=3, sampling_ratio=-1)
    golden["multiscale/out_p3_p5"] = pooler_aligned(levels, boxes, image_sizes)
    for name, tensor in levels.items():
        golden[f"multiscale/features/{name}"] = tensor.contiguous()
    golden["multiscale/boxes0"], golden["multiscale/boxes1"] = boxes
    golden["multiscale/image_sizes"] = torch.tensor(image_sizes)


def loss_goldens(golden: dict) -> None:
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 5, generator=generator, dtype=torch.float64) * 4
    logits[0, :2] = torch.tensor([40.0, -40.0])  # extreme logits
    targets = (torch.rand(6, 5, generator=generator) > 0.7).double()
    golden["focal/logits"], golden["focal/targets"] = logits, targets
    for alpha in (0.25, -1.0):
        for gamma in (0.0, 2.0, 0.5):
            fn = lambda x, a=alpha, g=gamma: ops.sigmoid_focal_loss(x, targets, a, g, "none")  # noqa: E731
            key = f"focal/alpha{alpha}/gamma{gamma}"
            golden[f"{key}/out"], golden[f"{key}/weight"], golden[f"{key}/grad"] = _with_grad(fn, logits, 9)
    xy = torch.rand(10, 2, generator=generator, dtype=torch.float64) * 10
    boxes1 = torch.cat((xy, xy + torch.rand(10, 2, generator=generator, dtype=torch.float64) * 8 + 0.5), 1)
    xy = torch.rand(10, 2, generator=generator, dtype=torch.float64) * 10
    boxes2 = torch.cat((xy, xy + torch.rand(10, 2, generator=generator, dtype=torch.float64) * 8 + 0.5), 1)
    boxes2[0] = boxes1[0]  # identical pair
    boxes2[1] = torch.tensor([30.0, 30.0, 32.0, 35.0])  # disjoint pair
    golden["iou_loss/boxes1"], golden["iou_loss/boxes2"] = boxes1, boxes2
    for name, fn in (
        ("giou", ops.generalized_box_iou_loss),
        ("diou", ops.distance_box_iou_loss),
        ("ciou", ops.complete_box_iou_loss),
    ):
        key = f"iou_loss/{name}"
        golden[f"{key}/out"], golden[f"{key}/weight"], golden[f"{key}/grad"] = _with_grad(
            lambda b, f=fn: f(b, boxes2), boxes1, 10
        )


def main() -> None:
    golden: dict = {"versions": f"torch {torch.__version__}, torchvision {torchvision.__version__}"}
    roi_goldens(golden)
    multiscale_goldens(golden)
    loss_goldens(golden)
    torch.save(golden, OUTPUT)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size / 1024:.0f} KiB, {len(golden)} entries)")


if __name__ == "__main__":
    main()
