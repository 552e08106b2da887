"""Our optimizers against torch.optim over 100 steps, L-BFGS on Rosenbrock, and the two-loop recursion
against the explicit BFGS inverse-Hessian update.

Tolerances: our SGD, Adagrad, RMSprop, Adam and AdamW apply the same torch operations in the same order as
torch.optim's single-tensor implementations (the default on CPU), so every step is bit-identical; the
two-loop recursion is compared with the exact (rational) BFGS product within a running error bound of its
float64 operations; the L-BFGS minima are certified through the gradient (a quadratic's distance to its
minimizer is at most ‖∇f‖/λ_min). Rosenbrock convergence stays a behaviour check (margin noted there).
"""

from __future__ import annotations

import copy
import io
from fractions import Fraction

import pytest
import torch
from torch import nn

from tolerances import assert_fraction_within, gamma, lapack_backward_error, unit_roundoff
from visionkit.engine import optim as ours
from visionkit.engine.optim.line_search import LinePoint, armijo_backtracking, strong_wolfe

CASES = [
    ("SGD", {"lr": 0.05}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3, "weight_decay": 1e-2}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
    ("Adagrad", {"lr": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "initial_accumulator_value": 0.1, "weight_decay": 1e-2}),
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5, "centered": True, "weight_decay": 1e-2}),
    ("Adam", {"lr": 0.01}),
    ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 1e-2, "amsgrad": True}),
    ("AdamW", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


def _batches(count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator))
        for _ in range(count)
    ]


def _groups(model: nn.Module, name: str) -> list[dict]:
    # per-parameter-group options: the first layer has its own learning rate (and momentum for SGD)
    first = {"params": list(model[0].parameters()), "lr": 0.02}
    if name == "SGD":
        first["momentum"] = 0.5
    return [first, {"params": [p for layer in model[1:] for p in layer.parameters()]}]


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, batches) -> None:
    for inputs, targets in batches:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()


@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_equals_torch_over_100_steps(name: str, options: dict) -> None:
    model_ours, model_torch = _model(), _model()
    optimizer_ours = getattr(ours, name)(_groups(model_ours, name), **options)
    optimizer_torch = getattr(torch.optim, name)(_groups(model_torch, name), **options)
    for step, batch in enumerate(_batches(100)):
        _train(model_ours, optimizer_ours, [batch])
        _train(model_torch, optimizer_torch, [batch])
        for a, b in zip(model_ours.parameters(), model_torch.parameters(), strict=True):
            assert torch.equal(a, b), f"step {step}"  # the same operations on the same values
    moved = max(
        float((a - b).detach().abs().max())
        for a, b in zip(model_ours.parameters(), _model().parameters(), strict=True)
    )
    assert moved > 1e-2  # the comparison is meaningful: the weights did change


@pytest.mark.parametrize(("name", "options"), CASES[1::2], ids=[n for n, _ in CASES[1::2]])
def test_state_dict_round_trip_continues_identically(name: str, options: dict) -> None:
    batches = _batches(40)
    reference = _model()
    optimizer = getattr(ours, name)(_groups(reference, name), **options)
    _train(reference, optimizer, batches)

    first = _model()
    optimizer = getattr(ours, name)(_groups(first, name), **options)
    _train(first, optimizer, batches[:20])
    buffer = io.BytesIO()
    torch.save({"model": first.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = _model()
    resumed.load_state_dict(saved["model"])
    optimizer = getattr(ours, name)(_groups(resumed, name), **options)
    optimizer.load_state_dict(saved["optimizer"])
    assert optimizer.param_groups[0]["lr"] == 0.02  # group options survive
    _train(resumed, optimizer, batches[20:])
    for a, b in zip(reference.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_sgd_descends_unlike_the_handbook_snippet() -> None:
    # §26's snippet does x += lr * dx (gradient ascent); the algorithm moves against the gradient.
    x = nn.Parameter(torch.tensor([3.0]))
    optimizer = ours.SGD([x], lr=0.1, momentum=0.9)
    losses = []
    for _ in range(50):
        optimizer.zero_grad()
        loss = (x**2).sum()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-2 * losses[0]  # behaviour: 0.0035 (the same on every kernel); ascent grows


def test_adam_first_step_is_bias_corrected() -> None:
    # t starts at 1: m_hat = g, v_hat = g^2, the first step is lr * g / (|g| + eps) — finite, size ~lr.
    x = nn.Parameter(torch.tensor([5.0, -0.001], dtype=torch.float64))
    optimizer = ours.Adam([x], lr=0.1, eps=0.0)
    x.grad = torch.tensor([4.0, -2e-3], dtype=torch.float64)
    optimizer.step()
    # exactly x − lr·sign(g) (lr the float 0.1). Rounded: m = fl(w·g) (w = fl(1 − β₁), the same float as
    # the bias correction), v = fl(fl(w₂·g)·g), step size lr/w, √v, √bc₂ (pow: 1 ulp = 2 roundings), the
    # division and the addcdiv's quotient and product: the update is lr·sign(g)·(1 + θ₁₀), and the final
    # subtraction rounds once more: γ(10)·lr + u·|x'|
    lr = Fraction(0.1)
    for value, start, sign in zip(x.detach().tolist(), (5.0, -0.001), (1, -1), strict=True):
        exact = Fraction(start) - sign * lr
        bound = (
            Fraction(gamma(10, torch.float64)) * lr + Fraction(unit_roundoff(torch.float64)) * abs(exact) * 2
        )
        assert_fraction_within(value, exact, bound)


@pytest.mark.parametrize(
    ("factory", "argument"),
    [
        (lambda p: ours.SGD(p, lr=-1.0), "lr"),
        (lambda p: ours.SGD(p, lr=0.1, momentum=-0.1), "momentum"),
        (lambda p: ours.SGD(p, lr=0.1, nesterov=True), "nesterov"),
        (lambda p: ours.Adam(p, betas=(1.0, 0.9)), "betas[0]"),
        (lambda p: ours.RMSprop(p, eps=-1.0), "eps"),
        (lambda p: ours.Adagrad(p, lr_decay=float("nan")), "lr_decay"),
        (lambda p: ours.LBFGS(p, line_search="wolfe"), "line_search"),
    ],
)
def test_bad_options_name_the_argument(factory, argument: str) -> None:
    with pytest.raises(ValueError, match=argument.replace("[", r"\[").replace("]", r"\]")):
        factory([nn.Parameter(torch.zeros(2))])


def _rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


@pytest.mark.parametrize("line_search", ["strong_wolfe", "armijo"])
def test_lbfgs_reaches_rosenbrock_minimum(line_search: str) -> None:
    x = nn.Parameter(torch.tensor([-1.5, 2.0], dtype=torch.float64))
    optimizer = ours.LBFGS(
        [x], max_iter=100, tolerance_grad=1e-10, tolerance_change=1e-14, line_search=line_search
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _rosenbrock(x)
        loss.backward()
        return loss

    for _ in range(5):
        optimizer.step(closure)
    # behaviour check (convergence): 3e-9 (strong Wolfe) and 8e-9 (Armijo) from (1, 1), the same under
    # ATEN_CPU_CAPABILITY=default/avx2/native
    assert torch.allclose(x.detach(), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-6)


def test_lbfgs_matches_torch_minimum_and_round_trips() -> None:
    torch.manual_seed(0)
    a = torch.randn(20, 5, dtype=torch.float64)
    b = torch.randn(20, dtype=torch.float64)
    solution = torch.linalg.lstsq(a, b.unsqueeze(1)).solution.squeeze(1)

    def fit(optimizer_class, **options):
        w = nn.Parameter(torch.zeros(5, dtype=torch.float64))
        optimizer = optimizer_class([w], max_iter=50, tolerance_grad=1e-12, tolerance_change=1e-15, **options)

        def closure():
            optimizer.zero_grad()
            loss = ((a @ w - b) ** 2).mean()
            loss.backward()
            return loss

        optimizer.step(closure)
        return w, optimizer, closure

    w_ours, optimizer, _ = fit(ours.LBFGS, line_search="strong_wolfe")
    w_torch, _, _ = fit(torch.optim.LBFGS, line_search_fn="strong_wolfe")
    # f(w) = ‖Aw − b‖²/m has the constant Hessian H = 2AᵀA/m, so ‖w − w*‖ ≤ ‖∇f(w)‖/λ_min(H) exactly
    distance_ours = _certified_distance(a, b, w_ours.detach())
    distance_torch = _certified_distance(a, b, w_torch.detach())
    assert float((w_ours.detach() - w_torch.detach()).norm()) <= distance_ours + distance_torch
    # behaviour: both converged (certified ~1e-9 from the exact minimizer; lstsq's solution agrees)
    assert distance_ours <= 1e-6 and distance_torch <= 1e-6
    assert float((w_ours.detach() - solution).norm()) <= distance_ours + _certified_distance(a, b, solution)
    state = optimizer.state_dict()
    restored = ours.LBFGS([nn.Parameter(w_ours.detach().clone())], max_iter=50)
    restored.load_state_dict(copy.deepcopy(state))
    saved = optimizer.state[w_ours]
    loaded = next(iter(restored.state.values()))
    assert len(loaded["steps"]) == len(saved["steps"]) > 0
    assert all(torch.equal(p, q) for p, q in zip(loaded["steps"], saved["steps"], strict=True))


def test_lbfgs_rejects_missing_closure_and_two_groups() -> None:
    w = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="closure"):
        ours.LBFGS([w]).step(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one parameter group"):
        ours.LBFGS([{"params": [w]}, {"params": [nn.Parameter(torch.zeros(1))]}])


def _certified_distance(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> float:
    """Upper bound of ‖w − w*‖ for the least-squares minimizer w* of ‖Aw − b‖²/m (float64 data).

    ∇f = 2Aᵀ(Aw − b)/m computed in float64 is within γ(n + m + 2)·2|A|ᵀ(|A||w| + |b|)/m of the exact one
    (the residual's dot products and subtraction, then the m-term sums); λ_min(H) of H = 2AᵀA/m from
    eigvalsh, lowered by LAPACK's backward error and the rounding of H (Weyl).
    """
    m, n = a.shape
    gradient = 2 * a.T @ (a @ w - b) / m
    rounding = gamma(n + m + 2, torch.float64) * 2 * a.abs().T @ (a.abs() @ w.abs() + b.abs()) / m
    hessian = 2 * a.T @ a / m
    hessian_error = gamma(m + 2, torch.float64) * float((2 * a.abs().T @ a.abs() / m).norm())
    eigenvalues = torch.linalg.eigvalsh(hessian)
    spread = lapack_backward_error(n, n, torch.float64) * float(eigenvalues.abs().max()) + hessian_error
    lambda_min = float(eigenvalues.min()) - spread
    assert lambda_min > 0
    return (
        (float(gradient.norm()) + float(rounding.norm()))
        / lambda_min
        * (1 + 4 * unit_roundoff(torch.float64))
    )


def test_two_loop_recursion_equals_explicit_bfgs_inverse_hessian() -> None:
    # Reference: H_{k+1} = (I - rho s y^T) H_k (I - rho y s^T) + rho s s^T, from H_0 = gamma I.
    torch.manual_seed(3)
    n = 6
    spd = torch.randn(n, n, dtype=torch.float64)
    spd = spd @ spd.T + n * torch.eye(n, dtype=torch.float64)
    steps = [torch.randn(n, dtype=torch.float64) for _ in range(4)]
    changes = [spd @ s for s in steps]  # y = A s: curvature pairs of a quadratic, y^T s > 0
    gamma = float(steps[-1] @ changes[-1] / (changes[-1] @ changes[-1]))
    inverse_hessian = gamma * torch.eye(n, dtype=torch.float64)
    identity = torch.eye(n, dtype=torch.float64)
    for s, y in zip(steps, changes, strict=True):
        rho = 1.0 / float(y @ s)
        inverse_hessian = (identity - rho * torch.outer(s, y)) @ inverse_hessian @ (
            identity - rho * torch.outer(y, s)
        ) + rho * torch.outer(s, s)
    grad = torch.randn(n, dtype=torch.float64)
    direction = ours.two_loop_recursion(grad, steps, changes, gamma)
    # reference: the explicit update in exact rational arithmetic on the same float inputs (the float64
    # product above is for the reader; its own rounding is not bounded here)
    del inverse_hessian
    exact, bound = (
        _exact_bfgs_direction(grad, steps, changes, gamma),
        _two_loop_bound(grad, steps, changes, gamma),
    )
    for value, reference, limit in zip(direction.tolist(), exact, bound, strict=True):
        assert_fraction_within(value, reference, limit)


def _exact_bfgs_direction(grad, steps, changes, gamma_0: float) -> list[Fraction]:
    """−H_k g with H_(k+1) = (I − ρ s yᵀ) H_k (I − ρ y sᵀ) + ρ s sᵀ, H_0 = γI, in exact rationals; also
    checks that the exact two-loop recursion gives the same vector (the identity the method rests on)."""
    g = [Fraction(v) for v in grad.tolist()]
    pairs = [
        ([Fraction(v) for v in s.tolist()], [Fraction(v) for v in y.tolist()])
        for s, y in zip(steps, changes, strict=True)
    ]
    n = len(g)
    h = [[Fraction(gamma_0) if i == j else Fraction(0) for j in range(n)] for i in range(n)]
    for s, y in pairs:
        rho = 1 / sum(a * b for a, b in zip(y, s, strict=True))
        left = [[(i == j) - rho * s[i] * y[j] for j in range(n)] for i in range(n)]
        h = _matmul(_matmul(left, h), [list(row) for row in zip(*left, strict=True)])
        h = [[h[i][j] + rho * s[i] * s[j] for j in range(n)] for i in range(n)]
    direction = [-sum(h[i][j] * g[j] for j in range(n)) for i in range(n)]
    q, alphas = list(g), []
    for s, y in reversed(pairs):
        rho = 1 / sum(a * b for a, b in zip(y, s, strict=True))
        alphas.insert(0, rho * sum(a * b for a, b in zip(s, q, strict=True)))
        q = [a - alphas[0] * b for a, b in zip(q, y, strict=True)]
    r = [Fraction(gamma_0) * v for v in q]
    for (s, y), alpha in zip(pairs, alphas, strict=True):
        rho = 1 / sum(a * b for a, b in zip(y, s, strict=True))
        beta = rho * sum(a * b for a, b in zip(y, r, strict=True))
        r = [a + (alpha - beta) * b for a, b in zip(r, s, strict=True)]
    assert [-v for v in r] == direction
    return direction


def _matmul(a: list[list[Fraction]], b: list[list[Fraction]]) -> list[list[Fraction]]:
    return [[sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))] for i in range(len(a))]


def _two_loop_bound(grad, steps, changes, gamma_0: float) -> list[float]:
    """Running error bound (Higham §3.3) of two_loop_recursion's float64 operations, per component.

    Each computed quantity x̂ carries E with |x̂ − x| ≤ E against the exact recursion: dot products of n
    terms γ(n)·Σ|a||b|; ρ̂ = fl(1/ŷᵀs) within E_d/(|d̂|(|d̂| − E_d)) + u|ρ̂|; a product of Python floats
    |ρ̂t̂ − ρt| ≤ |ρ̂ − ρ||t̂| + (|ρ̂| + E_ρ)|t̂ − t| + u|result|; an in-place ``add_(v, alpha=c)`` two
    roundings γ₂(|x̂| + |c||v|) on top of the propagated errors.
    """
    n, u, g2 = grad.numel(), unit_roundoff(torch.float64), gamma(2, torch.float64)
    gn = gamma(n, torch.float64)
    rhos, rho_errors = [], []
    for s, y in zip(steps, changes, strict=True):
        d = float(y.dot(s))
        error_d = gn * float((y.abs() * s.abs()).sum())
        rho = 1.0 / d
        rhos.append(rho)
        rho_errors.append(error_d / (abs(d) * (abs(d) - error_d)) + u * abs(rho))

    def coefficient(
        i: int, vector: torch.Tensor, value: torch.Tensor, error: torch.Tensor
    ) -> tuple[float, float]:
        t = float(vector.dot(value))
        error_t = float(vector.abs() @ error) + gn * float(vector.abs() @ value.abs())
        c = rhos[i] * t
        return c, rho_errors[i] * abs(t) + (abs(rhos[i]) + rho_errors[i]) * error_t + u * abs(c)

    q, error_q = grad.clone(), torch.zeros(n, dtype=torch.float64)
    alphas, alpha_errors = [0.0] * len(steps), [0.0] * len(steps)
    for i in reversed(range(len(steps))):
        alphas[i], alpha_errors[i] = coefficient(i, steps[i], q, error_q)
        error_q = (
            error_q + alpha_errors[i] * changes[i].abs() + g2 * (q.abs() + abs(alphas[i]) * changes[i].abs())
        )
        q = q.add(changes[i], alpha=-alphas[i])
    r = q.mul(gamma_0)
    error_r = abs(gamma_0) * error_q + u * r.abs()
    for i in range(len(steps)):
        beta, error_beta = coefficient(i, changes[i], r, error_r)
        c = alphas[i] - beta
        error_c = alpha_errors[i] + error_beta + u * abs(c)
        error_r = error_r + error_c * steps[i].abs() + g2 * (r.abs() + abs(c) * steps[i].abs())
        r = r.add(steps[i], alpha=c)
    return error_r.tolist()


def _line_problem():
    x0 = torch.tensor([-1.2, 1.0], dtype=torch.float64)

    def evaluate(step: float, direction: torch.Tensor):
        x = (x0 + step * direction).requires_grad_(True)
        loss = _rosenbrock(x)
        (grad,) = torch.autograd.grad(loss, x)
        return float(loss.detach()), grad

    x = x0.clone().requires_grad_(True)
    loss = _rosenbrock(x)
    (grad,) = torch.autograd.grad(loss, x)
    direction = -grad
    start = LinePoint(0.0, float(loss.detach()), grad, float(grad @ direction))
    return (lambda t: evaluate(t, direction)), direction, start


@pytest.mark.parametrize("first_step", [1e-4, 1e-3, 1.0])
def test_strong_wolfe_point_satisfies_both_conditions(first_step: float) -> None:
    evaluate, direction, start = _line_problem()
    point, used = strong_wolfe(evaluate, direction, start, first_step, c1=1e-4, c2=0.9)
    assert used >= 1 and point.step > 0
    assert point.loss <= start.loss + 1e-4 * point.step * start.slope
    assert abs(point.slope) <= 0.9 * abs(start.slope)


def test_armijo_point_decreases_sufficiently() -> None:
    evaluate, direction, start = _line_problem()
    point, _ = armijo_backtracking(evaluate, direction, start, 1.0)
    assert 0 < point.step < 1.0
    assert point.loss <= start.loss + 1e-4 * point.step * start.slope
