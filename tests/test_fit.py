"""The optimizers of experiments.fit and the objectives they minimize."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as nnf

from experiments.fit import accelerate, batch_indices, fit_lbfgs, newton_polish
from experiments.objectives import Plain, Proximal
from experiments.warning_counts import counted_warnings


def _logistic_loss(v: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * torch.randn(40, generator=g, dtype=torch.float64) > 0).long()
    return nnf.cross_entropy(x @ v.view(3, 2), y) + 0.05 * (v**2).sum()


def _logistic() -> tuple[torch.nn.Parameter, Plain]:
    w = torch.nn.Parameter(torch.zeros(6, dtype=torch.float64))
    return w, Plain([w], lambda: _logistic_loss(w))


@pytest.mark.parametrize("keep", ["gradient", "value", None])
def test_newton_polish_reaches_rounding_level_whichever_steps_it_keeps(keep):
    w, objective = _logistic()
    fit_lbfgs(objective, tol=1e-4)
    assert newton_polish(objective, steps=10, keep=keep) < 1e-13


def test_newton_polish_as_a_chord_method_with_a_given_hessian():
    """The Hessian of a rough start, factored once and never refreshed: it still converges."""
    w, objective = _logistic()
    fit_lbfgs(objective, tol=1e-2)
    start = torch.autograd.functional.hessian(_logistic_loss, w.detach().clone())
    norm = newton_polish(
        objective, steps=40, tol=1e-12, hessian=lambda: start, refreshes=0, keep="value"
    )
    assert norm <= 1e-12


def test_newton_polish_refuses_a_dense_hessian_too_large():
    _, objective = _logistic()
    with pytest.raises(ValueError, match="max_dim"):
        newton_polish(objective, max_dim=5)


def test_proximal_anchor_is_stationary_in_either_summing_dtype():
    w, objective = _logistic()
    for dtype in (torch.float64, None):
        stage = Proximal.at([w], objective.value, 0.3, dtype=dtype)
        assert stage.gradient_norm() < 1e-12


def test_batch_indices_are_epochs_of_a_seeded_permutation():
    first = list(batch_indices(10, steps=5, batch_size=4, seed=3))
    again = list(batch_indices(10, steps=5, batch_size=4, seed=3))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert sorted(torch.cat(first[:2]).tolist()) == sorted(
        set(torch.cat(first[:2]).tolist())
    )
    assert [len(b) for b in first] == [4] * 5


def test_counted_warnings_count_the_expected_and_show_the_rest():
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with counted_warnings() as counts:
            warnings.warn("CG(...) stopped after 3 iterations", RuntimeWarning)
            warnings.warn("CG(...) stopped after 5 iterations", RuntimeWarning)
            warnings.warn("the G has gradient norm 0.1 at ...", RuntimeWarning)
            warnings.warn("H + damping I is not positive definite", RuntimeWarning)
    assert counts["CG stopped short"] == 2 and counts["not stationary"] == 1
    assert [str(w.message) for w in shown] == ["H + damping I is not positive definite"]


def test_proximal_response_derivative_is_the_damped_inverse_hessian():
    """d phi / d eps = -(H + lambda I)^-1 grad g(z), by central differences, on a logistic model."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, generator=g, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * torch.randn(40, generator=g, dtype=torch.float64) > 0).long()
    z = torch.randn(1, 3, generator=g, dtype=torch.float64), torch.tensor([1])
    # anywhere, not at the minimum: the linear term makes the anchor stationary
    w = torch.nn.Parameter(torch.randn(3, 2, generator=g, dtype=torch.float64))
    base = lambda: nnf.cross_entropy(x @ w, y)  # noqa: E731
    damping = 0.3
    stage = Proximal.at([w], base, damping)
    assert stage.gradient_norm() < 1e-12  # the anchor is stationary at eps = 0
    extra = lambda: nnf.cross_entropy(z[0] @ w, z[1], reduction="sum")  # noqa: E731

    def moved(eps: float) -> torch.Tensor:
        problem = Proximal(
            [w], base, damping, stage.anchor, stage.slope, extra=extra, eps=eps
        )
        fit_lbfgs(problem, tol=1e-13)
        newton_polish(
            problem
        )  # float64 L-BFGS can stall near 1e-9; Newton goes to rounding
        out = w.detach().clone().reshape(-1)
        with torch.no_grad():
            w.copy_(stage.anchor[0])
        return out

    eps = 1e-3
    measured = (moved(eps) - moved(-eps)) / (2 * eps)
    flat = lambda v: nnf.cross_entropy(x @ v.view(3, 2), y)  # noqa: E731
    hessian = torch.autograd.functional.hessian(flat, stage.anchor[0].reshape(-1))
    grad_g = torch.autograd.grad(extra(), w)[0].reshape(-1)
    predicted = -torch.linalg.solve(hessian + damping * torch.eye(6), grad_g)
    assert torch.allclose(measured, predicted, rtol=1e-5, atol=1e-8)


def test_accelerate_restarts_momentum_that_the_curvature_estimate_made_too_large():
    """Told a smallest curvature 1e4 times too small, its momentum is ~0.9999; restarting it
    where the gradient opposes the last move still reaches the minimizer in 400 steps."""
    curvatures = torch.tensor([1.0, 1e-3], dtype=torch.float64)
    x = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    base = lambda: 0.5 * (curvatures * x**2).sum()  # noqa: E731
    problem = dataclasses.replace(
        Proximal.at([x], base, 0.0), extra=lambda: x.sum(), eps=1.0
    )
    norm = accelerate(problem, step=1.0, strong=1e-7, tol=1e-10, max_iter=400)
    assert norm < 1e-6
    assert torch.allclose(x.detach(), -1 / curvatures, rtol=1e-5)
