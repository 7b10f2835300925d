"""Multi-stage influence against the methods people use, on one ground truth (the methods chapter).

Every method here is a pretraining vector ``v2``, and every pretraining example's score is
``v2 . grad g(z)`` (Algorithm 1, line 5); the methods differ only in how they build ``v2``:

- **Theorem 1**: ``v2 = H_G^-1 [ (d2F/dTheta dW)^T H_F^-1 df/dTheta - df/dW ; 0 ]`` (Case 1),
  with each inverse by :class:`~influence.Exact`, by CG on H or on H^2 (eq. 16), or by LiSSA.
- **EK-FAC** (kronfluence): the same, with ``H_G^-1`` replaced by ``(F_EKFAC + l2 I)^-1``.
- **No cross term** (Bao et al. 2025's formula, read in Case 1): the finetuning stage never
  updates W, so the formula's ``H_ft^-1`` has nothing to act on in W, and what reaches
  ``H_pt^-1`` is the direct gradient alone, ``v2 = H_G^-1 [ -df/dW ; 0 ]``. What it drops is the
  path through Theta's re-optimization: ``(d2F/dTheta dW)^T H_F^-1 df/dTheta``.
- **Identity** (Fig. 3): both inverses replaced by I. **Gradient dot product** (TracIn at the
  last checkpoint): ``v2 = [ -df/dW ; 0 ]``.

The ground truths are rung 3's converged leave-one-out removals (:mod:`.converged_loo`) and an
LDS over random halves of the pretraining data (:mod:`.lds`), each retrained to convergence
from the optimum. :func:`compare_methods` runs everything in one process, so the seconds are
comparable; the Hessian-vector products are counted by the solvers.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from influence import CG, Exact, Identity
from influence.multistage import DEFAULT_FINETUNE_SOLVER, DEFAULT_PRETRAIN_SOLVER
from influence.progress import progress
from influence.solvers import Solver
from influence.spectrum import lanczos

from .converged_loo import ConvergedConfig, ConvergedOptimum, converged_optimum
from .fit import fit_lbfgs, restore, snapshot
from .lds import lds, random_subsets, subset_predictions
from .lissa import LiSSA
from .objectives import StageObjective
from .stats import agreement


@dataclass(frozen=True)
class MethodsConfig:
    """The comparison's scale: rung 3's network and data, and the LDS subsets."""

    converged: ConvergedConfig = ConvergedConfig()
    subsets: int = 50  # LDS: random halves of the pretraining data, each retrained
    fraction: float = 0.5
    subset_tol: float = 1e-8  # gradient norm each subset's pretraining is brought to
    lissa_depth: int = 1000
    lissa_damping: float = 0.01  # Koh and Liang's default
    ekfac_batch: int = 500
    seed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Scored:
    """One method's scores of every pretraining example, and what they cost."""

    name: str
    scores: Tensor
    seconds: float
    hessian_vector_products: int
    solves: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""


def _hvps(infos: list[Any]) -> int:
    return sum(int(i.hessian_vector_products) for i in infos)


def _solve_dicts(infos: list[Any]) -> list[dict[str, Any]]:
    return [i.as_dict() for i in infos]


class Comparison:
    """The pieces every method shares, computed once at rung 3's optimum (Case 1)."""

    def __init__(self, opt: ConvergedOptimum) -> None:
        self.opt = opt
        self.ms = opt.multistage()
        self.m = len(opt.pretrain[1])
        self.test_grad = self.ms.test_gradient(opt.test)
        self.h_f = self.ms.finetune_hessian(opt.finetune)
        self.h_g = self.ms.pretrain_hessian(opt.pretrain)
        self.p_w = self.ms.W.numel

    def cross_u(self, solver: Solver) -> tuple[Tensor, list[Any]]:
        """Algorithm 1, lines 2-3: ``u`` with the cross term, H_F^-1 by ``solver``."""
        self.ms.report.finetune_solves.clear()
        v1 = self.ms.first_ihvp(self.test_grad, self.h_f, solver)
        infos = list(self.ms.report.finetune_solves)
        return self.ms.pullback(v1, self.test_grad, self.opt.finetune), infos

    def direct_u(self) -> Tensor:
        """``[-df/dW ; 0]``: the test gradient's W part, without the path through Theta."""
        u = torch.zeros(self.ms.W.numel + self.ms.U.numel, dtype=self.test_grad.dtype)
        u[: self.p_w] = -self.test_grad[: self.p_w]
        return u

    def pretrain_solve(self, u: Tensor, solver: Solver) -> tuple[Tensor, list[Any]]:
        """Algorithm 1, line 4 by ``solver``."""
        self.ms.report.pretrain_solves.clear()
        v2 = self.ms.second_ihvp(u, self.h_g, solver)
        return v2, list(self.ms.report.pretrain_solves)

    def scores(self, v2: Tensor) -> Tensor:
        """Line 5 for every pretraining example."""
        return self.ms.score_candidates(self.opt.pretrain, v2)


def _timed(
    run: Callable[[], tuple[Tensor, int, list[Any]]], name: str, note: str
) -> Scored:
    start = time.perf_counter()
    scores, hvps, infos = run()
    return Scored(name, scores, time.perf_counter() - start, hvps, infos, note)


def score_methods(
    comparison: Comparison, config: MethodsConfig, *, ekfac: bool = True
) -> list[Scored]:
    """Every method's scores at the optimum, each timed on its own (shared pieces recomputed)."""
    c = comparison
    l2 = config.converged.l2

    def theorem1(
        pre: Solver, fine: Solver
    ) -> Callable[[], tuple[Tensor, int, list[Any]]]:
        def run() -> tuple[Tensor, int, list[Any]]:
            u, first = c.cross_u(fine)
            v2, second = c.pretrain_solve(u, pre)
            return c.scores(v2), _hvps(first + second), _solve_dicts(first + second)

        return run

    def no_cross(pre: Solver) -> Callable[[], tuple[Tensor, int, list[Any]]]:
        def run() -> tuple[Tensor, int, list[Any]]:
            v2, infos = c.pretrain_solve(c.direct_u(), pre)
            return c.scores(v2), _hvps(infos), _solve_dicts(infos)

        return run

    def lissa_pair() -> tuple[LiSSA, LiSSA, int]:
        # scale: 10% above each Hessian's largest eigenvalue, from 30 Lanczos steps (counted)
        top_g = float(lanczos(c.h_g, 30, seed=config.seed)[-1])
        top_f = float(lanczos(c.h_f, 30, seed=config.seed)[-1])
        d, depth = config.lissa_damping, config.lissa_depth
        return (
            LiSSA(d, depth, 1.1 * (top_g + d)),
            LiSSA(d, depth, 1.1 * (top_f + d)),
            60,
        )

    def lissa() -> tuple[Tensor, int, list[Any]]:
        pre, fine, probes = lissa_pair()
        scores, hvps, infos = theorem1(pre, fine)()
        return scores, hvps + probes, infos

    exact, cg_h = Exact(), CG(0.0, config.converged.cg_iters, tol=1e-10, operator="H")
    runs = [
        ("Theorem 1, Exact", theorem1(exact, exact), "dense H_G and H_F, Cholesky"),
        ("Theorem 1, CG on H", theorem1(cg_h, cg_h), "no damping, to 1e-10 (rung 3's)"),
        (
            "Theorem 1, CG on H^2",
            theorem1(DEFAULT_PRETRAIN_SOLVER, DEFAULT_FINETUNE_SOLVER),
            "eq. 16 at the library's default dampings (1e-2, 1e-8), 200 iterations",
        ),
        (
            "Theorem 1, LiSSA",
            lissa,
            f"depth {config.lissa_depth}, damping {config.lissa_damping:g}, "
            "scale 1.1 x the largest eigenvalue",
        ),
        ("No cross term, Exact", no_cross(exact), "Bao et al.'s formula, exact H_G"),
        ("Identity (Fig. 3)", theorem1(Identity(), Identity()), "both inverses = I"),
        (
            "Gradient dot product",
            no_cross(Identity()),
            "TracIn at the last checkpoint: grad f . grad g over W",
        ),
    ]
    out = [_timed(run, name, note) for name, run, note in progress(runs, desc="methods")]
    if ekfac:
        out += ekfac_methods(c, config, l2)
    return out


def ekfac_methods(c: Comparison, config: MethodsConfig, l2: float) -> list[Scored]:
    """Theorem 1 and the no-cross-term formula with kronfluence's EK-FAC for ``H_G^-1``
    (damped by the weight decay, which EK-FAC's Fisher leaves out); H_F^-1 exact."""
    from .ekfac import fit_ekfac

    start = time.perf_counter()
    model = torch.nn.Sequential(c.opt.emb, c.opt.head)
    factors = fit_ekfac(model, c.opt.pretrain, damping=l2, batch_size=config.ekfac_batch)
    fit_seconds = time.perf_counter() - start
    out = []
    for name, build in (
        ("Theorem 1, EK-FAC", lambda: c.cross_u(Exact())),
        ("No cross term, EK-FAC", lambda: (c.direct_u(), [])),
    ):
        start = time.perf_counter()
        u, infos = build()
        scores = c.scores(factors.precondition(u))
        out.append(
            Scored(
                name,
                scores,
                fit_seconds + time.perf_counter() - start,
                _hvps(infos),
                _solve_dicts(infos),
                f"kronfluence EK-FAC for H_G (fit {fit_seconds:.1f} s, 2 passes over "
                f"the pretraining data), damping = l2 = {l2:g}",
            )
        )
    return out


def subset_effects(
    opt: ConvergedOptimum, kept: Tensor, *, tol: float
) -> tuple[list[float], list[tuple[float, float]]]:
    """Each subset's measured change of the summed test loss: pretraining re-optimized on the
    kept examples (weights 1/m, the removed 0) from the optimum by L-BFGS to ``tol``, then
    finetuning on the moved embedding to rung 3's tolerance."""
    m = len(opt.pretrain[1])
    original = opt.test_loss()
    at_optimum = snapshot(opt.pre.params), snapshot(opt.fine.params)
    effects, gradients = [], []
    for mask in progress(kept, desc="LDS subsets"):
        idx = mask.nonzero().squeeze(1).to(opt.pretrain[0].device)
        subset = StageObjective(
            opt.pre.params,
            opt.pre.forward,
            opt.pretrain[0][idx],
            opt.pretrain[1][idx],
            l2=opt.pre.l2,
            weights=torch.full(
                (len(idx),), 1 / m, dtype=torch.float64, device=idx.device
            ),
        )
        g_pre = fit_lbfgs(subset, tol=tol)
        _, g_fine = opt.refinetune()
        effects.append(opt.test_loss() - original)
        gradients.append((g_pre, g_fine))
        restore(opt.pre.params, at_optimum[0])
        restore(opt.fine.params, at_optimum[1])
    return effects, gradients


def summarize(
    scored: list[Scored],
    m: int,
    loo_indices: list[int],
    loo_measured: list[float],
    kept: Tensor | None,
    subset_measured: list[float] | None,
) -> list[dict[str, Any]]:
    """Per method: Pearson and Spearman against leave-one-out (with r's interval), the LDS
    with its interval, and the cost."""
    rows = []
    for s in scored:
        predicted = (-s.scores[loo_indices] / m).tolist()
        fit = agreement(predicted, loo_measured)
        row = {
            "method": s.name,
            "note": s.note,
            "pearson": fit.pearson_r,
            "pearson_interval": list(fit.interval()),
            "spearman": fit.spearman_rho,
            "n": fit.n,
            "seconds": s.seconds,
            "hessian_vector_products": s.hessian_vector_products,
            "solves": s.solves,
            "predicted": predicted,
        }
        if kept is not None and subset_measured is not None:
            subset_predicted = subset_predictions(s.scores, kept)
            score = lds(subset_predicted, subset_measured)
            row.update(
                lds=score.rho,
                lds_interval=[score.low, score.high],
                subsets=score.subsets,
                subset_predicted=subset_predicted.tolist(),
            )
        rows.append(row)
    return rows


def compare_methods(
    config: MethodsConfig = MethodsConfig(),
    *,
    loo_indices: list[int] | None = None,
    loo_measured: list[float] | None = None,
) -> dict[str, Any]:
    """The whole comparison, JSON-ready: rung 3's optimum, every method's scores, the LDS
    subsets retrained, and the table. The leave-one-out ground truth is rung 3's stored
    removals when given (their indices and measured changes), else measured here."""
    start = time.perf_counter()
    opt = converged_optimum(config.converged)
    training = time.perf_counter() - start
    comparison = Comparison(opt)
    scored = score_methods(comparison, config)
    m = comparison.m
    if loo_indices is None or loo_measured is None:
        from .converged_loo import converged_loo

        rung3 = converged_loo(config.converged)
        loo_indices, loo_measured = rung3["indices"], rung3["measured"]
    kept = random_subsets(m, config.subsets, config.fraction, seed=config.seed)
    start = time.perf_counter()
    subset_measured, subset_gradients = subset_effects(opt, kept, tol=config.subset_tol)
    lds_seconds = time.perf_counter() - start
    return {
        "config": config.as_dict(),
        "m": m,
        "parameters": {
            "pretraining": sum(p.numel() for p in opt.pre.params),
            "finetuning": sum(p.numel() for p in opt.fine.params),
        },
        "hessian_extremes": [float(opt.eigenvalues[0]), float(opt.eigenvalues[-1])],
        "seconds": {"training": training, "lds_retraining": lds_seconds},
        "loo": {"indices": list(loo_indices), "measured": list(loo_measured)},
        "subsets": {  # the masks are random_subsets(m, subsets, fraction, seed=seed)
            "seed": config.seed,
            "measured": subset_measured,
            "gradient_norms": subset_gradients,
        },
        "methods": summarize(scored, m, loo_indices, loo_measured, kept, subset_measured),
    }


SECTION = "methods"


def _same_rung(stored: dict[str, Any], config: ConvergedConfig) -> bool:
    """Whether a stored rung 3 was run with ``config`` (where it ran aside)."""
    mine = {**config.as_dict(), "channels": list(config.channels)}
    return {k: v for k, v in mine.items() if k != "device"} == {
        k: v for k, v in stored.items() if k != "device"
    }


def methods_study(lab: Any, config: MethodsConfig = MethodsConfig()) -> dict[str, Any]:
    """Case 1's comparison, written to the lab's ``methods`` results with its provenance.

    The leave-one-out ground truth is rung 3's, read from the lab's ``sec41_ladder`` results
    when they were measured with ``config.converged`` (the optimum is deterministic, so its
    removals are the same examples), else measured again here."""
    from .pipeline import Lab

    lab = Lab.of(lab, SECTION)
    done = lab.store.results(SECTION)
    stored = None
    if lab.store.exists("sec41_ladder"):
        rung3 = lab.store.results("sec41_ladder")["experiments"].get("converged")
        if rung3 is not None and _same_rung(rung3["config"], config.converged):
            stored = rung3
    loo = (
        {}
        if stored is None
        else {"loo_indices": stored["indices"], "loo_measured": stored["measured"]}
    )
    lab.store.record(
        SECTION, done, "case1", "cpu", lambda: compare_methods(config, **loo), "cpu"
    )
    return done
