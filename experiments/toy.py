"""Small float64 multi-stage problems, trained to stationary points.

The theory chapters and the tests check every equation on these: a tanh embedding W shared
by a 3-class pretraining task (head U) and a 2-class finetuning task (head Theta), small
enough for dense Hessians, trained by L-BFGS and a few Newton steps to gradient norms below 1e-8, so that
the optimality conditions the paper differentiates really hold.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .train import StageObjective, fit_lbfgs, newton_polish


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


@dataclass
class Trained:
    """The optimum both stages reached."""

    embedding: nn.Module  # W* (= W_bar in the fixed case)
    pretrain_head: nn.Module
    finetune_head: nn.Module
    pretrained_embedding: nn.Module  # W_bar


def _fit(objective: StageObjective) -> None:
    """L-BFGS to about 1e-9, then Newton steps to rounding level; a stationary point or an error."""
    fit_lbfgs(objective, tol=1e-9)
    norm = newton_polish(objective)
    if norm >= 1e-8:
        raise RuntimeError(f"training stopped at gradient norm {norm:.2e}, not at a stationary point")


def make_problem(m: int = 60, n: int = 40, n_test: int = 6, d: int = 3, seed: int = 0, **kw: float) -> Problem:
    """Two related classification tasks on the same inputs: 3 classes to pretrain, 2 to finetune."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, 3, generator=g, dtype=torch.float64)
    b = torch.randn(d, 2, generator=g, dtype=torch.float64)

    def task(k: int, proj: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.randn(k, d, generator=g, dtype=torch.float64)
        logits = x @ proj + 0.5 * torch.randn(k, proj.shape[1], generator=g, dtype=torch.float64)
        return x, logits.argmax(1)

    return Problem(*task(m, a), *task(n, b), *task(n_test, b), **kw)


def make_modules(d: int = 3, h: int = 4, seed: int = 0) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Embedding ``Linear(d, h) + tanh``, pretraining head ``Linear(h, 3)``, finetuning head ``Linear(h, 2)``."""
    torch.manual_seed(seed)
    emb = nn.Sequential(nn.Linear(d, h), nn.Tanh()).double()
    return emb, nn.Linear(h, 3).double(), nn.Linear(h, 2).double()


def pretrain(p: Problem, emb: nn.Module, head: nn.Module, weights: Tensor | None = None) -> None:
    """Minimize G (eq. 1), optionally with example weights (eq. 4), in place."""
    params = [*emb.parameters(), *head.parameters()]
    _fit(StageObjective(params, lambda x: head(emb(x)), p.zx, p.zy, l2=p.pretrain_l2, weights=weights))


def finetune_fixed(p: Problem, emb: nn.Module, head: nn.Module) -> None:
    """Minimize F over Theta with W fixed (eq. 2), in place."""
    with torch.no_grad():
        feats = emb(p.xx)
    _fit(StageObjective(list(head.parameters()), head, feats, p.xy, l2=p.finetune_l2))


def finetune_updated(p: Problem, emb: nn.Module, head: nn.Module, emb_bar: nn.Module) -> None:
    """Minimize F + alpha ||W - W_bar||^2 over (W, Theta) (eq. 12), in place."""
    params = [*emb.parameters(), *head.parameters()]
    anchors = [w.detach().clone() for w in emb_bar.parameters()]
    objective = StageObjective(
        params, lambda x: head(emb(x)), p.xx, p.xy, l2=p.finetune_l2, proximity=(list(emb.parameters()), anchors, p.alpha)
    )
    _fit(objective)


def train(p: Problem, case: str, weights: Tensor | None = None, start: Trained | None = None) -> Trained:
    """Both stages to stationary points; ``start`` warm-starts retraining (for finite differences, leave-one-out)."""
    if start is None:
        emb, head_u, head_t = make_modules(d=p.zx.shape[1])
    else:
        emb, head_u, head_t = (copy.deepcopy(m) for m in (start.pretrained_embedding, start.pretrain_head, start.finetune_head))
    pretrain(p, emb, head_u, weights)
    if case == "fixed":
        finetune_fixed(p, emb, head_t)
        return Trained(emb, head_u, head_t, emb)
    emb_star = copy.deepcopy(emb) if start is None else copy.deepcopy(start.embedding)
    finetune_updated(p, emb_star, head_t, emb)
    return Trained(emb_star, head_u, head_t, emb)


def summed_test_loss(p: Problem, t: Trained) -> float:
    """The summed finetuning test loss, sum_t f(x_t)."""
    with torch.no_grad():
        out = t.finetune_head(t.embedding(p.tx))
        return nn.functional.cross_entropy(out, p.ty, reduction="sum").item()
