"""experiments.krylov: one Lanczos run gives CG's iterates and residuals for every damping."""

import warnings

import pytest
import torch

from experiments.krylov import krylov
from influence import CG
from influence.solvers import Matrix


def _matrix(n: int = 30, negative: int = 0, seed: int = 0) -> Matrix:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.logspace(-2, 2, n, dtype=torch.float64)
    eig[:negative] = -eig[:negative] * 0.01  # a few small negative eigenvalues
    return Matrix(q @ torch.diag(eig) @ q.T)


# Past about 15 iterations on this condition number (1e4) CG itself drifts from its exact
# iterates in rounding; the full-space solve is checked against a dense solve below.
@pytest.mark.parametrize("j", [1, 4, 12])
@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_iterates_are_the_library_cg_iterates(j: int, damping: float) -> None:
    h = _matrix()
    b = torch.randn(
        h.dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64
    )
    (k,) = krylov(h, b, h.dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CG warns that j iterations stop short of tol
        x, info = CG(damping, iters=j, tol=1e-300, operator="H").solve(h, b)
    assert torch.allclose(k.iterate(j, damping), x, rtol=1e-7, atol=1e-9 * x.norm())
    assert k.relative_residual(j, damping) == pytest.approx(
        info.relative_residual, rel=1e-5, abs=1e-12
    )


def test_residual_formula_matches_a_product_and_full_space_solves_exactly() -> None:
    h = _matrix()
    b = torch.randn(
        h.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )
    (k,) = krylov(h, b, h.dim)
    for j in (3, 10, 20):
        assert k.true_residual(h, j, 0.05) == pytest.approx(
            k.relative_residual(j, 0.05), rel=1e-6
        )
    exact = torch.linalg.solve(
        h.to_dense() + 0.05 * torch.eye(h.dim, dtype=torch.float64), b
    )
    assert torch.allclose(k.iterate(h.dim, 0.05), exact, rtol=1e-8)


def test_ritz_values_bracket_the_spectrum_and_flag_indefiniteness() -> None:
    h = _matrix(negative=3)
    b = torch.randn(
        h.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    (k,) = krylov(h, b, h.dim)
    eig = torch.linalg.eigvalsh(h.to_dense())
    assert torch.allclose(k.ritz(), eig, rtol=1e-8, atol=1e-10)
    assert not k.positive_definite(0.0)
    assert k.positive_definite(float(-eig[0]) * 1.01)
    assert (
        k.ritz(5)[0] >= eig[0] - 1e-12
    )  # Ritz values interlace: never below the smallest


def test_bad_input_is_refused() -> None:
    h = _matrix()
    with pytest.raises(ValueError, match="b:"):
        krylov(h, torch.zeros(h.dim, dtype=torch.float64), 3)
    with pytest.raises(ValueError, match="b:"):
        krylov(h, torch.ones(h.dim + 1, dtype=torch.float64), 3)
    (k,) = krylov(h, torch.ones(h.dim, dtype=torch.float64), 3)
    with pytest.raises(ValueError, match="j:"):
        k.iterate(4, 0.0)


def test_a_block_runs_each_recurrence_as_alone() -> None:
    h = _matrix()
    g = torch.Generator().manual_seed(5)
    b = torch.randn(3, h.dim, generator=g, dtype=torch.float64)
    together = krylov(h, b, 12)
    for row, k in zip(b, together):
        (alone,) = krylov(h, row, 12)
        assert torch.allclose(k.iterate(12, 0.2), alone.iterate(12, 0.2), rtol=1e-10)
        assert k.b_norm == pytest.approx(float(row.norm()))
