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
import dataclasses
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from visionkit.compress.distill import distill_classifier
from visionkit.compress.lowrank import factorize_model
from visionkit.compress.measure import (
    macs_and_params,
    paired_accuracy_gain,
    paired_latency_ms,
    serialized_bytes,
)
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


@torch.no_grad()
def _correct(model: nn.Module, loader: DataLoader) -> np.ndarray:
    """Per-image correctness (0/1) over ``loader``, in order."""
    model.eval()
    return np.concatenate([(model(x).argmax(1) == y).numpy() for x, y in loader]).astype(float)


def _interval(result: dict[str, float]) -> str:
    return f"{100 * result['gain']:+.2f} [{100 * result['low']:+.2f}, {100 * result['high']:+.2f}]"


def _train_resnet18(epochs: int, work: Path, threads: int) -> tuple[nn.Module, float]:
    start = time.perf_counter()
    recipe = ClassifyRecipe(model="resnet18", image_size=32, epochs=epochs, lr=0.05, progress=False,
                            threads=threads)  # fmt: skip
    train_classifier(recipe, work / "teacher")
    return load_classifier(work / "teacher" / "model.pt")[0], time.perf_counter() - start


def accuracy_part(arguments: argparse.Namespace, work: Path) -> None:
    """The accuracy columns of the targets: structured 50 % (ours and Torch-Pruning) and 4-bit sharing,
    each fine-tuned with the same budget from the same trained ResNet-18; changes in points with a paired
    bootstrap over the 270 test images (with ``--ft-seeds`` > 1 the pruned models are fine-tuned once per
    seed — data order — and an image's score is its mean over the seeds)."""
    original, train_seconds = _train_resnet18(arguments.epochs, work, arguments.threads)
    train = DataLoader(Digits("train", seed=0), batch_size=64, shuffle=True)
    test = DataLoader(Digits("test", seed=0), batch_size=512)
    settings = CompressRecipe(weights="-", finetune_epochs=arguments.finetune, lr=0.01)
    example = torch.zeros(2, 1, 8, 8)
    shared = copy.deepcopy(original)
    share_weights(shared, bits=4)
    variants = {
        "ours: channels 50 % (L1, round to 8)": prune_channels(original, example, 0.5, round_to=8).model,
        "Torch-Pruning 50 % (group L1, round to 8)": _torch_pruning(original, example),
        "4-bit k-means sharing": shared,
    }
    correct = {"original": (_correct(original, test), _correct(original, test)[:, None])}
    seconds = {}
    for name, model in list(variants.items()):
        before = _correct(model, test)
        runs = []
        for seed in range(1 if model is shared else arguments.ft_seeds):  # sharing: slow, one seed
            tuned = copy.deepcopy(model)
            start = time.perf_counter()
            torch.manual_seed(seed)
            _finetune(tuned, dataclasses.replace(settings, seed=seed), train, arguments.finetune, [])
            seconds[name] = time.perf_counter() - start
            runs.append(_correct(tuned, test))
            variants[name] = tuned if seed == 0 else variants[name]
        correct[name] = (before, np.stack(runs, 1))  # (images, fine-tuning seeds)
        if len(runs) > 1:
            print(f"{name}: accuracy per fine-tuning seed {[round(float(r.mean()), 4) for r in runs]}")
    models = {"original": original, **variants}
    latency = {
        b: paired_latency_ms(models, torch.zeros(b, 1, 8, 8), repeats=arguments.repeats) for b in (1, 8)
    }
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, threads "
          f"{arguments.threads}, ResNet-18 trained {arguments.epochs} epochs in {train_seconds:.0f} s, "
          f"fine-tune {arguments.finetune} epochs (lr 0.01, cosine) each")  # fmt: skip
    print("| model | params | MACs | speed-up b1 / b8 | acc. before FT | acc. after FT | change vs original "
          "(points) [95 % CI] | fine-tune s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name, model in models.items():
        macs, params = macs_and_params(model, torch.zeros(1, 1, 8, 8))
        tuned = correct[name][1]
        gain = paired_accuracy_gain(np.repeat(correct["original"][1], tuned.shape[1], 1), tuned)
        b1, b8 = (latency[b]["original"] / latency[b][name] for b in (1, 8))
        speed = f"{b1:.2f}× / {b8:.2f}×"
        before, after = correct[name][0].mean(), correct[name][1].mean()
        print(f"| {name} | {params:,} | {macs / 1e6:.1f} M | {speed} | {before:.4f} | {after:.4f} | "
              f"{_interval(gain)} | {seconds.get(name, 0):.0f} |")  # fmt: skip
        rows.append({"model": name, "params": params, "macs": macs, "acc_before": correct[name][0].mean(),
                     "acc": correct[name][1].mean(), "change": gain, "b1_ms": latency[1][name],
                     "b8_ms": latency[8][name]})  # fmt: skip
    names = list(variants)
    ours_vs_tp = paired_accuracy_gain(correct[names[1]][1], correct[names[0]][1])
    print(f"ours − Torch-Pruning after fine-tuning (points): {_interval(ours_vs_tp)}, "
          f"P(≤ 0) {ours_vs_tp['below_zero']:.3f}")  # fmt: skip
    report = storage_report(shared)
    packed, huffman = report["packed_ratio"], report["huffman_ratio"]
    print(f"4-bit sharing: shared weights {packed:.2f}× smaller (Huffman {huffman:.2f}×)")
    (work / "accuracy.json").write_text(json.dumps({"rows": rows, "ours_vs_tp": ours_vs_tp}, indent=2))
    print(f"rows: {work / 'accuracy.json'}")


def distill_part(arguments: argparse.Namespace, work: Path) -> None:
    """Distilled student vs the same student trained alone (same recipe, seed, data order and budget).

    For each seed (its own digits split), a teacher (``--teacher-model``, ``--epochs``; ResNet-18 at 32×32
    or ``resnet_digits``) is trained; then the student (``--student-model``, ``--student-epochs``) alone,
    with soft targets (α 0.9, T 4), and with soft targets plus a hint (the student's last stage ← the
    teacher's 2×2 stage through a 1×1 adapter). Gains: paired bootstrap over all (seed, test image) pairs.
    """
    teacher_hint = "1.layer3" if arguments.teacher_model == "resnet18" else "1.stages.2"
    students = {
        "alone": {},
        "soft targets (α 0.9, T 4)": {"alpha": 0.9, "temperature": 4.0},
        f"soft targets + hint (1.stages.2 ← {teacher_hint})": {
            "alpha": 0.9, "temperature": 4.0, "hint": f"1.stages.2:{teacher_hint}", "hint_weight": 1.0,
        },
    }  # fmt: skip
    correct: dict[str, list[np.ndarray]] = {name: [] for name in ["teacher", *students]}
    start = time.perf_counter()
    for seed in range(arguments.seeds):
        big = arguments.teacher_model == "resnet18"
        teacher_recipe = ClassifyRecipe(model=arguments.teacher_model, image_size=32 if big else 0,
                                        epochs=arguments.epochs, lr=0.05 if big else 0.1, progress=False,
                                        threads=arguments.threads, seed=seed)  # fmt: skip
        train_classifier(teacher_recipe, work / f"teacher{seed}")
        teacher_path = work / f"teacher{seed}" / "model.pt"
        test = DataLoader(Digits("test", seed=seed), batch_size=512)
        correct["teacher"].append(_correct(load_classifier(teacher_path)[0], test))
        for index, (name, keys) in enumerate(students.items()):
            extra = {"teacher": str(teacher_path), **keys} if keys else {}
            recipe = ClassifyRecipe(model=arguments.student_model, epochs=arguments.student_epochs,
                                    progress=False, threads=arguments.threads, seed=seed,
                                    **extra)  # fmt: skip
            folder = work / f"student{seed}_{index}"
            (distill_classifier if keys else train_classifier)(recipe, folder)
            correct[name].append(_correct(load_classifier(folder / "model.pt")[0], test))
        print(f"seed {seed} done at {time.perf_counter() - start:.0f} s", flush=True)
    pooled = {name: np.concatenate(values) for name, values in correct.items()}
    print(f"torch {torch.__version__}, threads {arguments.threads}, {arguments.seeds} seeds, teacher "
          f"{arguments.teacher_model} {arguments.epochs} epochs, student {arguments.student_model} "
          f"{arguments.student_epochs} epochs, "
          f"{time.perf_counter() - start:.0f} s in all")  # fmt: skip
    print("| model | test accuracy per seed | pooled | gain vs alone (points) [95 % CI] | P(gain ≤ 0) |")
    print("|---|---|---:|---:|---:|")
    rows = {}
    for name, values in correct.items():
        per_seed = ", ".join(f"{v.mean():.4f}" for v in values)
        gain = paired_accuracy_gain(pooled["alone"], pooled[name])
        shown = "—" if name == "alone" else f"{_interval(gain)} | {gain['below_zero']:.3f}"
        print(f"| {name} | {per_seed} | {pooled[name].mean():.4f} | {shown} |")
        rows[name] = {"per_seed": [float(v.mean()) for v in values], "gain": gain}
    (work / "distill.json").write_text(json.dumps(rows, indent=2))
    print(f"rows: {work / 'distill.json'}")


def svd_part(arguments: argparse.Namespace, work: Path) -> None:
    """Truncated SVD of every fully connected layer of AlexNet (64×64 input, AdamW: without BatchNorm it
    did not leave chance level with SGD at lr 0.01 in 4 epochs) and VGG-11-BN (32×32, SGD) at 90 % energy
    (one SVD per layer in ``--svd-dtype``), each model trained on the digits first; accuracy before and
    after ``--finetune`` epochs (SGD, lr 0.005), paired latency, parameters."""
    train = DataLoader(Digits("train", seed=0), batch_size=64, shuffle=True)
    test = DataLoader(Digits("test", seed=0), batch_size=512)
    settings = CompressRecipe(weights="-", finetune_epochs=arguments.finetune, lr=0.005)
    dtype = {"float32": torch.float32, "float64": torch.float64}[arguments.svd_dtype]
    print(f"torch {torch.__version__}, threads {arguments.threads}, trained {arguments.epochs} epochs, "
          f"fine-tune {arguments.finetune}, SVD in {arguments.svd_dtype}")  # fmt: skip
    print("| model | params | FC params | ranks (kept / full) | SVD s | speed-up b1 / b8 | ms b1 / b8 | acc. "
          "before FT | acc. after FT | change vs original (points) [95 % CI] |")  # fmt: skip
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    settings_of = {"alexnet": (64, "adamw", 1e-3), "vgg11_bn": (32, "momentum", 0.02)}  # no BN in AlexNet
    for name in arguments.svd_models.split(","):
        size, optimizer, lr = settings_of[name]
        recipe = ClassifyRecipe(model=name, image_size=size, epochs=arguments.epochs, lr=lr, progress=False,
                                optimizer=optimizer, threads=arguments.threads)  # fmt: skip
        train_classifier(recipe, work / name)
        original = load_classifier(work / name / "model.pt")[0]
        full_ranks = {n: min(m.weight.shape) for n, m in original.named_modules() if isinstance(m, nn.Linear)}
        factored = copy.deepcopy(original)
        start = time.perf_counter()
        ranks = factorize_model(factored, "svd", energy=0.9, svd_dtype=dtype)
        svd_seconds = time.perf_counter() - start
        before = _correct(factored, test)
        _finetune(factored, settings, train, arguments.finetune, [])
        correct = {"original": _correct(original, test), "svd": _correct(factored, test)}
        models = {"original": original, "svd": factored}
        latency = {
            b: paired_latency_ms(models, torch.zeros(b, 1, 8, 8), repeats=arguments.repeats) for b in (1, 8)
        }
        fc = {
            key: sum(p.numel() for n, p in m.named_parameters() if ".classifier." in n)
            for key, m in models.items()
        }
        params = {key: sum(p.numel() for p in m.parameters()) for key, m in models.items()}
        gain = paired_accuracy_gain(correct["original"], correct["svd"])
        kept = ", ".join(
            f"{n.split('.')[-1]}: {ranks.get(n, full)} / {full}" for n, full in full_ranks.items()
        )
        for key in models:
            b1, b8 = (latency[b]["original"] / latency[b][key] for b in (1, 8))
            after = correct[key].mean()
            print(f"| {name} {key} | {params[key]:,} | {fc[key]:,} | {kept if key == 'svd' else ''} | "
                  f"{svd_seconds if key == 'svd' else 0:.1f} | {b1:.2f}× / {b8:.2f}× | "
                  f"{latency[1][key]:.2f} / {latency[8][key]:.2f} | "
                  f"{(before if key == 'svd' else correct[key]).mean():.4f} | {after:.4f} | "
                  f"{_interval(gain) if key == 'svd' else '—'} |", flush=True)  # fmt: skip
        rows.append({"model": name, "ranks": ranks, "full_ranks": full_ranks, "params": params, "fc": fc,
                     "svd_seconds": svd_seconds, "latency": latency, "acc_before": before.mean(),
                     "acc": {k: v.mean() for k, v in correct.items()}, "change": gain})  # fmt: skip
    (work / "svd.json").write_text(json.dumps(rows, indent=2, default=float))
    print(f"rows: {work / 'svd.json'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("table", "accuracy", "svd", "distill"), default="table")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--finetune", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ft-seeds", type=int, default=1, help="accuracy: fine-tuning seeds of the pruned")
    parser.add_argument("--svd-dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--svd-models", default="alexnet,vgg11_bn", help="svd: comma-separated")
    parser.add_argument("--seeds", type=int, default=3, help="distill: seeds (digits splits)")
    parser.add_argument("--student-epochs", type=int, default=5, help="distill: student budget")
    parser.add_argument("--teacher-model", choices=("resnet18", "resnet_digits"), default="resnet18")
    parser.add_argument("--student-model", default="resnet_digits", help="distill: the student")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    if arguments.part != "table":
        work = Path(tempfile.mkdtemp(prefix=f"bench_compress_{arguments.part}_"))
        {"accuracy": accuracy_part, "distill": distill_part, "svd": svd_part}[arguments.part](arguments, work)
        return
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
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"threads {arguments.threads}, trained {arguments.epochs} epochs in {train_seconds:.0f} s, "
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
