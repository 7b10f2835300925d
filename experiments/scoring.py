"""Scoring a trained transfer experiment: every pretraining example's influence on the finetuning
test loss, with the solvers its config names, and which examples to validate by retraining.

:func:`solvers_for` is the one place a config's dampings become solvers; every scoring of a
config goes through it, and :func:`describe_solvers` says what a results file records of them.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from influence import CG, Identity
from influence.multistage import Report
from influence.solvers import Solver

from .configs import TransferConfig
from .transfer_data import Pair, TransferData, subsample
from .transfer_training import TrainedTransfer


def solvers_for(config: TransferConfig, *, identity: bool = False) -> dict[str, Solver]:
    """``pretrain_solver`` and ``finetune_solver`` of ``config``: CG on H^2 (eq. 16) with the
    config's dampings and iterations, or with ``identity`` both replaced by I (Fig. 3)."""
    if identity:
        return dict(pretrain_solver=Identity(), finetune_solver=Identity())
    return dict(
        pretrain_solver=CG(config.pretrain_damping, config.cg_iters),
        finetune_solver=CG(config.finetune_damping, config.cg_iters),
    )


def describe_solvers(solvers: dict[str, Solver]) -> dict[str, dict[str, object]]:
    """``{"pretrain": ..., "finetune": ...}``: each stage's solver, its damping and the operator
    the damping is added to (``"H2"``, eq. 16; ``"H"``; or ``"I"`` for no Hessian), as a
    results file records them (:meth:`influence.solvers.Solver.describe`)."""
    return {
        stage: solvers[f"{stage}_solver"].describe() for stage in ("pretrain", "finetune")
    }


def transfer_scores(
    config: TransferConfig,
    data: TransferData,
    trained: TrainedTransfer,
    *,
    identity: bool = False,
    test: Pair | None = None,
    per_test: bool = False,
    candidates: Pair | None = None,
    solvers: dict[str, Solver] | None = None,
) -> tuple[Tensor, Report]:
    """Scores of every pretraining example (or of ``candidates``) on the summed test loss (eq. 8),
    or per test point, with the report of the solves. The scores come back on the CPU.

    H_G is the Hessian over ``config.hessian_examples`` sampled pretraining examples, as in
    Appendix B. ``identity=True`` replaces both inverse Hessians by I (Fig. 3); ``solvers``
    (``pretrain_solver``, ``finetune_solver``) replaces the config's (:func:`solvers_for`).
    """
    if solvers is None:
        solvers = solvers_for(config, identity=identity)
    ms = trained.multistage(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = ms.scores(
            pretrain=subsample(data.pretrain, config.hessian_examples, config.seed),
            finetune=subsample(
                data.finetune, config.finetune_hessian_examples, config.seed
            ),
            test=data.test if test is None else test,
            candidates=data.pretrain if candidates is None else candidates,
            per_test=per_test,
            **solvers,
        )
    for w in caught:  # keep them visible, once each
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return scores.cpu(), ms.report


def pick_removals(scores: Tensor, k: int, seed: int = 0) -> Tensor:
    """Which examples to validate: a third with the largest scores, a third with the smallest, a third at random.

    Koh and Liang removed only the largest |scores|; the tails alone inflate a correlation,
    so random examples from the bulk are mixed in.
    """
    k = min(k, len(scores))
    order = scores.argsort(descending=True).tolist()
    third = k // 3
    chosen = list(dict.fromkeys(order[:third] + order[len(order) - third :]))
    rest = torch.tensor(sorted(set(range(len(scores))) - set(chosen)))
    extra = rest[
        torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed))[
            : k - len(chosen)
        ]
    ]
    return torch.tensor(chosen + extra.tolist())
