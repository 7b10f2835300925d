"""Lanczos (influence.spectrum) against the known spectrum of a dense symmetric matrix."""

from __future__ import annotations

import pytest
import torch

from influence.solvers import Matrix
from influence.spectrum import lanczos


def _known(n: int = 60) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eigenvalues = torch.cat(
        [torch.tensor([-0.5, 7.0]), torch.linspace(0.01, 1.0, n - 2)]
    ).double()
    return q @ torch.diag(eigenvalues) @ q.T, eigenvalues


def test_lanczos_finds_the_extreme_eigenvalues():
    h, eigenvalues = _known()
    ritz = lanczos(Matrix(h), 30)
    assert ritz[0].item() == pytest.approx(-0.5, rel=1e-6)
    assert ritz[-1].item() == pytest.approx(7.0, rel=1e-8)
    full = lanczos(Matrix(h), 60)  # k = n: every eigenvalue
    assert torch.allclose(full, eigenvalues.sort().values, rtol=1e-8, atol=1e-10)


class _Recording(Matrix):
    """A Matrix that remembers the dtype and device of the vectors it was handed."""

    seen: set

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.seen.add((v.dtype, v.device.type))
        return super().matvec(v)


def test_lanczos_hands_the_operator_its_own_dtype_and_device():
    h, _ = _known()
    op = _Recording(h.float())
    op.seen = set()
    ritz = lanczos(op, 30)
    assert op.seen == {(torch.float32, "cpu")}
    assert ritz.dtype == torch.float64 and ritz.device.type == "cpu"
    assert ritz[-1].item() == pytest.approx(7.0, rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_lanczos_on_cuda_matches_the_cpu():
    h, _ = _known()
    op = _Recording(h.cuda())
    op.seen = set()
    assert op.seen == set() and torch.allclose(lanczos(op, 30), lanczos(Matrix(h), 30))
    assert op.seen == {(torch.float64, "cuda")}


def test_lanczos_rejects_a_bad_step_count():
    with pytest.raises(ValueError, match="steps"):
        lanczos(Matrix(torch.eye(3, dtype=torch.float64)), 4)
