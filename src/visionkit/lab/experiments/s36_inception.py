"""§36 Inception (and §15 1×1 convolutions): the parameter savings of 1×1 reductions, recounted.

The handbook's example: a 28×28×192 input, branches 1×1×64, 3×3×128, 5×5×32 (naive) and the same with
1×1 reductions to 96 and 16 channels. Its printed sums (153,600 and 15,872) are each only the *last term*
of the sum (5·5·192·32 and 1·1·192·16 + 5·5·16·32): the real sums are 387,072 and 157,184. Counts are
weights only (no biases), as in the handbook's formula; the pool branch's 1×1 projection (6,144 weights)
is not in the handbook's second sum and is reported apart.
"""

from __future__ import annotations

import torch
from torch import nn

from visionkit.analysis import summary
from visionkit.lab.experiments._common import pyplot
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext
from visionkit.models import create_model
from visionkit.nn.blocks import InceptionModule

NAIVE_SUM = Claim(
    "§36",
    r"(1 \times 1 \times 192 \times 64)+(3 \times 3 \times 192 \times 128)+(5 \times 5 \times "
    r"192 \times 32)=153600",
    "the naive Inception module has 1·1·192·64 + 3·3·192·128 + 5·5·192·32 = 153,600 weights",
    kind="fact",
)
REDUCED_SUM = Claim(
    "§36",
    r"(1 \times 1 \times 192 \times 16+5 \times 5 \times 16 \times 32)=15872",
    "with 1×1 reductions (to 96 and 16 channels) the module has 15,872 weights",
    kind="fact",
)
NAIVE_OUT = Claim(
    "§36", "64+128+32+192=416", "the naive module outputs 64+128+32+192 = 416 channels", kind="fact"
)
REDUCED_OUT = Claim(
    "§36", "64+128+32+32=256", "the reduced module outputs 64+128+32+32 = 256 channels", kind="fact"
)
FEWER = Claim(
    "§15",
    "进行卷积核通道数的降维和升维，减少网络参数",
    "1×1 convolutions reduce or raise the channel count and cut the parameter count",
)
LESS_COMPUTE = Claim(
    "§36",
    "所以加入1×1的卷积后，在降低大量运算的前提下，降低了维度",
    "adding 1×1 convolutions cuts much computation and lowers the output dimension",
)
VGG_FC = Claim(
    "§36",
    "VGG中全连接层的参数占据了90%的参数量",
    "in VGG the fully connected layers hold 90 % of the parameters",
)


def _conv(in_channels: int, out_channels: int, **options: object) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, bias=False, **options)  # type: ignore[arg-type]


class NaiveInception(nn.Module):
    """The naive module: 1×1, 3×3 and 5×5 convolutions and a 3×3 max-pool side by side, no reductions."""

    def __init__(self, in_channels: int = 192) -> None:
        super().__init__()
        self.branch1 = _conv(in_channels, 64, kernel_size=1)
        self.branch2 = _conv(in_channels, 128, kernel_size=3, padding=1)
        self.branch3 = _conv(in_channels, 32, kernel_size=5, padding=2)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.pool(x)], dim=1)


def judge_inception(naive: dict[str, int], reduced: dict[str, int], vgg_fc_share: float) -> list[Verdict]:
    """``naive``/``reduced``: ``weights`` (handbook's terms), ``macs``, ``channels``, ``last_terms`` (the
    weights of the last bracket of the printed sum); ``vgg_fc_share`` in [0, 1] (rounded to 5 %)."""
    return [
        judge(
            NAIVE_SUM,
            "measured weight count == 153,600",
            naive["weights"],
            holds=naive["weights"] == 153_600,
            correction=f"the sum is {naive['weights']:,}; 153,600 is "
            f"only its last term 5·5·192·32 = {naive['last_terms']:,}",
        ),
        judge(
            REDUCED_SUM,
            "measured weight count == 15,872",
            reduced["weights"],
            holds=reduced["weights"] == 15_872,
            correction=f"the sum is {reduced['weights']:,}; 15,872 "
            f"is only its last bracket 1·1·192·16 + 5·5·16·32 = {reduced['last_terms']:,}",
        ),
        judge(
            NAIVE_OUT,
            "output channels == 416",
            naive["channels"],
            holds=naive["channels"] == 416,
            correction=f"{naive['channels']} channels",
        ),
        judge(
            REDUCED_OUT,
            "output channels == 256",
            reduced["channels"],
            holds=reduced["channels"] == 256,
            correction=f"{reduced['channels']} channels",
        ),
        judge(
            FEWER,
            "reduced weights < naive weights",
            f"{reduced['weights']:,} vs {naive['weights']:,} ({reduced['weights'] / naive['weights']:.3f}×)",
            holds=reduced["weights"] < naive["weights"],
        ),
        judge(
            LESS_COMPUTE,
            "reduced MACs ≤ half the naive MACs and fewer output channels",
            f"{reduced['macs']:,} vs {naive['macs']:,} MACs; {reduced['channels']} vs {naive['channels']} "
            "channels",
            holds=2 * reduced["macs"] <= naive["macs"] and reduced["channels"] < naive["channels"],
        ),
        judge(
            VGG_FC,
            "FC share of VGG-16's parameters rounds to 90 % (nearest 5 %)",
            f"{vgg_fc_share:.1%}",
            holds=round(vgg_fc_share * 20) == 18,
        ),
    ]


def _measure(module: nn.Module, excluded: tuple[str, ...]) -> dict[str, int]:
    report = summary(module, (1, 192, 28, 28), device="meta")
    weights = sum(p.numel() for name, p in module.named_parameters() if not name.startswith(excluded))
    with torch.no_grad():
        channels = module(torch.zeros(1, 192, 28, 28, device="meta")).shape[1]
    return {"weights": weights, "macs": report.total_macs, "channels": channels}


@register(
    "inception-1x1",
    ("§36", "§15"),
    "Inception: 1×1 reductions and the handbook's parameter sums",
    errata=True,
)
def inception_savings(ctx: LabContext) -> Findings:
    with torch.device("meta"):
        naive_module = NaiveInception()
        reduced_module = InceptionModule(192, 64, 96, 128, 16, 32, 32, conv_block=_conv)
        vgg = create_model("vgg16")
    naive = {**_measure(naive_module, ()), "last_terms": naive_module.branch3.weight.numel()}
    reduced = _measure(reduced_module, ("branch4",))
    reduced["last_terms"] = sum(p.numel() for p in reduced_module.branch3.parameters())
    pool_projection = sum(p.numel() for p in reduced_module.branch4.parameters())
    fc = sum(p.numel() for m in vgg.modules() if isinstance(m, nn.Linear) for p in m.parameters())
    share = fc / sum(p.numel() for p in vgg.parameters())
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3))
    labels = ["handbook naive", "measured naive", "handbook 1×1", "measured 1×1"]
    values = [153_600, naive["weights"], 15_872, reduced["weights"]]
    axis.bar(labels, values, color=["#bbb", "#4878a8", "#bbb", "#4878a8"])
    axis.set_ylabel("weights")
    axis.set_title("Inception module (28×28×192 input)")
    figure.tight_layout()
    ctx.figure(figure, "inception_weights", "The handbook's printed sums (grey) and the measured ones.")
    rows = [
        {
            "module": "naive",
            "weights": naive["weights"],
            "MACs (28×28)": naive["macs"],
            "output channels": naive["channels"],
        },
        {
            "module": "1×1 reductions (pool projection excluded)",
            "weights": reduced["weights"],
            "MACs (28×28)": reduced["macs"],
            "output channels": reduced["channels"],
        },
        {"module": "pool-branch 1×1 projection", "weights": pool_projection},
    ]
    return Findings(
        verdicts=judge_inception(naive, reduced, share),
        tables=[Table.of("Inception module, weights only (no biases)", rows)],
        numbers={
            "naive_weights": naive["weights"],
            "reduced_weights": reduced["weights"],
            "naive_macs": naive["macs"],
            "reduced_macs": reduced["macs"],
            "vgg16_fc_share": share,
        },
        notes=[
            f"With the pool projection the reduced module has {reduced['weights'] + pool_projection:,} "
            "weights; MACs include it."
        ],
    )
