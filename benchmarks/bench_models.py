"""Forward and train-step throughput of visionkit backbones vs torchvision's same architecture.

Run in the reference environment (torchvision importable) for the side-by-side ratio; without
torchvision only our numbers are printed::

    .venv-bench/bin/python benchmarks/bench_models.py                 # eager, contiguous
    .venv-bench/bin/python benchmarks/bench_models.py --channels-last # + channels_last fast path
    .venv-bench/bin/python benchmarks/bench_models.py --compile       # + torch.compile (slow to compile)

Both models get the *same weights* (our state dict is torchvision's), so outputs are checked equal
before timing. Ours and theirs are timed alternately (interleaved repeats, median) to share the
machine's noise; the best (minimum) time of the repeats is reported, the least noisy estimate on a
shared machine. Ratio = our images/s ÷ torchvision's; the target is ≥ 0.95.

The last table compares our reference ``visionkit.nn.BatchNorm2d`` with ``torch.nn.BatchNorm2d``
(training forward + backward): it is why the models use torch's layer.

Fast paths (documented here, tested for correctness in tests/models/test_models_fast_paths.py):

* ``model.to(memory_format=torch.channels_last)`` and ``x.contiguous(memory_format=torch.channels_last)``:
  oneDNN convolutions without layout conversions.
* ``torch.compile(model)``: the whole backbone is one graph (no graph breaks), so Inductor fuses
  conv-BN-activation chains; the compiled output is checked against eager here.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from visionkit.models import create_model

MODELS = ("resnet18", "resnet50", "mobilenet_v2", "vgg11", "googlenet", "alexnet")


def _torchvision_model(name: str) -> nn.Module | None:
    try:
        import torchvision
    except ImportError:
        return None
    kwargs = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    return getattr(torchvision.models, name)(**kwargs)


def _time(step: Callable[[], None], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def _forward_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        with torch.no_grad():
            model(x)

    return step


def _train_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    target = torch.zeros(x.shape[0], dtype=torch.long)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), target).backward()
        optimizer.step()

    return step


def _prepare(model: nn.Module, x: torch.Tensor, channels_last: bool, compile_model: bool):  # type: ignore[no-untyped-def]
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if compile_model:
        model = torch.compile(model)
    return model, x


def bench_model(name: str, args: argparse.Namespace) -> dict[str, float | str]:
    torch.manual_seed(0)
    ours = create_model(name)
    theirs = _torchvision_model(name)
    x = torch.randn(args.batch, 3, args.size, args.size)
    if theirs is not None:
        theirs.load_state_dict(ours.state_dict(), strict=True)
    row: dict[str, float | str] = {"model": name}
    for mode in ("forward", "train"):
        models = {"ours": ours, "torchvision": theirs} if theirs is not None else {"ours": ours}
        steps = {}
        for label, model in models.items():
            model.train(mode == "train")
            prepared, xx = _prepare(model, x, args.channels_last, args.compile)
            if mode == "forward":
                with torch.no_grad():
                    reference = model.eval()(x)
                    check = prepared(xx)
                torch.testing.assert_close(check, reference, rtol=1e-3, atol=1e-3)
            steps[label] = _forward_step(prepared, xx) if mode == "forward" else _train_step(prepared, xx)
            steps[label]()  # warm-up (and compilation)
        times: dict[str, list[float]] = {label: [] for label in steps}
        for _ in range(args.repeats):  # interleave so both see the same machine load
            for label, step in steps.items():
                times[label] += _time(step, 1)
        for label in steps:
            row[f"{mode}_{label}"] = args.batch / min(times[label])
        if theirs is not None:
            row[f"{mode}_ratio"] = row[f"{mode}_ours"] / row[f"{mode}_torchvision"]  # type: ignore[operator]
    return row


def bench_batch_norm(repeats: int) -> tuple[float, float]:
    """Seconds per training forward+backward of ours vs torch's BatchNorm2d on (8, 64, 56, 56)."""
    from visionkit.nn import BatchNorm2d

    x = torch.randn(8, 64, 56, 56, requires_grad=True)
    grad = torch.randn_like(x)
    results = []
    for layer in (BatchNorm2d(64), nn.BatchNorm2d(64)):

        def step(layer: nn.Module = layer) -> None:
            layer(x).backward(grad)

        step()
        results.append(min(_time(step, repeats)))
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--no-batchnorm", dest="batchnorm", action="store_false", help="skip the BN table")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
        f"{args.size}x{args.size}, channels_last={args.channels_last}, compile={args.compile}"
    )
    header = f"{'model':<14}{'fwd ours':>10}{'fwd tv':>10}{'ratio':>7}"
    header += f"{'train ours':>12}{'train tv':>10}{'ratio':>7}"
    print(header + "   (images/s)")
    for name in args.models:
        row = bench_model(name, args)

        def cell(key: str, width: int, fmt: str = ".1f", row: dict = row) -> str:
            return f"{row[key]:>{width}{fmt}}" if key in row else f"{'-':>{width}}"

        print(
            f"{name:<14}{cell('forward_ours', 10)}{cell('forward_torchvision', 10)}"
            f"{cell('forward_ratio', 7, '.2f')}{cell('train_ours', 12)}{cell('train_torchvision', 10)}"
            f"{cell('train_ratio', 7, '.2f')}"
        )
    if args.batchnorm:
        ours_bn, torch_bn = bench_batch_norm(args.repeats)
        print(
            f"BatchNorm2d train fwd+bwd (8x64x56x56): visionkit {ours_bn * 1e3:.1f} ms, "
            f"torch {torch_bn * 1e3:.1f} ms, torch is {ours_bn / torch_bn:.2f}x faster"
        )


if __name__ == "__main__":
    main()
