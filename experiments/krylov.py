"""Every conjugate-gradient iterate of ``(H + lambda I) x = b``, for every damping, from one Lanczos run.

CG started from zero on ``(H + lambda I) x = b`` searches the Krylov space spanned by
``b, H b, H^2 b, ...``, and so does Lanczos started from ``b``. With the Lanczos basis ``Q_j``
and its tridiagonal ``T_j = Q_j^T H Q_j``, CG's j-th iterate is, in exact arithmetic,

    x_j = ||b|| Q_j (T_j + lambda I)^-1 e_1,

and its residual has the norm ``beta_j |e_j^T y_j|`` (``y_j`` the small solve above). The
damping only shifts ``T_j``, so j Hessian-vector products buy the whole path of the solve for
every damping at once: a chapter can show where a ratio settles along the iterations without
running the solve again for each checkpoint. The Ritz values (eigenvalues of ``T_j``) bound
the damping below which ``H + lambda I`` stops being positive definite on the space searched.

Full reorthogonalization keeps ``Q`` orthonormal in floating point, so the formulas hold to
rounding; :meth:`Krylov.true_residual` checks one iterate with one more product anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from influence.progress import progress
from influence.solvers import Operator


@dataclass
class Krylov:
    """The Lanczos basis of ``b`` under ``operator``, and what CG would do in it."""

    basis: Tensor  # [k, p], float64 on the CPU: orthonormal rows q_1 ... q_k
    alphas: Tensor  # [k]: the diagonal of T
    betas: Tensor  # [k]: betas[j] = ||the residual after step j+1||; the last one ends T
    b_norm: float

    @property
    def steps(self) -> int:
        return len(self.alphas)

    def tridiagonal(self, j: int | None = None) -> Tensor:
        """``T_j``, the operator seen from the first ``j`` Lanczos vectors (all by default)."""
        j = self.steps if j is None else self._check(j)
        t = torch.diag(self.alphas[:j])
        if j > 1:
            off = self.betas[: j - 1]
            t += torch.diag(off, 1) + torch.diag(off, -1)
        return t

    def ritz(self, j: int | None = None) -> Tensor:
        """The eigenvalues of ``T_j``, ascending: Lanczos's estimates of H's extreme ones."""
        return torch.linalg.eigvalsh(self.tridiagonal(j))

    def _small_solve(self, j: int, damping: float) -> Tensor:
        t = self.tridiagonal(j) + damping * torch.eye(j, dtype=torch.float64)
        e1 = torch.zeros(j, dtype=torch.float64)
        e1[0] = self.b_norm
        return torch.linalg.solve(t, e1)

    def iterate(self, j: int, damping: float) -> Tensor:
        """CG's j-th iterate on ``(H + damping I) x = b``, from zero: ``||b|| Q_j (T_j + damping)^-1 e_1``."""
        y = self._small_solve(self._check(j), damping)
        return y @ self.basis[:j]

    def relative_residual(self, j: int, damping: float) -> float:
        """``||b - (H + damping I) x_j|| / ||b||`` by the Lanczos relation, with no product."""
        y = self._small_solve(self._check(j), damping)
        return float(self.betas[j - 1] * y[-1].abs() / self.b_norm)

    def positive_definite(self, damping: float, j: int | None = None) -> bool:
        """Whether ``T_j + damping I`` is, as CG on ``H + damping I`` needs along its path."""
        return bool(self.ritz(j)[0] + damping > 0)

    def true_residual(self, operator: Operator, j: int, damping: float) -> float:
        """The residual of iterate j measured with one Hessian-vector product (a check)."""
        x = self.iterate(j, damping)
        like = self._like(operator)
        hx = operator.matvec(x.to(**like)).to(torch.float64).cpu()
        b = self.basis[0] * self.b_norm
        return float((b - hx - damping * x).norm() / self.b_norm)

    def _check(self, j: int) -> int:
        if not 1 <= j <= self.steps:
            raise ValueError(f"j: expected 1 to {self.steps} Lanczos steps, got {j}")
        return j

    @staticmethod
    def _like(operator: Operator) -> dict[str, object]:
        return {
            "dtype": getattr(operator, "dtype", torch.float64),
            "device": getattr(operator, "device", "cpu"),
        }


def krylov(
    operator: Operator, b: Tensor, steps: int, *, desc: str = "Lanczos"
) -> list[Krylov]:
    """Run ``steps`` Lanczos iterations of ``operator`` from each row of ``b`` (``[p]`` or ``[k, p]``).

    The k recurrences run in lockstep and share each step's product, a block ``[k, p]``
    (:func:`influence.autodiff.hvp` makes one forward and one first backward pass for it).
    The products are made in the operator's dtype and on its device; the recurrences and the
    bases are kept in float64 on the CPU, reorthogonalized twice a step. A recurrence whose
    Krylov space is exhausted (its start lies in an invariant subspace) stops there. Returns
    one :class:`Krylov` a row.
    """
    block = b.detach().to(torch.float64).cpu()
    block = block.unsqueeze(0) if block.dim() == 1 else block
    if block.dim() != 2 or block.shape[1] != operator.dim:
        raise ValueError(
            f"b: expected [{operator.dim}] or [k, {operator.dim}], got {tuple(b.shape)}"
        )
    if not 1 <= steps <= operator.dim:
        raise ValueError(f"steps: expected 1 to {operator.dim}, got {steps}")
    norms = block.norm(dim=1)
    if bool((norms == 0).any()):
        raise ValueError("b: the zero vector has no Krylov space")
    like = Krylov._like(operator)
    k = block.shape[0]
    basis = torch.zeros(k, steps, block.shape[1], dtype=torch.float64)
    basis[:, 0] = block / norms[:, None]
    alphas: list[list[float]] = [[] for _ in range(k)]
    betas: list[list[float]] = [[] for _ in range(k)]
    alive = [True] * k
    for j in progress(range(steps), desc=desc, total=steps):
        w_block = operator.matvec(basis[:, j].to(**like)).detach().to(torch.float64)
        w_block = w_block.cpu().reshape(k, -1)
        for i in range(k):
            if not alive[i]:
                continue
            w = w_block[i]
            alphas[i].append(float(w @ basis[i, j]))
            q = basis[i, : j + 1]
            for _ in range(2):  # twice is enough (Kahan): orthogonal to rounding level
                w = w - q.T @ (q @ w)
            beta = float(w.norm())
            betas[i].append(beta)
            if beta < 1e-12 * max(1.0, abs(alphas[i][-1])):
                alive[i] = False
            elif j + 1 < steps:
                basis[i, j + 1] = w / beta
        if not any(alive):
            break
    return [
        Krylov(
            basis[i, : len(alphas[i])].clone(),
            torch.tensor(alphas[i], dtype=torch.float64),
            torch.tensor(betas[i], dtype=torch.float64),
            float(norms[i]),
        )
        for i in range(k)
    ]
