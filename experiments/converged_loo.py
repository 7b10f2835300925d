"""Rung 3 of section 4.1's ladder of ground truths: leave-one-out retraining that converges.

A small CNN on real MNIST images, weight decay (so the minimum is isolated), float64, both
stages re-optimized from the optimum by full-batch Newton iterations (L-BFGS where they stall)
to a gradient far below ``||grad g(z)|| / m``. The prediction uses undamped inverse Hessians.
Koh and Liang's experiment, in two stages. Rung 2 is :mod:`experiments.proximal_response`;
rung 1 is Appendix B's protocol, section 4.1's own measurement (``sec41.json``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from influence import CG, Identity, MultiStage
from influence.progress import progress

from .configs import TransferConfig
from .devices import resolve
from .fit import fit_adam, fit_lbfgs, newton_polish, restore, snapshot
from .models import small_mnist
from .objectives import StageObjective, finetune_objective
from .removals import Pair, per_example_norms, spread, summed_loss
from .scoring import describe_solvers
from .stats import agreement
from .transfer_data import TransferData, load_transfer_data


@dataclass(frozen=True)
class ConvergedConfig:
    """Rung 3: a scale at which leave-one-out retraining converges on 2 CPU cores."""

    pretrain_size: int = 2000  # MNIST digits 0-3
    finetune_size: int = 1000  # digits 4-9
    test_size: int = 500  # x_t: test images of digits 4-9, summed (eq. 8)
    channels: tuple[int, int] = (4, 8)  # Table A's MNIST network has 32 and 64
    l2: float = 3e-2  # weight decay of both stages: an isolated, well-conditioned minimum
    adam_steps: int = 1000  # warm start before L-BFGS
    tol: float = (
        1e-9  # gradient norm every optimum is brought to, far below ||grad g|| / m
    )
    cg_iters: int = 3000
    removals: int = 40
    seed: int = 0
    device: str = "auto"  # experiments.devices.resolve: "auto" is CUDA where there is one

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def transfer_data(self) -> TransferData:
        """Rung 3's MNIST tasks (pretraining, finetuning, test), loaded as TransferConfig does."""
        return load_transfer_data(
            TransferConfig(
                pretrain_size=self.pretrain_size,
                finetune_size=self.finetune_size,
                test_size=self.test_size,
                seed=self.seed,
            )
        )


def newton_to_tol(
    objective: StageObjective, hessian: Callable[[], Tensor], tol: float
) -> float:
    """Newton iterations to gradient norm ``tol`` from a dense Hessian kept as a chord (refreshed
    at most twice where a step gains less than half a digit), halving the step until the
    objective decreases; L-BFGS finishes where they stall. Returns the final gradient norm."""
    norm = newton_polish(
        objective, steps=50, tol=tol, hessian=hessian, refreshes=2, keep="value"
    )
    return norm if norm <= tol else fit_lbfgs(objective, tol=tol)


@dataclass
class ConvergedOptimum:
    """Both stages of rung 3 trained to ``tol``, with what a removal needs to re-optimize them.

    ``pre`` and ``fine`` are the objectives whose parameters are the live modules ``emb``,
    ``head`` and ``fhead``; ``hessian_g`` is the dense H_G at the optimum (852 x 852).
    """

    config: ConvergedConfig
    pretrain: Pair
    finetune: Pair
    test: Pair
    emb: nn.Module
    head: nn.Module
    fhead: nn.Module
    pre: StageObjective
    # set by converged_optimum as training reaches them:
    hessian_g: Tensor | None = None
    eigenvalues: Tensor | None = None
    fine: StageObjective | None = None
    gradient_norms: tuple[float, float] = (float("nan"), float("nan"))

    def multistage(self) -> MultiStage:
        """A :class:`~influence.MultiStage` at the current weights (it reads them when made)."""
        c = self.config
        return MultiStage(
            self.emb,
            self.head,
            self.fhead,
            pretrain_l2=c.l2,
            finetune_l2=c.l2,
            case="fixed",
        )

    def refinetune(self) -> tuple[StageObjective, float]:
        """Finetuning re-optimized to ``tol`` on the current embedding (Newton, then L-BFGS)."""
        c = self.config
        fine = finetune_objective("fixed", self.emb, self.fhead, *self.finetune, l2=c.l2)
        fit_lbfgs(fine, tol=c.tol)
        h_f = lambda: self.multistage().finetune_hessian(self.finetune).to_dense()  # noqa: E731
        return fine, newton_to_tol(fine, h_f, c.tol)

    def test_loss(self) -> float:
        """The summed test loss of the finetuned model as it is now."""
        return summed_loss(lambda x: self.fhead(self.emb(x)), self.test)

    def kept_objective(self, kept: Tensor) -> StageObjective:
        """G over the pretraining examples ``kept`` marks, each at its weight 1/m: the
        removed ones drop out and the others keep theirs (the book's removal convention)."""
        x, y = self.pretrain
        idx = kept.nonzero().squeeze(1).to(x.device)
        m = len(y)
        return StageObjective(
            self.pre.params,
            self.pre.forward,
            x[idx],
            y[idx],
            l2=self.pre.l2,
            weights=torch.full((len(idx),), 1 / m, dtype=torch.float64, device=x.device),
        )


def converged_optimum(config: ConvergedConfig = ConvergedConfig()) -> ConvergedOptimum:
    """Rung 3's optimum: Adam, then L-BFGS, then Newton steps with the dense Hessian there (852
    parameters) down to a gradient norm of ``tol``, for pretraining and then finetuning.
    Deterministic on a CPU, so the chapters that reuse rung 3 meet the same weights."""
    device = resolve(config.device)
    data = config.transfer_data()
    pretrain, finetune, test = (
        (x.double().to(device), y.to(device))
        for x, y in (data.pretrain, data.finetune, data.test)
    )
    torch.manual_seed(config.seed)
    net = small_mnist(4, 6, config.channels)
    emb, head, fhead = (
        m.double().to(device)
        for m in (net.embedding, net.pretrain_head, net.finetune_head)
    )
    pre = StageObjective(
        [*emb.parameters(), *head.parameters()],
        lambda x: head(emb(x)),
        *pretrain,
        l2=config.l2,
    )
    fit_adam(pre, steps=config.adam_steps, batch_size=256, lr=3e-3, seed=config.seed)
    fit_lbfgs(pre, tol=1e-6, max_iter=2000, restarts=1)
    optimum = ConvergedOptimum(config, pretrain, finetune, test, emb, head, fhead, pre)
    optimum.hessian_g = (
        optimum.multistage().pretrain_hessian(pretrain).to_dense()
    )  # minutes
    grad_pre = newton_to_tol(pre, lambda: optimum.hessian_g, config.tol)
    optimum.eigenvalues = torch.linalg.eigvalsh(optimum.hessian_g)
    if optimum.eigenvalues[0] <= 0:
        raise RuntimeError(
            f"H_G has eigenvalue {float(optimum.eigenvalues[0]):.3g}: "
            "not at an isolated minimum"
        )
    optimum.fine, grad_fine = optimum.refinetune()
    optimum.gradient_norms = grad_pre, grad_fine
    return optimum


def converged_scores(
    opt: ConvergedOptimum,
) -> tuple[Tensor, Tensor, dict[str, Any], list[dict[str, Any]]]:
    """Theorem 1's scores at rung 3's optimum with undamped inverse Hessians (CG on H), the
    identity's on the same test loss, the solvers and each solve's report."""
    c, ms = opt.config, opt.multistage()
    solvers = dict(
        pretrain_solver=CG(0.0, c.cg_iters, tol=1e-10, operator="H"),
        finetune_solver=CG(0.0, c.cg_iters, tol=1e-10, operator="H"),
    )
    scores = ms.scores(opt.pretrain, opt.finetune, opt.test, **solvers)
    solves = [
        dataclasses.asdict(s)
        for s in ms.report.pretrain_solves + ms.report.finetune_solves
    ]
    identity = ms.scores(
        opt.pretrain,
        opt.finetune,
        opt.test,
        pretrain_solver=Identity(),
        finetune_solver=Identity(),
    )
    return scores, identity, solvers, solves


def converged_loo(
    config: ConvergedConfig = ConvergedConfig(),
    choose: Callable[[Tensor, int], list[int]] = spread,
    budget_minutes: float | None = None,
) -> dict[str, Any]:
    """Rung 3: Theorem 1's scores against leave-one-out retraining re-optimized to convergence.

    Training: :func:`converged_optimum`. Each removal sets the example's weight in G to 0
    (eps = -1/m exactly, the others keep 1/m), re-optimizes pretraining from the optimum by
    Newton iterations with the Hessian at the optimum, then finetuning on the moved
    embedding the same way, each to ``tol``, and measures the summed test loss. The
    prediction is ``-score / m``, with H_G and H_F themselves (CG on H, no damping); the
    identity ablation is scored on the same removals. ``choose(scores, config.removals)``
    picks the removed examples (default: spread evenly in rank over the scores).
    With ``budget_minutes``, no further removal starts once that many minutes have passed
    since the first began: the result holds the ones finished, in ``choose``'s order, and
    says how many of the chosen that is (``"completed"``).
    """
    opt = converged_optimum(config)
    pretrain, test = opt.pretrain, opt.test
    pre, fine, hessian_g, eigenvalues = opt.pre, opt.fine, opt.hessian_g, opt.eigenvalues
    grad_pre, grad_fine = opt.gradient_norms
    device = pretrain[0].device
    original = opt.test_loss()
    ms = opt.multistage()
    scores, identity, solvers, solves = converged_scores(opt)
    m = len(pretrain[1])
    chosen = choose(scores, config.removals)
    at_optimum = snapshot(pre.params), snapshot(fine.params)
    gradient_g = per_example_norms(ms, (pretrain[0][chosen], pretrain[1][chosen]))
    measured, gradients = [], []
    start = time.perf_counter()
    for i in progress(chosen, desc="converged leave-one-out"):
        spent = time.perf_counter() - start
        if measured and budget_minutes is not None and spent > 60 * budget_minutes:
            break
        pre.weights = torch.full((m,), 1 / m, dtype=torch.float64, device=device)
        pre.weights[i] = 0.0
        kept, cached = torch.arange(m, device=device) != i, [hessian_g]

        def h_loo() -> Tensor:  # the optimum's Hessian first, then the moved point's
            if cached:
                return cached.pop()
            subset = pretrain[0][kept], pretrain[1][kept]  # noqa: B023
            return opt.multistage().pretrain_hessian(subset).to_dense()

        g_pre = newton_to_tol(pre, h_loo, config.tol)
        fine, g_fine = opt.refinetune()
        measured.append(opt.test_loss() - original)
        gradients.append((g_pre, g_fine))
        pre.weights = None
        restore(pre.params, at_optimum[0])
        restore(fine.params, at_optimum[1])
    planned, chosen = len(chosen), chosen[: len(measured)]
    gradient_g = gradient_g[: len(chosen)]  # ||grad g(z)||, beside the tol above
    predicted = (-scores[chosen] / m).tolist()
    identity_predicted = (-identity[chosen] / m).tolist()
    return {
        "config": config.as_dict(),
        "m": m,
        "n_test": len(test[1]),
        "parameters": {
            "pretraining": sum(p.numel() for p in pre.params),
            "finetuning": sum(p.numel() for p in fine.params),
        },
        "gradient_norms": {"pretraining": grad_pre, "finetuning": grad_fine},
        "hessian_extremes": [float(eigenvalues[0]), float(eigenvalues[-1])],
        "removed_gradient_norms": gradient_g,
        "solvers": describe_solvers(solvers),
        "solves": solves,
        "indices": chosen,
        "predicted": predicted,
        "identity_predicted": identity_predicted,
        "measured": measured,
        "retrained_gradient_norms": gradients,
        "completed": {
            "removals": len(chosen),
            "of": planned,
            "minutes": (time.perf_counter() - start) / 60,
        },
        # a budget can stop a run before three removals, and r needs three
        "agreement": _agreement(predicted, measured),
        "identity": _agreement(identity_predicted, measured),
    }


def _agreement(predicted: list[float], measured: list[float]) -> dict[str, Any] | None:
    """:func:`~experiments.stats.agreement` as a dict, or None over fewer than 3 removals."""
    return (
        dataclasses.asdict(agreement(predicted, measured)) if len(measured) >= 3 else None
    )
