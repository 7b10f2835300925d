"""Inverse-Hessian-vector products: ``x = H^-1 b`` for the two solves of Algorithm 1.

Three solvers share one small interface, :meth:`Solver.solve` ``(operator, b) -> x``:

- :class:`Exact` materializes the Hessian and solves densely (small models, teaching, tests);
- :class:`CG` runs conjugate gradients on ``H^2 + damping I`` (the paper's eq. 16) or on
  ``H + damping I``, touching H only through Hessian-vector products;
- :class:`Identity` replaces the inverse Hessian by the identity (the ablation of Fig. 3).

The damping is always added to a named operator, never an implied one: ``operator="H2"``
solves ``(H^2 + damping I) x = H b`` (eq. 16) and ``operator="H"`` solves ``(H + damping I) x = b``.
Both :class:`Exact` and :class:`CG` take either, so swapping one solver for the other never
silently changes the regularizer, and an exact solve of the squared system exists for tests.
The same damping means very different things on the two: on ``"H2"`` it filters eigenvalues
``|h| < sqrt(damping)``, on ``"H"`` those ``h < damping``.

``solve`` returns the solution with a :class:`SolveInfo` saying what it did, including whether
it met a system that is not positive definite; solvers keep no state between calls, so one
solver object may serve many solves, and many threads.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from . import checks
from .progress import progress


class Operator(Protocol):
    """A symmetric linear operator: :class:`influence.autodiff.DataHessian` is one."""

    @property
    def dim(self) -> int: ...

    def matvec(self, v: Tensor) -> Tensor: ...

    def to_dense(self) -> Tensor: ...


class Matrix:
    """A dense symmetric matrix as an :class:`Operator` (for teaching cells and tests)."""

    def __init__(self, matrix: Tensor) -> None:
        if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(
                f"matrix: expected a square matrix, got shape {tuple(matrix.shape)}"
            )
        self.matrix = matrix

    @property
    def dim(self) -> int:
        """The number of rows."""
        return self.matrix.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        """The matrix's dtype."""
        return self.matrix.dtype

    @property
    def device(self) -> torch.device:
        """The matrix's device."""
        return self.matrix.device

    def matvec(self, v: Tensor) -> Tensor:
        """``A v``, or ``A V`` for a block ``[k, p]``."""
        return v @ self.matrix.T

    def to_dense(self) -> Tensor:
        """The matrix itself."""
        return self.matrix


OPERATORS = ("H", "H2")


def _operator(operator: str | None, squared: bool | None, default: str) -> str:
    """The operator a solver's damping is added to, from ``operator=`` or its synonym ``squared=``."""
    if squared is not None:
        checks.flag(squared, "squared")
        implied = "H2" if squared else "H"
        if operator is not None and operator != implied:
            raise ValueError(
                f"operator={operator!r} contradicts squared={squared} (which means {implied!r}); give one of them"
            )
        return implied
    operator = default if operator is None else operator
    if operator not in OPERATORS:
        raise ValueError(
            f"operator: expected 'H' (H + damping I) or 'H2' (H^2 + damping I, eq. 16), got {operator!r}"
        )
    return operator


@dataclass(frozen=True)
class SolveInfo:
    """What a solve did.

    ``relative_residual`` is the true ``||rhs - A x|| / ||rhs||``, recomputed at the end, for the
    system A x = rhs the solver actually solved (for ``operator="H2"``: ``A = H^2 + damping I``,
    ``rhs = H b``), the worst over the columns of a block. ``None`` for :class:`Identity`, which
    solves nothing.

    ``positive_definite`` is False when the solve saw that A is not positive definite: CG met a
    search direction d with ``d^T A d <= 0``, or :class:`Exact`'s Cholesky factorization failed.
    ``min_curvature`` is the smallest curvature it saw: for CG the smallest Rayleigh quotient
    ``d^T A d / d^T d`` over its search directions (an upper bound on A's smallest eigenvalue);
    for Exact A's smallest eigenvalue, computed only when the Cholesky factorization failed
    (``None`` when it succeeded, which proves it positive). ``operator`` and ``damping`` say
    which system was solved, so a results file can record them.
    """

    solver: str
    iterations: int
    relative_residual: float | None
    converged: bool
    hessian_vector_products: int
    operator: str = "I"
    damping: float = 0.0
    positive_definite: bool | None = None
    min_curvature: float | None = None

    def as_dict(self) -> dict[str, object]:
        """Plain numbers and strings, for a results file."""
        return dict(self.__dict__)


def _check_rhs(operator: Operator, b: Tensor) -> None:
    if not isinstance(b, Tensor) or b.dim() not in (1, 2) or b.shape[-1] != operator.dim:
        shape = tuple(b.shape) if isinstance(b, Tensor) else type(b).__name__
        raise ValueError(
            f"b: expected shape [{operator.dim}] or [k, {operator.dim}], got {shape}"
        )


def _norms(v: Tensor) -> Tensor:
    return v.norm(dim=-1)


class Solver(ABC):
    """Solves ``H x = b`` for a symmetric operator H; ``b`` is ``[p]`` or a block ``[k, p]``.

    A solver holds only its settings (damping, the operator it is added to, iterations,
    tolerance); :meth:`solve` returns ``(x, info)`` and changes nothing on the solver.
    """

    damping: float = 0.0
    operator: str = "I"  # "H", "H2", or "I" for no Hessian at all (Identity)

    @property
    def squared(self) -> bool:
        """``operator == "H2"``: the synonym the solvers also accept as ``squared=``."""
        return self.operator == "H2"

    def describe(self) -> dict[str, object]:
        """``{"solver", "damping", "operator"}``: what a results file records for a stage."""
        return {"solver": repr(self), "damping": self.damping, "operator": self.operator}

    @abstractmethod
    def solve(self, operator: Operator, b: Tensor) -> tuple[Tensor, SolveInfo]: ...


class Exact(Solver):
    """Dense solve of ``(H + damping I) x = b`` (``operator="H"``, the default) or of
    ``(H^2 + damping I) x = H b`` (``operator="H2"``, eq. 16 solved exactly), with a
    materialized Hessian.

    It factors the system by Cholesky; where that fails the system is not positive definite,
    and it solves by LU instead, reports the smallest eigenvalue in
    :attr:`SolveInfo.min_curvature` and warns. For small models only: it refuses operators of
    more than ``max_dim`` parameters, since the Hessian costs ``max_dim^2`` numbers and
    ``max_dim`` Hessian-vector products. ``squared=`` is accepted as a synonym of ``operator``.
    """

    def __init__(
        self,
        damping: float = 0.0,
        max_dim: int = 5000,
        *,
        operator: str | None = None,
        squared: bool | None = None,
        tol: float = 1e-6,
    ) -> None:
        self.damping = checks.nonnegative(damping, "damping")
        self.max_dim = checks.positive_int(max_dim, "max_dim")
        self.operator = _operator(operator, squared, default="H")
        self.tol = checks.positive(tol, "tol")

    def __repr__(self) -> str:
        return f"Exact(damping={self.damping:g}, operator={self.operator!r})"

    def solve(self, operator: Operator, b: Tensor) -> tuple[Tensor, SolveInfo]:
        """``x = (H + damping I)^-1 b``, or ``(H^2 + damping I)^-1 H b``, by a dense solve."""
        _check_rhs(operator, b)
        if operator.dim > self.max_dim:
            raise ValueError(
                f"Exact: the Hessian has {operator.dim} rows, above max_dim={self.max_dim} "
                f"({operator.dim**2 * b.element_size() / 2**30:.1f} GiB dense); use CG instead"
            )
        h = operator.to_dense()
        eye = torch.eye(operator.dim, dtype=h.dtype, device=h.device)
        a = (h @ h if self.operator == "H2" else h) + self.damping * eye
        rhs = b @ h.T if self.operator == "H2" else b
        columns = rhs.unsqueeze(-1) if rhs.dim() == 1 else rhs.mT
        factor, failed = torch.linalg.cholesky_ex(a)
        positive_definite = not bool(failed)
        min_eigenvalue = None
        if positive_definite:
            x = torch.cholesky_solve(columns, factor)
        else:
            x = torch.linalg.solve(a, columns)
            min_eigenvalue = torch.linalg.eigvalsh(a)[0].item()
            warnings.warn(
                f"{self!r}: the system is not positive definite (smallest eigenvalue "
                f"{min_eigenvalue:.3g}); solved by LU, but the inverse it applies is indefinite. "
                f"Use operator='H2' (eq. 16) or a damping above {-min_eigenvalue:.3g}.",
                RuntimeWarning,
                stacklevel=2,
            )
        x = x.squeeze(-1) if rhs.dim() == 1 else x.mT
        residual = (
            (_norms(rhs - x @ a.T) / _norms(rhs).clamp_min(torch.finfo(rhs.dtype).tiny))
            .max()
            .item()
        )
        info = SolveInfo(
            repr(self),
            0,
            residual,
            residual <= self.tol,
            operator.dim,
            self.operator,
            self.damping,
            positive_definite,
            min_eigenvalue,
        )
        if not info.converged:
            warnings.warn(
                f"{self!r}: relative residual {residual:.3g} above tol={self.tol:g}: the "
                f"system is near singular in this precision",
                RuntimeWarning,
                stacklevel=2,
            )
        return x, info


class Identity(Solver):
    """``x = b``: every inverse Hessian replaced by the identity (the ablation of Fig. 3)."""

    def __repr__(self) -> str:
        return "Identity()"

    def solve(self, operator: Operator, b: Tensor) -> tuple[Tensor, SolveInfo]:
        """``x = b``: no Hessian-vector product at all."""
        _check_rhs(operator, b)
        return b.clone(), SolveInfo(repr(self), 0, None, True, 0, "I", 0.0)


class CG(Solver):
    """Conjugate gradients with Hessian-vector products.

    ``operator="H2"`` (the default; ``squared=True`` is a synonym) minimizes
    ``x^T (H^2 + damping I) x / 2 - b^T H x``, the paper's eq. 16. Its solution is
    ``(H^2 + damping I)^-1 H b``, which tends to ``H^-1 b`` as the damping goes to 0, and
    ``H^2`` is positive definite whenever H is invertible, even with negative eigenvalues.
    Each iteration costs two Hessian-vector products.

    ``operator="H"`` (``squared=False``) solves ``(H + damping I) x = b`` at one product per
    iteration; it is only sound when ``H + damping I`` is positive definite, and warns (and
    records it in ``SolveInfo.positive_definite``) when a search direction shows it is not.

    A block ``b`` of shape ``[k, p]`` is solved as k independent systems that share each
    batched Hessian-vector product. The solve stops when every column's relative residual is
    below ``tol``, or after ``iters`` iterations, and warns if ``tol`` was not reached.
    """

    def __init__(
        self,
        damping: float = 0.0,
        iters: int = 200,
        tol: float = 1e-6,
        squared: bool | None = None,
        *,
        operator: str | None = None,
    ) -> None:
        self.damping = checks.nonnegative(damping, "damping")
        self.iters = checks.positive_int(iters, "iters")
        self.tol = checks.positive(tol, "tol")
        self.operator = _operator(operator, squared, default="H2")

    def __repr__(self) -> str:
        return f"CG(damping={self.damping:g}, iters={self.iters}, tol={self.tol:g}, operator={self.operator!r})"

    def solve(self, operator: Operator, b: Tensor) -> tuple[Tensor, SolveInfo]:
        """Eq. 16 (``operator="H2"``): ``x = (H^2 + damping I)^-1 H b``; else ``(H + damping I)^-1 b``."""
        _check_rhs(operator, b)
        single = b.dim() == 1
        b = b.unsqueeze(0) if single else b
        products = 0

        def apply(v: Tensor) -> Tensor:
            nonlocal products
            if self.squared:
                products += 2
                return operator.matvec(operator.matvec(v)) + self.damping * v
            products += 1
            return operator.matvec(v) + self.damping * v

        if self.squared:
            rhs = operator.matvec(b)
            products += 1
        else:
            rhs = b
        x = torch.zeros_like(rhs)
        r = rhs.clone()
        d = r.clone()
        rr = (r * r).sum(-1)
        rhs_norm = _norms(rhs).clamp_min(torch.finfo(rhs.dtype).tiny)
        relative = rr.sqrt() / rhs_norm
        min_curvature = math.inf
        it = 0
        bar = progress(range(self.iters), desc="CG", total=self.iters)
        for it in bar:
            if bool((relative <= self.tol).all()):
                break
            active = relative > self.tol  # converged columns stay where they are
            ad = apply(d)
            curvature = (d * ad).sum(-1)
            dd = (d * d).sum(-1)
            rayleigh = torch.where(
                active & (dd > 0), curvature / torch.where(dd > 0, dd, 1), math.inf
            )
            min_curvature = min(min_curvature, rayleigh.min().item())
            step = torch.where(
                active & (curvature != 0),
                rr / torch.where(curvature == 0, 1, curvature),
                0,
            )
            x = x + step.unsqueeze(-1) * d
            r = r - step.unsqueeze(-1) * ad
            rr_new = (r * r).sum(-1)
            beta = torch.where(active & (rr > 0), rr_new / torch.where(rr > 0, rr, 1), 0)
            d = r + beta.unsqueeze(-1) * d
            rr = rr_new
            relative = rr.sqrt() / rhs_norm
            bar.set_postfix(residual=f"{relative.max().item():.1e}")
        else:
            it = self.iters
        bar.close()
        if it:  # the recurrence drifts from rhs - A x in rounding; report the true residual (one more product)
            relative = _norms(rhs - apply(x)) / rhs_norm
        worst = relative.max().item()
        converged = worst <= self.tol
        positive_definite = min_curvature > 0
        info = SolveInfo(
            repr(self),
            it,
            worst,
            converged,
            products,
            self.operator,
            self.damping,
            positive_definite,
            None if math.isinf(min_curvature) else min_curvature,
        )
        if not positive_definite:
            warnings.warn(
                f"{self!r}: the system is not positive definite (curvature "
                f"{min_curvature:.3g} along a search direction); its result is unreliable. "
                f"Use operator='H2', the paper's eq. 16, or a larger damping.",
                RuntimeWarning,
                stacklevel=2,
            )
        if not converged:
            warnings.warn(
                f"{self!r} stopped after {it} iterations at relative residual {worst:.3g}, "
                f"{worst / self.tol:.3g}x above tol={self.tol:g}",
                RuntimeWarning,
                stacklevel=2,
            )
        return (x.squeeze(0) if single else x), info
