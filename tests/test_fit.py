"""The optimizers of experiments.fit and the objectives they minimize."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as nnf

from experiments.fit import batch_indices, fit_lbfgs, newton_polish
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
