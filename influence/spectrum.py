"""The spectrum of a Hessian too large to materialize: Lanczos with Hessian-vector products.

Damping filters curvature: eq. 16 with damping lambda replaces ``1/h`` by ``h / (h^2 + lambda)``,
which is close to ``1/h`` only where ``|h| >> sqrt(lambda)``, and plain damping replaces it by
``1 / (h + lambda)``, close only where ``h >> lambda``. To see which directions a damping
keeps, one needs the eigenvalues h; :func:`lanczos` estimates the extreme ones from ``k``
products, the way large-scale studies of neural-network Hessians do.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .solvers import Operator


def lanczos(
    operator: Operator,
    steps: int,
    *,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Ritz values of ``operator`` after ``steps`` Lanczos iterations, in ascending order (on the CPU, float64).

    The Lanczos vectors are handed to ``operator.matvec`` in ``dtype`` on ``device``; both default
    to the operator's own (``operator.dtype`` / ``operator.device`` where it has them, as
    :class:`~influence.autodiff.DataHessian` and ``influence.solvers.Matrix`` do), else
    float64 on the CPU. The recurrence itself is kept in float64 on the CPU: it is ``steps``
    vectors, and its orthogonality is what makes the Ritz values trustworthy.

    Full reorthogonalization keeps the basis orthonormal in floating point (``steps`` is small).
    The extreme Ritz values converge first: the largest and the most negative eigenvalues are
    well estimated long before the bulk is.
    """
    if not 1 <= steps <= operator.dim:
        raise ValueError(f"steps: expected 1 to {operator.dim}, got {steps}")
    dtype = dtype or getattr(operator, "dtype", torch.float64)
    device = device or getattr(operator, "device", "cpu")
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(operator.dim, generator=generator, dtype=torch.float64)
    basis = [q / q.norm()]
    alphas: list[float] = []
    betas: list[float] = []
    for j in range(steps):
        w = (
            operator.matvec(basis[j].to(device=device, dtype=dtype))
            .to(torch.float64)
            .cpu()
        )
        alphas.append(float(w @ basis[j]))
        for _ in range(2):  # twice is enough (Kahan): orthogonal to rounding level
            stacked = torch.stack(basis)
            w = w - stacked.T @ (stacked @ w)
        beta = float(w.norm())
        if j == steps - 1 or beta < 1e-12 * max(1.0, abs(alphas[-1])):
            break
        betas.append(beta)
        basis.append(w / beta)
    k = len(alphas)
    tridiagonal = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if k > 1:
        off = torch.tensor(betas[: k - 1], dtype=torch.float64)
        tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigvalsh(tridiagonal)
