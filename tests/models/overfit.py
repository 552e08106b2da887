"""A tiny overfit run shared by the detector tests: can the model learn two images perfectly?

Training trajectories depend on the last bits of every kernel (AVX-512 / AVX2 / scalar, MKL or not), so a
fixed step count with an AP threshold holds on one machine and fails on another (seen: Faster R-CNN at 60
steps, AP50 1.0 with the scalar kernels, 0.83 with AVX2). The claim is "reaches near-perfect AP", so the run
trains until it does, checking every ``check_every`` steps, and fails only if ``max_steps`` (several times
what any kernel set needed when this was written) pass without it.
"""

from __future__ import annotations

import torch
from torch import nn

from visionkit.metrics.detection.coco import evaluate_coco


def steps_to_near_perfect(
    model: nn.Module,
    images: list[torch.Tensor],
    targets: list[dict],
    num_classes: int,
    *,
    max_steps: int = 240,
    check_every: int = 20,
    lr: float = 1e-3,
    level: float = 0.99,
) -> tuple[int | None, list[dict[str, float]]]:
    """Adam steps until COCO AP50 on the training images reaches ``level``: ``(steps taken or None,
    per-step losses)``; every loss term must stay finite."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history: list[dict[str, float]] = []
    for step in range(1, max_steps + 1):
        model.train()
        losses = model(images, targets)
        assert all(torch.isfinite(v) for v in losses.values()), losses
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        history.append({k: v.item() for k, v in losses.items()})
        if step % check_every == 0:
            with torch.no_grad():
                detections = model.eval()(images)
            if evaluate_coco(detections, targets, num_classes=num_classes).as_dict()["AP50"] >= level:
                return step, history
    return None, history
