"""§27 compression: what removing and sharing parameters buys on a CPU, measured.

One seeded ResNet-18 (10 classes, random weights: time and storage do not depend on their values) is
compressed three ways with :mod:`visionkit.compress`: **structured** pruning
(:func:`~visionkit.compress.structured.prune_channels`, half the channels of every group removed by L1
norm, counts rounded to 8: smaller dense layers), **unstructured** magnitude pruning
(:func:`~visionkit.compress.prune.magnitude_prune`, half the weights of every layer set to zero in the same
dense tensors) and **4-bit weight sharing** (:func:`~visionkit.compress.share.share_weights`: 16 shared
values per layer, k-means). Latencies are medians of interleaved calls
(:func:`~visionkit.compress.measure.paired_latency_ms`, one thread), storage from
:func:`~visionkit.compress.share.storage_report` and the CSR size of the sparse weights.

The handbook lists pruning and sharing as removing "redundant, unimportant" parameters; whether that makes a
model *faster* depends on how they are removed: zeros inside a dense tensor cost the same multiply-adds.
"""

from __future__ import annotations

import copy

import torch

from visionkit.compress.measure import macs_and_params, paired_latency_ms
from visionkit.compress.prune import layer_sparsity, magnitude_prune, storage_ratio
from visionkit.compress.share import share_weights, storage_report
from visionkit.compress.structured import prune_channels
from visionkit.lab.experiments._common import pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.models import create_model

PRUNING = Claim(
    "§27",
    "基于参数修剪和共享的方法针对模型参数的冗余性，试图去除冗余和不重要的项",
    "pruning and sharing methods target the redundancy of the parameters and try to remove the redundant, "
    "unimportant ones (read here: removing them makes the model faster)",
)
SHARING = Claim(
    "§27",
    "参数修剪和共享使用不同的方法，如矢量量化，二进制编码和稀疏约束来执行任务",
    "pruning and sharing use vector quantization, binary coding and sparsity constraints (read here: "
    "4-bit shared weights store the model in about 1/8 of float32)",
)
#: "faster" = at most this fraction of the dense model's median latency (a margin over timing noise)
FASTER = 0.8
#: 4-bit indices are 1/8 of float32; the codebooks (16 floats per layer) may cost at most this much more
SHARED_RATIO = 7.5


def judge_compression(latency: dict[str, float], shared_ratio: float) -> list[Verdict]:
    """``latency``: median ms of ``dense``, ``structured`` and ``unstructured``; ``shared_ratio``: float32
    bytes ÷ packed 4-bit bytes of the shared weights."""
    structured = latency["structured"] / latency["dense"]
    unstructured = latency["unstructured"] / latency["dense"]
    return [
        judge(
            PRUNING,
            f"structured pruning (half the channels removed): latency ≤ {FASTER} × the dense model's",
            f"{structured:.2f} × ({latency['structured']:.2f} vs {latency['dense']:.2f} ms)",
            holds=structured <= FASTER,
        ),
        judge(
            PRUNING,
            f"unstructured pruning (half the weights zeroed, dense kernels): latency ≤ {FASTER} × the "
            "dense model's",
            f"{unstructured:.2f} × ({latency['unstructured']:.2f} vs {latency['dense']:.2f} ms)",
            holds=unstructured <= FASTER,
        ),
        judge(
            SHARING,
            f"4-bit weight sharing stores the weights ≥ {SHARED_RATIO}× smaller than float32",
            f"{shared_ratio:.2f}×",
            holds=shared_ratio >= SHARED_RATIO,
        ),
    ]


@register("compression-speed-storage", "§27", "Pruning and sharing: latency and storage, measured")
def compression(ctx: LabContext) -> Findings:
    torch.manual_seed(ctx.seed)
    model = create_model("resnet18", num_classes=10).eval()
    size, batch = ctx.pick(32, 96), ctx.pick(2, 8)
    example = torch.rand(batch, 3, size, size, generator=ctx.generator())
    structured = prune_channels(model, example, 0.5, round_to=8).model.eval()
    unstructured = copy.deepcopy(model)
    magnitude_prune(unstructured, 0.5)
    shared = copy.deepcopy(model)
    share_weights(shared, 4, iterations=ctx.pick(3, 20))
    with torch.no_grad():
        latency = paired_latency_ms(
            {"dense": model, "structured": structured, "unstructured": unstructured},
            example,
            repeats=ctx.pick(5, 25),
        )
    storage = storage_report(shared)
    sparsity = layer_sparsity(unstructured)
    rows = []
    for name, net in (("dense", model), ("structured 50 % channels", structured),
                      ("unstructured 50 % weights", unstructured)):  # fmt: skip
        macs, params = macs_and_params(net, example[:1])
        key = name.split()[0]
        rows.append({"model": name, "MACs (M)": macs / 1e6, "parameters (M)": params / 1e6,
                     "ms / batch": latency[key], "× dense": latency[key] / latency["dense"]})  # fmt: skip
    csr = storage_ratio(unstructured)
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 3))
    axis.bar([r["model"].replace(" 50 % ", "\n50 % ") for r in rows], [r["ms / batch"] for r in rows])
    axis.set_ylabel(f"ms per batch of {batch} ({size}²)")
    axis.set_title("ResNet-18, one thread, median of interleaved calls", fontsize=9)
    figure.tight_layout()
    ctx.figure(figure, "latency", "Latency of the dense, channel-pruned and zero-masked ResNet-18.")
    return Findings(
        verdicts=judge_compression(latency, storage["packed_ratio"]),
        tables=[
            Table.of(f"ResNet-18 at batch {batch}, {size}×{size}, one thread (loaded, shared CPU)", rows),
            Table.of(
                "Storage of the weights (bytes)",
                [
                    {"form": "float32 dense", "bytes": storage["dense_bytes"], "× smaller": 1.0},
                    {
                        "form": "4-bit shared, packed indices + codebooks",
                        "bytes": storage["packed_bytes"],
                        "× smaller": storage["packed_ratio"],
                    },
                    {
                        "form": "4-bit shared, Huffman-coded indices",
                        "bytes": storage["huffman_bytes"],
                        "× smaller": storage["huffman_ratio"],
                    },
                    {"form": "50 % sparse, CSR (int32 indices)", "bytes": None, "× smaller": csr},
                ],
            ),
        ],
        numbers={
            "structured_latency_ratio": latency["structured"] / latency["dense"],
            "unstructured_latency_ratio": latency["unstructured"] / latency["dense"],
            "shared_packed_ratio": float(storage["packed_ratio"]),
            "shared_huffman_ratio": float(storage["huffman_ratio"]),
            "csr_ratio": float(csr),
            "mean_sparsity": float(sum(sparsity.values()) / len(sparsity)),
        },
        notes=[
            "Zeroed weights keep their multiply-adds on dense kernels: unstructured sparsity needs sparse "
            f"kernels to be faster, and in CSR with int32 indices 50 % sparsity stores {csr:.2f}× smaller."
        ],
    )
