"""Section 4.1's ladder: the proximal response is what damped scores linearize; spread removals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as nnf
from test_experiment import TINY, cache, tiny_data  # noqa: F401

from experiments import transfer as experiment
from experiments.ladder import Proximal, ProximalConfig, proximal_response, spread
from experiments.train import fit_lbfgs


def test_spread_takes_both_extremes_and_distinct_ranks():
    scores = torch.tensor([5.0, -3.0, 0.5, 9.0, 1.0, -7.0, 2.0])
    chosen = spread(scores, 4)
    assert chosen[0] == 5 and chosen[-1] == 3  # the smallest and the largest score
    assert len(set(chosen)) == 4
    assert scores[chosen].tolist() == sorted(scores[chosen].tolist())
    with pytest.raises(ValueError, match="k"):
        spread(scores, 2)


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


def test_proximal_response_agrees_with_the_damped_scores(tiny_data, cache):  # noqa: F811
    stored = experiment.run_validation(TINY.replace(removals=6), pairs=0)
    result = proximal_response(
        stored, ProximalConfig(removals=4, linearity=1, cg_iters=300)
    )
    assert result["agreement"]["n"] == 4
    assert result["agreement"]["pearson_r"] > 0.99
    predicted, measured = (
        torch.tensor(result["predicted"]),
        torch.tensor(result["measured"]),
    )
    assert torch.allclose(
        measured, predicted, rtol=0.05, atol=0.05 * predicted.abs().max()
    )
    # linear in eps: the derivative at eps / 2 is the one at eps
    assert result["measured_at_half_eps"][0] == pytest.approx(
        measured[0].item(), rel=0.02
    )
