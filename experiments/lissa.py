"""LiSSA (Agarwal, Bullins and Hazan 2017), the inverse-Hessian solver Koh and Liang (2017) used,
as a :class:`~influence.Solver`, so that it stands beside CG and Exact in one comparison.

The recursion ``x_j = b + (I - (H + damping I) / scale) x_{j-1}``, ``x_0 = b``, is a truncated
Neumann series: ``x_j / scale -> (H + damping I)^-1 b`` when every eigenvalue of
``(H + damping I) / scale`` lies in (0, 2). The error shrinks by ``1 - lambda_min / scale`` per
step, so a Hessian with condition number kappa needs about ``kappa * ln(1/tol)`` steps, where CG
needs about ``sqrt(kappa) * ln(2/tol)``. Koh and Liang estimate each product on a minibatch; here
every product is the full-data one, so the comparison with CG is about the recursion, not about
sampling noise.
"""

from __future__ import annotations

import torch
from torch import Tensor

from influence.solvers import Operator, SolveInfo, Solver


class LiSSA(Solver):
    """``(H + damping I)^-1 b`` by ``depth`` steps of the LiSSA recursion (operator ``"H"``).

    ``scale`` must exceed the largest eigenvalue of ``H + damping I`` (the recursion diverges
    otherwise); :meth:`solve` checks that the iterates stay bounded and raises if they do not.
    """

    def __init__(
        self, damping: float = 0.0, depth: int = 1000, scale: float = 10.0
    ) -> None:
        if damping < 0:
            raise ValueError(f"damping: expected >= 0, got {damping}")
        if depth < 1:
            raise ValueError(f"depth: expected a positive integer, got {depth}")
        if scale <= 0:
            raise ValueError(f"scale: expected > 0, got {scale}")
        self.damping, self.depth, self.scale = float(damping), int(depth), float(scale)
        self.operator = "H"

    def __repr__(self) -> str:
        return (
            f"LiSSA(damping={self.damping:g}, depth={self.depth}, scale={self.scale:g})"
        )

    def solve(self, operator: Operator, b: Tensor) -> tuple[Tensor, SolveInfo]:
        """The recursion, then ``x / scale``; ``relative_residual`` is recomputed at the end."""
        if b.shape[-1] != operator.dim:
            raise ValueError(
                f"b: expected last dimension {operator.dim}, got {tuple(b.shape)}"
            )

        def apply(v: Tensor) -> Tensor:
            return operator.matvec(v) + self.damping * v

        x = b.clone()
        limit = 1e6 * float(b.norm()) + 1.0
        for _ in range(self.depth):
            x = b + x - apply(x) / self.scale
            if not torch.isfinite(x).all() or float(x.norm()) > limit:
                raise RuntimeError(
                    f"LiSSA diverged: scale {self.scale:g} is below the largest eigenvalue "
                    "of H + damping I"
                )
        x = x / self.scale
        residual = float((b - apply(x)).norm() / b.norm()) if float(b.norm()) else 0.0
        info = SolveInfo(
            repr(self),
            self.depth,
            residual,
            residual < 1e-6,
            self.depth + 1,
            "H",
            self.damping,
        )
        return x, info
