"""Small float64 multi-stage problems, trained to stationary points.

The theory chapters and the tests check every equation on these: a tanh embedding W shared
by a 3-class pretraining task (head U) and a 2-class finetuning task (head Theta), small
enough for dense Hessians, trained by L-BFGS and a few Newton steps to gradient norms below 1e-8, so that
the optimality conditions the paper differentiates really hold.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from influence import MultiStage

from .fit import fit_lbfgs, newton_polish
from .models import MultiStageNet
from .objectives import StageObjective, finetune_objective


@dataclass
class Problem:
    """The data of both stages and the coefficients of their objectives."""

    zx: Tensor  # pretraining inputs
    zy: Tensor
    xx: Tensor  # finetuning inputs
    xy: Tensor
    tx: Tensor  # finetuning test inputs
    ty: Tensor
    pretrain_l2: float = 1e-2
    finetune_l2: float = 1e-2
    alpha: float = 0.05


def _fit(objective: StageObjective) -> None:
    """L-BFGS to about 1e-9, then Newton steps to rounding level; a stationary point or an error."""
    fit_lbfgs(objective, tol=1e-9)
    norm = newton_polish(objective)
    if norm >= 1e-8:
        raise RuntimeError(
            f"training stopped at gradient norm {norm:.2e}, not at a stationary point"
        )


def make_problem(
    m: int = 60, n: int = 40, n_test: int = 6, d: int = 3, seed: int = 0, **kw: float
) -> Problem:
    """Two related classification tasks on the same inputs: 3 classes to pretrain, 2 to finetune."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, 3, generator=g, dtype=torch.float64)
    b = torch.randn(d, 2, generator=g, dtype=torch.float64)

    def task(k: int, proj: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.randn(k, d, generator=g, dtype=torch.float64)
        logits = x @ proj + 0.5 * torch.randn(
            k, proj.shape[1], generator=g, dtype=torch.float64
        )
        return x, logits.argmax(1)

    return Problem(*task(m, a), *task(n, b), *task(n_test, b), **kw)


def make_modules(
    d: int = 3, h: int = 4, seed: int = 0
) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Embedding ``Linear(d, h) + tanh``, pretraining head ``Linear(h, 3)``, finetuning head ``Linear(h, 2)``."""
    torch.manual_seed(seed)
    emb = nn.Sequential(nn.Linear(d, h), nn.Tanh()).double()
    return emb, nn.Linear(h, 3).double(), nn.Linear(h, 2).double()


def pretrain(
    p: Problem, emb: nn.Module, head: nn.Module, weights: Tensor | None = None
) -> None:
    """Minimize G (eq. 1), optionally with example weights (eq. 4), in place."""
    params = [*emb.parameters(), *head.parameters()]
    _fit(
        StageObjective(
            params, lambda x: head(emb(x)), p.zx, p.zy, l2=p.pretrain_l2, weights=weights
        )
    )


def finetune_fixed(p: Problem, emb: nn.Module, head: nn.Module) -> None:
    """Minimize F over Theta with W fixed (eq. 2), in place."""
    _fit(finetune_objective("fixed", emb, head, p.xx, p.xy, l2=p.finetune_l2))


def finetune_updated(
    p: Problem, emb: nn.Module, head: nn.Module, emb_bar: nn.Module
) -> None:
    """Minimize F + alpha ||W - W_bar||^2 over (W, Theta) (eq. 12), in place."""
    _fit(_updated_objective(p, emb, head, emb_bar))


def _updated_objective(
    p: Problem, emb: nn.Module, head: nn.Module, emb_bar: nn.Module
) -> StageObjective:
    """Eq. 12's objective over (W, Theta), W_bar being ``emb_bar``."""
    return finetune_objective(
        "updated",
        emb,
        head,
        p.xx,
        p.xy,
        pretrained=emb_bar,
        alpha=p.alpha,
        l2=p.finetune_l2,
    )


def train(
    p: Problem,
    case: str,
    weights: Tensor | None = None,
    start: MultiStageNet | None = None,
) -> MultiStageNet:
    """Both stages to stationary points; ``start`` warm-starts retraining (for finite differences, leave-one-out)."""
    if start is None:
        emb, head_u, head_t = make_modules(d=p.zx.shape[1])
    else:
        emb, head_u, head_t = (
            copy.deepcopy(m)
            for m in (
                start.pretrained_embedding,
                start.pretrain_head,
                start.finetune_head,
            )
        )
    pretrain(p, emb, head_u, weights)
    if case == "fixed":
        finetune_fixed(p, emb, head_t)
        return MultiStageNet(emb, head_u, head_t)
    emb_star = copy.deepcopy(emb) if start is None else copy.deepcopy(start.embedding)
    finetune_updated(p, emb_star, head_t, emb)
    return MultiStageNet(emb_star, head_u, head_t, emb)


# ---- Case 2 retraining that cannot stall: Newton steps and a saddle escape --------------------------
# The alpha-regularized finetuning objective has curvature from about 1e-2 up to 2 alpha and beyond;
# L-BFGS's line search can stall just above 1e-8, and a warm start can land near a saddle. These
# finish any fit with Newton steps and step off a saddle along its negative curvature.


def _set_flat(emb: nn.Module, head: nn.Module, x: Tensor) -> None:
    n = sum(w.numel() for w in emb.parameters())
    nn.utils.vector_to_parameters(x[:n], emb.parameters())
    nn.utils.vector_to_parameters(x[n:], head.parameters())


def _finetune_hessian(
    p: Problem, emb: nn.Module, head: nn.Module, emb_bar: nn.Module, head_u: nn.Module
) -> Any:
    """K, the library's Hessian of ``F + alpha ||W - W_bar||^2`` over (W, Theta), at the modules' parameters."""
    ms = MultiStage(
        emb,
        head_u,
        head,
        pretrain_l2=p.pretrain_l2,
        finetune_l2=p.finetune_l2,
        case="updated",
        alpha=p.alpha,
        pretrained_embedding=emb_bar,
    )
    return ms.finetune_hessian((p.xx, p.xy))


def newton_finish(
    p: Problem,
    emb: nn.Module,
    head: nn.Module,
    emb_bar: nn.Module,
    head_u: nn.Module,
    tol: float = 1e-11,
) -> Any:
    """Newton steps ``x <- x - K^-1 grad`` on eq. 12's objective, in place, to gradient norm ``tol``; returns K.

    Every full step is taken (none is undone): from where L-BFGS stalls they converge
    quadratically, and near a saddle they go to it, which :func:`fit_finetuning` then leaves.
    """
    objective = _updated_objective(p, emb, head, emb_bar)

    def hessian() -> Tensor:
        return _finetune_hessian(p, emb, head, emb_bar, head_u).to_dense()

    norm = newton_polish(objective, steps=25, tol=tol, hessian=hessian, keep=None)
    if norm > tol:
        raise RuntimeError(f"Newton stopped at gradient norm {norm:.1e}")
    return _finetune_hessian(p, emb, head, emb_bar, head_u)


def fit_finetuning(
    p: Problem,
    emb_bar: nn.Module,
    head_u: nn.Module,
    start_emb: nn.Module,
    start_head: nn.Module,
) -> tuple[nn.Module, nn.Module]:
    """Minimize eq. 12's objective from ``(start_emb, start_head)`` to a strict local minimum (K positive definite)."""
    emb, head = copy.deepcopy(start_emb), copy.deepcopy(start_head)
    descend = p.alpha <= 1
    for _ in range(3):
        if descend:
            try:
                finetune_updated(p, emb, head, emb_bar)
            except (
                RuntimeError
            ):  # stalled just above 1e-8: Newton finishes from where it stopped
                pass
        k = newton_finish(p, emb, head, emb_bar, head_u)
        eigenvalues, vectors = torch.linalg.eigh(k.to_dense())
        if eigenvalues[0] > 0:
            return emb, head
        _set_flat(
            emb, head, k.at + 0.1 * vectors[:, 0]
        )  # a saddle: step off along negative curvature
        descend = True  # and descend again
    raise RuntimeError("no strict local minimum found")


def fit_pretraining(
    p: Problem, emb_bar: nn.Module, head_u: nn.Module, weights: Tensor | None = None
) -> None:
    """:func:`pretrain` (G, optionally example-weighted), in place, finished by Newton steps if L-BFGS stalls."""
    try:
        pretrain(p, emb_bar, head_u, weights)
        return
    except RuntimeError:
        pass
    weights = (
        torch.full((len(p.zy),), 1 / len(p.zy), dtype=torch.float64)
        if weights is None
        else weights
    )
    params = [*emb_bar.parameters(), *head_u.parameters()]
    objective = StageObjective(
        params,
        lambda x: head_u(emb_bar(x)),
        p.zx,
        p.zy,
        l2=p.pretrain_l2,
        weights=weights,
    )
    if newton_polish(objective, steps=25) >= 1e-11:
        raise RuntimeError("pretraining did not reach a stationary point")


def retrain_updated(p: Problem, start: MultiStageNet, weights: Tensor) -> MultiStageNet:
    """Both stages of Case 2 re-optimized with pretraining example weights, warm-started from ``start``."""
    emb_bar, head_u = (
        copy.deepcopy(start.pretrained_embedding),
        copy.deepcopy(start.pretrain_head),
    )
    fit_pretraining(p, emb_bar, head_u, weights)
    emb, head = fit_finetuning(p, emb_bar, head_u, start.embedding, start.finetune_head)
    return MultiStageNet(emb, head_u, head, emb_bar)


def summed_test_loss(p: Problem, t: MultiStageNet) -> float:
    """The summed finetuning test loss, sum_t f(x_t)."""
    with torch.no_grad():
        out = t.finetune_head(t.embedding(p.tx))
        return nn.functional.cross_entropy(out, p.ty, reduction="sum").item()
