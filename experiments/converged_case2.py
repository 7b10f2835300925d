"""Rung 3 in Case 2: the same converged pretraining, then finetuning that updates W too, on
``F(W, Theta) + alpha ||W - W_bar||^2`` (eq. 12), re-optimized to convergence after a removal.

A removal moves ``W_bar`` (pretraining, as in :mod:`.converged_loo`); finetuning then starts
from the finetuned optimum and is re-optimized with the moved anchor, first by L-BFGS and then by
Newton iterations whose Hessian is K at the optimum (eq. 15's matrix), kept as a chord.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from influence import MultiStage

from .converged_loo import ConvergedOptimum, newton_to_tol
from .fit import fit_lbfgs, restore, snapshot
from .objectives import StageObjective, finetune_objective
from .removals import summed_loss


@dataclass
class UpdatedFinetuning:
    """Case 2's finetuned (W*, Theta*) beside rung 3's pretraining optimum (W_bar, U)."""

    opt: ConvergedOptimum
    alpha: float
    emb: nn.Module  # W*: a copy of opt.emb, moved by finetuning
    fhead: nn.Module  # Theta*
    k_dense: Tensor | None = None  # K at the optimum, the chord of every re-optimization
    gradient_norm: float = float("nan")

    def objective(self) -> StageObjective:
        """eq. 12's finetuning objective, anchored at the pretraining embedding as it is now."""
        return finetune_objective(
            "updated",
            self.emb,
            self.fhead,
            *self.opt.finetune,
            pretrained=self.opt.emb,
            alpha=self.alpha,
            l2=self.opt.config.l2,
        )

    def multistage(self) -> MultiStage:
        """Case 2's :class:`~influence.MultiStage` at the current weights."""
        c = self.opt.config
        return MultiStage(
            self.emb,
            self.opt.head,
            self.fhead,
            pretrained_embedding=self.opt.emb,
            case="updated",
            alpha=self.alpha,
            pretrain_l2=c.l2,
            finetune_l2=c.l2,
        )

    def refinetune(self) -> float:
        """Finetuning re-optimized to ``tol`` against the current anchor; the gradient norm."""
        objective = self.objective()
        fit_lbfgs(objective, tol=self.opt.config.tol)
        return newton_to_tol(objective, lambda: self.k_dense, self.opt.config.tol)

    def test_loss(self) -> float:
        return summed_loss(lambda x: self.fhead(self.emb(x)), self.opt.test)

    def params(self) -> list[Tensor]:
        return [*self.emb.parameters(), *self.fhead.parameters()]


def updated_finetuning(opt: ConvergedOptimum, alpha: float) -> UpdatedFinetuning:
    """Case 2's finetuning from rung 3's pretraining optimum (W from W_bar, Theta from Case 1's
    finetuned head), to rung 3's tolerance."""
    ft = UpdatedFinetuning(opt, alpha, copy.deepcopy(opt.emb), copy.deepcopy(opt.fhead))
    fit_lbfgs(ft.objective(), tol=opt.config.tol)  # where K is positive definite
    ft.k_dense = ft.multistage().finetune_hessian(opt.finetune).to_dense()
    ft.gradient_norm = ft.refinetune()
    ft.k_dense = ft.multistage().finetune_hessian(opt.finetune).to_dense()
    return ft


def remove_and_retrain(
    ft: UpdatedFinetuning,
    index: int | None = None,
    kept: Tensor | None = None,
    *,
    subset_tol: float = 1e-8,
) -> tuple[float, float, float]:
    """The change of Case 2's summed test loss when one example (``index``, by Newton as in
    rung 3) or a set (all but ``kept``, by L-BFGS) leaves pretraining; both stages re-optimized,
    then restored. Returns (change, pretraining and finetuning gradient norms)."""
    opt, m = ft.opt, len(ft.opt.pretrain[1])
    tol, device = opt.config.tol, opt.pretrain[0].device
    original = ft.test_loss()
    saved = snapshot(opt.pre.params), snapshot(ft.params())
    if index is not None:
        opt.pre.weights = torch.full((m,), 1 / m, dtype=torch.float64, device=device)
        opt.pre.weights[index] = 0.0
        g_pre = newton_to_tol(opt.pre, lambda: opt.hessian_g, tol)
        opt.pre.weights = None
    else:
        g_pre = fit_lbfgs(opt.kept_objective(kept), tol=subset_tol)
    g_fine = ft.refinetune()
    change = ft.test_loss() - original
    restore(opt.pre.params, saved[0])
    restore(ft.params(), saved[1])
    return change, g_pre, g_fine
