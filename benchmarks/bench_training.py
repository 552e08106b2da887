"""Training engine benchmarks: optimizer step time (ours vs torch.optim), the digits classification run
(small ResNet: time and test accuracy), and the measured gain of a 5-model ensemble.

Run: ``python benchmarks/bench_training.py`` (no torchvision needed; one intra-op thread). About a minute.
"""

from __future__ import annotations

import tempfile
import time

import torch
from torch import nn

import visionkit.models.small  # noqa: F401  (registers resnet_digits)
from visionkit.data.digits import Digits
from visionkit.engine import optim as ours
from visionkit.engine.classify import ClassifyRecipe, train_classifier
from visionkit.engine.regularization import Ensemble
from visionkit.models import create_model

OPTIMIZERS = [
    ("SGD momentum", "SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}),
    ("Nesterov", "SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("Adagrad", "Adagrad", {"lr": 0.01}),
    ("RMSprop", "RMSprop", {"lr": 0.01}),
    ("Adam", "Adam", {"lr": 1e-3}),
    ("AdamW", "AdamW", {"lr": 1e-3}),
]


def optimizer_steps(steps: int = 200) -> None:
    model = create_model("resnet_digits")
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    count = sum(p.numel() for p in model.parameters())
    print(f"optimizer step, resnet_digits ({count:,} parameters), {steps} steps")
    print("| optimizer | visionkit ms/step | torch.optim ms/step | max |Δ weight| |")
    print("|---|---:|---:|---:|")
    for label, name, options in OPTIMIZERS:
        times, weights = [], []
        for module in (ours, torch.optim):
            copy = create_model("resnet_digits")
            copy.load_state_dict(model.state_dict())
            for parameter, source in zip(copy.parameters(), model.parameters(), strict=True):
                parameter.grad = source.grad.clone()
            optimizer = getattr(module, name)(copy.parameters(), **options)
            start = time.perf_counter()
            for _ in range(steps):
                optimizer.step()
            times.append(1000 * (time.perf_counter() - start) / steps)
            weights.append(torch.cat([p.detach().flatten() for p in copy.parameters()]))
        difference = float((weights[0] - weights[1]).abs().max())
        print(f"| {label} | {times[0]:.2f} | {times[1]:.2f} | {difference:.0e} |")


def digits_run() -> None:
    with tempfile.TemporaryDirectory() as run:
        metrics = train_classifier(ClassifyRecipe(epochs=10, progress=False), run)
    print(
        f"\ndigits, resnet_digits ({metrics['parameters']:,} params), 10 epochs SGD+momentum cosine: "
        f"test accuracy {metrics['test_accuracy']:.4f}, train time {metrics['train_seconds']:.1f} s "
        f"({torch.get_num_threads()} threads), diagnosis {metrics['diagnosis']}"
    )


def ensemble_gain(members: int = 5) -> None:
    train, test = Digits("train"), Digits("test")
    x_pool, y_pool = train.images.flatten(1)[:300], train.targets[:300]
    x_test, y_test = test.images.flatten(1), test.targets
    models, accuracies = [], []
    for seed in range(members):
        torch.manual_seed(seed)
        sample = torch.randint(0, len(x_pool), (len(x_pool),))  # bagging: a bootstrap sample per member
        x, y = x_pool[sample], y_pool[sample]
        model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(40):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        with torch.no_grad():
            accuracies.append(float((model(x_test).argmax(1) == y_test).float().mean()))
        models.append(model)
    with torch.no_grad():
        ensemble = float((Ensemble(models)(x_test).argmax(1) == y_test).float().mean())
    mean = sum(accuracies) / len(accuracies)
    print(
        f"\nbagged ensemble of {members} MLPs (bootstraps of 300 training digits): "
        f"members {min(accuracies):.4f}-{max(accuracies):.4f} "
        f"(mean {mean:.4f}), ensemble {ensemble:.4f}, gain {100 * (ensemble - mean):+.2f} points"
    )


if __name__ == "__main__":
    # One intra-op thread: on the shared 2-core machine two spinning threads made training ~20x slower.
    torch.set_num_threads(1)
    optimizer_steps()
    digits_run()
    ensemble_gain()
