"""Our optimizers against torch.optim over 100 steps, L-BFGS on Rosenbrock, and the two-loop recursion
against the explicit BFGS inverse-Hessian update."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

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
    batches = _batches(100)
    worst = 0.0
    for batch in batches:
        _train(model_ours, optimizer_ours, [batch])
        _train(model_torch, optimizer_torch, [batch])
        for a, b in zip(model_ours.parameters(), model_torch.parameters(), strict=True):
            worst = max(worst, float((a - b).detach().abs().max()))
    assert worst <= 1e-6
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
    assert losses[-1] < 1e-2 * losses[0]


def test_adam_first_step_is_bias_corrected() -> None:
    # t starts at 1: m_hat = g, v_hat = g^2, the first step is lr * g / (|g| + eps) — finite, size ~lr.
    x = nn.Parameter(torch.tensor([5.0, -0.001], dtype=torch.float64))
    optimizer = ours.Adam([x], lr=0.1, eps=0.0)
    x.grad = torch.tensor([4.0, -2e-3], dtype=torch.float64)
    optimizer.step()
    assert torch.allclose(x.detach(), torch.tensor([4.9, 0.099], dtype=torch.float64), atol=1e-12)


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
    assert torch.allclose(x.detach(), torch.ones(2, dtype=torch.float64), atol=1e-6)


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
    assert torch.allclose(w_ours.detach(), solution, atol=1e-6)
    assert torch.allclose(w_ours.detach(), w_torch.detach(), atol=1e-6)
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
    assert torch.allclose(direction, -inverse_hessian @ grad, atol=1e-12)


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
