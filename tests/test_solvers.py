"""The three solvers against torch.linalg.solve on dense symmetric matrices."""

from __future__ import annotations

import pytest
import torch

from influence import CG, Exact, Identity
from influence.solvers import Matrix


def _spd(n: int = 40, cond: float = 100.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return (
        q
        @ torch.diag(
            torch.logspace(
                0, torch.log10(torch.tensor(cond)).item(), n, dtype=torch.float64
            )
        )
        @ q.T
    )


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_exact_with_damping():
    h = _spd()
    b = torch.randn(40, dtype=torch.float64)
    x, _ = Exact(damping=0.5).solve(Matrix(h), b)
    assert (
        _rel(x, torch.linalg.solve(h + 0.5 * torch.eye(40, dtype=torch.float64), b))
        <= 1e-12
    )


def test_exact_refuses_large_operators():
    with pytest.raises(ValueError, match="max_dim"):
        Exact(max_dim=10).solve(Matrix(_spd()), torch.ones(40, dtype=torch.float64))


@pytest.mark.parametrize("squared", [True, False])
def test_cg_solves_damped_system(squared):
    h = _spd()
    b = torch.randn(40, dtype=torch.float64)
    solver = CG(damping=0.1, iters=400, tol=1e-12, squared=squared)
    x, info = solver.solve(Matrix(h), b)
    eye = torch.eye(40, dtype=torch.float64)
    if squared:  # eq. 16: (H^2 + lambda I) x = H b
        expected = torch.linalg.solve(h @ h + 0.1 * eye, h @ b)
    else:
        expected = torch.linalg.solve(h + 0.1 * eye, b)
    assert _rel(x, expected) <= 1e-8
    assert info.converged and info.relative_residual <= 1e-12
    assert info.iterations <= 400
    # one product per iteration (two for H^2), H b for the squared right-hand side, and one final
    # application that recomputes the true residual
    per_apply = 2 if squared else 1
    expected = per_apply * (info.iterations + 1) + (1 if squared else 0)
    assert info.hessian_vector_products == expected


def test_cg_block_equals_columns():
    h = _spd()
    b = torch.randn(3, 40, dtype=torch.float64)
    block, _ = CG(iters=300, tol=1e-12).solve(Matrix(h), b)
    for i in range(3):
        assert _rel(block[i], CG(iters=300, tol=1e-12).solve(Matrix(h), b[i])[0]) <= 1e-9


def test_cg_warns_when_it_stops_short():
    solver = CG(iters=3, tol=1e-10)
    with pytest.warns(
        RuntimeWarning,
        match=r"stopped after 3 iterations at relative residual .* above tol",
    ):
        _, info = solver.solve(
            Matrix(_spd(cond=1e4)), torch.ones(40, dtype=torch.float64)
        )
    assert not info.converged and info.relative_residual > 1e-10


def test_identity_returns_b():
    b = torch.randn(2, 40, dtype=torch.float64)
    x, info = Identity().solve(Matrix(_spd()), b)
    assert torch.equal(x, b)
    assert info.iterations == 0 and info.hessian_vector_products == 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: CG(damping=-1.0), "damping"),
        (lambda: CG(iters=0), "iters"),
        (lambda: CG(tol=0.0), "tol"),
        (lambda: Exact(damping=float("nan")), "damping"),
        (lambda: Exact(max_dim=2.5), "max_dim"),
        (lambda: Exact(tol=-1.0), "tol"),
    ],
)
def test_bad_solver_settings(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_solver_types():
    with pytest.raises(TypeError, match="squared"):
        CG(squared="yes")
    with pytest.raises(TypeError, match="damping"):
        Exact(damping="small")


def test_bad_right_hand_side():
    with pytest.raises(ValueError, match="b: expected shape"):
        CG().solve(Matrix(_spd()), torch.ones(39, dtype=torch.float64))


def test_solvers_keep_no_state_between_calls():
    """Two solves with one solver object return their own reports and leave the solver as it was."""
    h = _spd()
    solver = CG(damping=0.1, iters=400, tol=1e-10)
    before = dict(vars(solver))
    x1, info1 = solver.solve(Matrix(h), torch.randn(40, dtype=torch.float64))
    _, info2 = solver.solve(Matrix(h), torch.zeros(40, dtype=torch.float64))
    assert vars(solver) == before
    assert info1.iterations > 0 and info2.iterations == 0 and info1 is not info2
    for s in (Exact(0.1), Identity()):
        before = dict(vars(s))
        s.solve(Matrix(h), torch.ones(40, dtype=torch.float64))
        assert vars(s) == before


# ---- the operator the damping is added to -------------------------------------------------


def _indefinite(n: int = 40, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q @ torch.diag(torch.linspace(-0.3, 5.0, n, dtype=torch.float64)) @ q.T


@pytest.mark.parametrize("damping", [0.0, 1e-2])
def test_exact_on_h2_is_eq16_solved_densely_and_what_cg_converges_to(damping):
    h = _indefinite()
    b = torch.randn(40, dtype=torch.float64)
    eye = torch.eye(40, dtype=torch.float64)
    x, info = Exact(damping, operator="H2").solve(Matrix(h), b)
    assert _rel(x, torch.linalg.solve(h @ h + damping * eye, h @ b)) <= 1e-10
    cg, _ = CG(damping, iters=400, tol=1e-12, operator="H2").solve(Matrix(h), b)
    assert _rel(cg, x) <= 1e-7
    assert info.operator == "H2" and info.damping == damping
    assert info.positive_definite and info.min_curvature is None  # H^2 of an invertible H


def test_operator_and_squared_are_synonyms_and_must_agree():
    assert CG(squared=True).operator == "H2" and CG(squared=False).operator == "H"
    assert CG().operator == "H2" and Exact().operator == "H"  # the defaults of each
    assert CG(operator="H").squared is False and Exact(squared=True).operator == "H2"
    assert Identity().operator == "I"
    with pytest.raises(ValueError, match="contradicts"):
        CG(operator="H", squared=True)
    with pytest.raises(ValueError, match="operator: expected 'H'"):
        Exact(operator="H^2")


def test_describe_names_damping_and_operator_for_a_results_file():
    assert CG(0.1, operator="H").describe() == {
        "solver": "CG(damping=0.1, iters=200, tol=1e-06, operator='H')",
        "damping": 0.1,
        "operator": "H",
    }
    assert Identity().describe()["operator"] == "I"


def test_an_indefinite_system_is_reported_not_hidden():
    """CG on H + lambda I and Exact on H both say so, in the warning and in SolveInfo."""
    h = _indefinite()
    b = torch.randn(40, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        _, info = Exact(0.0).solve(Matrix(h), b)
    assert info.positive_definite is False
    assert info.min_curvature == pytest.approx(-0.3, rel=1e-10)  # the smallest eigenvalue
    with pytest.warns(RuntimeWarning, match="not positive definite"):
        _, info = CG(0.0, iters=100, tol=1e-10, operator="H").solve(Matrix(h), b)
    assert info.positive_definite is False and info.min_curvature <= 0
    assert (
        info.min_curvature >= -0.3 - 1e-12
    )  # a Rayleigh quotient: never below the spectrum


def test_a_definite_solve_reports_its_curvature_bound():
    h = _spd()  # eigenvalues 1 to 100
    _, info = CG(0.0, iters=400, tol=1e-12, operator="H").solve(
        Matrix(h), torch.randn(40, dtype=torch.float64)
    )
    assert info.positive_definite and 1.0 - 1e-9 <= info.min_curvature <= 100.0
    _, info = Exact(0.0).solve(Matrix(h), torch.randn(40, dtype=torch.float64))
    assert info.positive_definite and info.converged and info.relative_residual < 1e-12
