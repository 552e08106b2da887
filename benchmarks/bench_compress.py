"""Compression with measured gains (issue 17): structured pruning against Torch-Pruning, unstructured
sparsity (size, not time), 4-bit weight sharing and low-rank factorisation, on a digits classifier.

A ResNet-18 (torchvision layout, 11.2 M parameters) is trained on the digits at 32×32 for a short
budget; then, from the same trained weights and with the same fine-tuning budget:

* ours: 50 % of the channels of every prunable group removed by L1 norm, counts rounded to 8;
* Torch-Pruning: ``MetaPruner`` with ``GroupMagnitudeImportance(p=1)``, ``pruning_ratio=0.5``,
  ``round_to=8``, the classifier ignored;
* magnitude sparsity 50 % / 90 % (dense kernels: same latency, smaller CSR storage);
* 4-bit k-means weight sharing (storage of the shared weights, accuracy);
* Tucker-2 of the 3×3 convolutions at 90 % energy.

Latency: wall-clock milliseconds per forward at batch 1 and 8, every model measured interleaved in this
one process (medians), so a shared machine slows them alike. Run: ``.venv-bench/bin/python
benchmarks/bench_compress.py`` (``--epochs``, ``--finetune`` change the budgets).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from visionkit.compress.lowrank import factorize_model
from visionkit.compress.measure import macs_and_params, paired_latency_ms, serialized_bytes
from visionkit.compress.prune import MaskHook, magnitude_prune, storage_ratio
from visionkit.compress.run import CompressRecipe, _finetune
from visionkit.compress.share import share_weights, storage_report
from visionkit.compress.structured import prune_channels
from visionkit.data.digits import Digits
from visionkit.engine.classify import ClassifyRecipe, evaluate_classifier, load_classifier, train_classifier


def _accuracy(model: nn.Module, loader: DataLoader) -> float:
    return evaluate_classifier(model, loader, torch.device("cpu"))[1]


def _torch_pruning(model: nn.Module, example: torch.Tensor) -> nn.Module:
    import torch_pruning as tp

    pruned = copy.deepcopy(model)
    pruner = tp.pruner.MetaPruner(
        pruned, example, importance=tp.importance.GroupMagnitudeImportance(p=1), pruning_ratio=0.5,
        ignored_layers=[pruned[1].fc], round_to=8,
    )  # fmt: skip
    pruner.step()
    return pruned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--finetune", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    arguments = parser.parse_args()
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="bench_compress_"))
    start = time.perf_counter()
    recipe = ClassifyRecipe(model="resnet18", image_size=32, epochs=arguments.epochs, lr=0.05, progress=False)
    train_classifier(recipe, work / "teacher")
    train_seconds = time.perf_counter() - start
    original, _ = load_classifier(work / "teacher" / "model.pt")
    train = DataLoader(Digits("train", seed=0), batch_size=64, shuffle=True)
    test = DataLoader(Digits("test", seed=0), batch_size=512)
    settings = CompressRecipe(weights="-", finetune_epochs=arguments.finetune, lr=0.01)
    example = torch.zeros(2, 1, 8, 8)
    models: dict[str, nn.Module] = {"original": original}
    accuracy = {"original": (_accuracy(original, test),) * 2}

    def finish(name: str, model: nn.Module, hooks: list | None = None) -> None:
        before = _accuracy(model, test)
        _finetune(model, settings, train, arguments.finetune, hooks or [])
        accuracy[name] = (before, _accuracy(model, test))
        models[name] = model

    finish("ours: channels 50 %", prune_channels(original, example, 0.5, round_to=8).model)
    finish("Torch-Pruning 50 %", _torch_pruning(original, example))
    for sparsity in (0.5, 0.9):
        sparse = copy.deepcopy(original)
        masks = magnitude_prune(sparse, sparsity)
        finish(f"magnitude sparsity {sparsity:.0%}", sparse, [MaskHook(sparse, masks)])
    shared = copy.deepcopy(original)
    share_weights(shared, bits=4)
    finish("4-bit sharing", shared)
    tucker = copy.deepcopy(original)
    factorize_model(tucker, "tucker2", energy=0.9)
    finish("Tucker-2 90 % energy", tucker)
    latency = {
        b: paired_latency_ms(models, torch.zeros(b, 1, 8, 8), repeats=arguments.repeats) for b in (1, 8)
    }
    rows = []
    for name, model in models.items():
        macs, params = macs_and_params(model, torch.zeros(1, 1, 8, 8))
        extra = ""
        if name.startswith("magnitude"):
            extra = f"CSR storage {storage_ratio(model):.2f}× smaller"
        elif name.startswith("4-bit"):
            report = storage_report(model)
            packed, huffman = report["packed_ratio"], report["huffman_ratio"]
            extra = f"shared weights {packed:.2f}× smaller (Huffman {huffman:.2f}×)"
        rows.append({
            "model": name, "params": params, "macs": macs, "bytes": serialized_bytes(model.state_dict()),
            "b1_ms": latency[1][name], "b8_ms": latency[8][name],
            "acc_before_ft": accuracy[name][0], "acc": accuracy[name][1], "note": extra,
        })  # fmt: skip
    base = rows[0]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads 2, "
          f"trained {arguments.epochs} epochs in {train_seconds:.0f} s, "
          f"fine-tune {arguments.finetune} epochs")  # fmt: skip
    print("| model | params | MACs | speed-up b1 | speed-up b8 | ms b1 / b8 | acc. before FT | acc. | note |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for row in rows:
        print(f"| {row['model']} | {row['params']:,} | {row['macs'] / 1e6:.1f} M | "
              f"{base['b1_ms'] / row['b1_ms']:.2f}× | {base['b8_ms'] / row['b8_ms']:.2f}× | "
              f"{row['b1_ms']:.2f} / {row['b8_ms']:.2f} | {row['acc_before_ft']:.4f} | {row['acc']:.4f} | "
              f"{row['note']} |")  # fmt: skip
    (work / "bench_compress.json").write_text(json.dumps(rows, indent=2))
    print(f"rows: {work / 'bench_compress.json'}")


if __name__ == "__main__":
    main()
