"""§7 data preprocessing: PCA/ZCA whitening of the digits (:mod:`visionkit.data.preprocessing`), fitted on
the training split only, and the handbook's statements about the SVD and whitening, computed.

Features: the 8×8 digits as 64-vectors in float64, without the 3 pixels that are constant on the training
split. Covariances use the unbiased 1/(N−1) convention of the whitening transforms. The rounding bound of a
whitened covariance is D²·u·κ (a backward-stable symmetric eigensolver's error, p(D) = D, times the
condition number κ = λmax/λmin, over D entries).
"""

from __future__ import annotations

import torch

from visionkit.data.digits import Digits
from visionkit.data.preprocessing import PCAWhitening, ZCAWhitening
from visionkit.lab.experiments._common import image_panels
from visionkit.lab.registry import register
from visionkit.lab.results import Claim, Findings, Table, Verdict, judge
from visionkit.lab.runner import LabContext

SVD_SQUARES = Claim(
    "§7",
    "因为cov是对称且半正定的，所以S中元素是特征值的平方",
    "cov is symmetric positive semi-definite, so the entries of S (from svd(cov)) are the "
    "squares of the eigenvalues",
    kind="fact",
)
DIVIDE = Claim(
    "§7",
    "然后对每个维度除以其特征值来对数值范围进行归一化",
    "whitening then divides each dimension by its eigenvalue to normalize its range",
    kind="fact",
)
IDENTITY = Claim(
    "§7", "将数据协方差矩阵变为单位矩阵", "whitening turns the data covariance into the identity", kind="fact"
)
SMOOTHING = Claim(
    "§7",
    "在实际操作中，这个问题可以用更强的平滑来解决（例如：采用比1e-5更大的值）",
    "in practice the noise amplification is fixed by stronger smoothing (a value larger than 1e-5)",
)
TRAIN_ONLY = Claim(
    "§7",
    "应该先分成训练/验证/测试集，只是从训练集中求图片平均值",
    "split first, compute the statistics on the training set only",
)
U = 2.0**-53


def judge_whitening(
    svd: dict[str, float],
    divide_error: float,
    identity: dict[str, float],
    test_variance: dict[float, float],
    leak: dict[str, float],
) -> list[Verdict]:
    """``svd``: max |S − λ| and |S − λ²| and the bound; ``divide_error``: max |cov − I| after dividing by λ;
    ``identity``: ``pca``/``zca`` max |cov − I| on train with eps = 0 and ``bound``; ``test_variance``: eps
    → largest whitened variance on the test split; ``leak``: test mean |cov − I| (eps 1e-5) fitted on
    ``train`` / ``all``."""
    small, large = min(test_variance), max(test_variance)
    return [
        judge(
            SVD_SQUARES,
            "S == λ² within rounding",
            f"max |S − λ²| = {svd['squares']:.3g}, max |S − λ| = "
            f"{svd['plain']:.1e} (bound {svd['bound']:.1e})",
            holds=svd["squares"] <= svd["bound"],
            correction="for a symmetric PSD matrix the singular values ARE the eigenvalues (S == λ); "
            "they are "
            "the squares of the singular values of X/√N",
        ),
        judge(
            DIVIDE,
            "dividing by λ gives covariance I (max |cov − I| ≤ D²·u·κ)",
            f"max |cov − I| = {divide_error:.3g} (bound {identity['bound']:.1e})",
            holds=divide_error <= identity["bound"],
            correction="divide by √λ (the standard deviation), as the code's "
            "Xrot / np.sqrt(S + 1e-5) does; dividing by λ leaves covariance diag(1/λ)",
        ),
        judge(
            IDENTITY,
            "PCA and ZCA whitening (eps = 0, fitted on train): max |cov − I| ≤ D²·u·κ",
            f"PCA {identity['pca']:.1e}, ZCA {identity['zca']:.1e} (bound {identity['bound']:.1e})",
            holds=max(identity["pca"], identity["zca"]) <= identity["bound"],
        ),
        judge(
            SMOOTHING,
            f"largest whitened variance on the test split falls from eps={small:g} to eps={large:g}",
            f"{test_variance[small]:.3g} → {test_variance[large]:.3g}",
            holds=test_variance[large] < test_variance[small],
        ),
        judge(
            TRAIN_ONLY,
            "fitting on train+test makes the test split look better whitened than fitting on "
            "train (the leak the handbook warns about)",
            f"test mean |cov − I|: train fit {leak['train']:.4f}, all-data fit {leak['all']:.3g}",
            holds=leak["all"] < leak["train"],
        ),
    ]


def _max_identity_error(y: torch.Tensor) -> float:
    return float((torch.cov(y.T) - torch.eye(y.shape[1], dtype=y.dtype)).abs().max())


def _mean_identity_error(y: torch.Tensor) -> float:
    return float((torch.cov(y.T) - torch.eye(y.shape[1], dtype=y.dtype)).abs().mean())


@register("whitening", "§7", "PCA/ZCA whitening fitted on the training split", errata=True)
def whitening(ctx: LabContext) -> Findings:
    splits = {name: Digits(name, seed=ctx.seed).images.flatten(1).double() for name in ("train", "test")}
    keep = splits["train"].var(0) > 0
    train, test = splits["train"][:, keep], splits["test"][:, keep]
    covariance = torch.cov(train.T)
    eigenvalues = torch.linalg.eigvalsh(covariance).flip(0)
    vectors = torch.linalg.svd(covariance).U
    singular = torch.linalg.svdvals(covariance)
    dimension, condition = train.shape[1], float(eigenvalues[0] / eigenvalues[-1])
    norm = float(eigenvalues[0])
    svd = {
        "plain": float((singular - eigenvalues).abs().max()),
        "squares": float((singular - eigenvalues**2).abs().max()),
        "bound": 2 * dimension * U * norm,
    }
    rotated = (train - train.mean(0)) @ vectors
    divide_error = _max_identity_error(rotated / singular)
    bound = dimension**2 * U * condition
    identity = {
        "pca": _max_identity_error(PCAWhitening(eps=0.0).fit(train).transform(train)),
        "zca": _max_identity_error(ZCAWhitening(eps=0.0).fit(train).transform(train)),
        "bound": bound,
    }
    test_variance = {}
    for eps in (1e-5, 1e-3, 1e-1):
        whitened = PCAWhitening(eps=eps).fit(train).transform(test)
        test_variance[eps] = float(whitened.var(0).max())
    leak = {
        "train": _mean_identity_error(ZCAWhitening(eps=1e-5).fit(train).transform(test)),
        "all": _mean_identity_error(ZCAWhitening(eps=1e-5).fit(torch.cat([train, test])).transform(test)),
    }
    panels = [
        (covariance, "train covariance"),
        (torch.cov(ZCAWhitening(eps=0.0).fit(train).transform(train).T), "ZCA-whitened train (eps 0)"),
        (torch.cov(ZCAWhitening(eps=1e-1).fit(train).transform(test).T), "ZCA-whitened test (eps 0.1)"),
    ]
    figure = image_panels(panels, vmin=-1, vmax=1)
    ctx.figure(figure, "covariances", "Covariance of the 61 varying digit pixels before and after whitening.")
    rows = [{"eps": eps, "largest whitened variance on test": value} for eps, value in test_variance.items()]
    return Findings(
        verdicts=judge_whitening(svd, divide_error, identity, test_variance, leak),
        tables=[
            Table.of("Noise amplification on the test split (PCA whitening fitted on train)", rows),
            Table.of(
                "Eigenvalues of the train covariance",
                [{"largest": norm, "smallest": float(eigenvalues[-1]), "condition number": condition}],
            ),
        ],
        numbers={"condition": condition, "pca_identity_error": identity["pca"], "divide_error": divide_error},
    )
