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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from influence import CG, Exact, Identity
from influence.multistage import DEFAULT_FINETUNE_SOLVER, DEFAULT_PRETRAIN_SOLVER
from influence.progress import progress
from influence.solvers import Matrix, Solver
from influence.spectrum import lanczos

from .converged_loo import ConvergedConfig, ConvergedOptimum, converged_optimum
from .fit import fit_lbfgs, restore, snapshot
from .lds import lds, random_subsets, subset_predictions
from .lissa import LiSSA
from .removals import spread
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
    alpha: float = 0.01  # Case 2's proximity (eq. 12)
    case2_removals: int = 20  # Case 2's own converged leave-one-out removals
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
    """The pieces every method shares, computed once at the optimum.

    Case 1 by default; ``case2`` (a :class:`~experiments.converged_case2.UpdatedFinetuning`)
    makes it Case 2, whose finetuning Hessian K carries eq. 15's ``2 alpha I``.
    """

    def __init__(self, opt: ConvergedOptimum, case2: Any = None) -> None:
        self.opt, self.case2 = opt, case2
        self.ms = opt.multistage() if case2 is None else case2.multistage()
        self.finetune_model = (
            (opt.emb, opt.fhead)
            if case2 is None
            else (
                case2.emb,
                case2.fhead,
            )
        )
        self.m = len(opt.pretrain[1])
        self.test_grad = self.ms.test_gradient(opt.test)
        self.h_f = self.ms.finetune_hessian(opt.finetune)
        self.h_g = self.ms.pretrain_hessian(opt.pretrain)
        self.p_w = self.ms.W.numel

    def cross_u(self, solver: Solver) -> tuple[Tensor, list[Any]]:
        """Algorithm 1, lines 2-3: ``u`` with the cross term, H_F^-1 (or K^-1) by ``solver``."""
        self.ms.report.finetune_solves.clear()
        v1 = self.ms.first_ihvp(self.test_grad, self.h_f, solver)
        infos = list(self.ms.report.finetune_solves)
        return self.ms.pullback(v1, self.test_grad, self.opt.finetune), infos

    def _pad(self, u_w: Tensor) -> Tensor:
        u = torch.zeros(self.ms.W.numel + self.ms.U.numel, dtype=self.test_grad.dtype)
        u[: self.p_w] = u_w
        return u

    def direct_u(self) -> Tensor:
        """``[-df/dW ; 0]``: the test gradient's W part, without the path through Theta."""
        return self._pad(-self.test_grad[: self.p_w])

    def bao_u(
        self, finetune_inverse: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[Tensor, list[Any]]:
        """Bao et al.'s ``H_ft^-1 grad f``, cut to W: Case 1 has no W in finetuning, so it is
        :meth:`direct_u`; in Case 2 ``H_ft`` is F's Hessian over (W, Theta) without eq. 12's
        proximity term, inverted exactly or by ``finetune_inverse`` (EK-FAC)."""
        if self.case2 is None:
            return self.direct_u(), []
        if finetune_inverse is not None:
            return self._pad(-finetune_inverse(self.test_grad)[: self.p_w]), []
        h_ft = (
            self.case2.k_dense.clone()
        )  # K at the optimum, less eq. 15's 2 alpha I on W
        h_ft.diagonal()[: self.p_w] -= 2 * self.case2.alpha
        v1, info = Exact().solve(Matrix(h_ft), self.test_grad)
        return self._pad(-v1[: self.p_w]), [info]

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
            u, first = c.bao_u()
            v2, infos = c.pretrain_solve(u, pre)
            infos = first + infos
            return c.scores(v2), _hvps(infos), _solve_dicts(infos)

        return run

    def dot_product() -> tuple[Tensor, int, list[Any]]:
        return c.scores(c.direct_u()), 0, []

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
    if (
        c.case2 is None
    ):  # Bao et al.'s formula has no cross term in Case 1 (module docstring)
        bao, bao_exact = "No cross term, Exact", "exact H_G"
    else:
        bao, bao_exact = "Bao et al. (no proximity term), Exact", "exact H_ft and H_G"
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
        (bao, no_cross(exact), f"Bao et al.'s formula, {bao_exact}"),
        ("Identity (Fig. 3)", theorem1(Identity(), Identity()), "both inverses = I"),
        (
            "Gradient dot product",
            dot_product,
            "TracIn at the last checkpoint: grad f . grad g over W",
        ),
    ]
    out = [_timed(run, name, note) for name, run, note in progress(runs, desc="methods")]
    if ekfac:
        out += ekfac_methods(c, config, l2)
    return out


def ekfac_methods(c: Comparison, config: MethodsConfig, l2: float) -> list[Scored]:
    """Theorem 1 and Bao et al.'s formula with kronfluence's EK-FAC for ``H_G^-1`` (damped by
    the weight decay, which EK-FAC's Fisher leaves out). Theorem 1 keeps H_F^-1 exact; Bao et
    al.'s formula in Case 2 takes EK-FAC for ``H_ft^-1`` too, as they do."""
    from .ekfac import fit_ekfac

    start = time.perf_counter()
    pretrained = torch.nn.Sequential(c.opt.emb, c.opt.head)
    factors = fit_ekfac(
        pretrained, c.opt.pretrain, damping=l2, batch_size=config.ekfac_batch
    )
    fit_seconds = time.perf_counter() - start
    finetune_inverse, fit_ft = None, 0.0
    if c.case2 is not None:
        start = time.perf_counter()
        finetuned = torch.nn.Sequential(*c.finetune_model)
        ft_factors = fit_ekfac(
            finetuned, c.opt.finetune, damping=l2, batch_size=config.ekfac_batch
        )
        finetune_inverse, fit_ft = ft_factors.precondition, time.perf_counter() - start
    bao = (
        "No cross term, EK-FAC"
        if c.case2 is None
        else ("Bao et al. (no proximity term), EK-FAC")
    )
    out = []
    for name, build, fitting in (
        ("Theorem 1, EK-FAC", lambda: c.cross_u(Exact()), fit_seconds),
        (bao, lambda: c.bao_u(finetune_inverse), fit_seconds + fit_ft),
    ):
        start = time.perf_counter()
        u, infos = build()
        scores = c.scores(factors.precondition(u))
        out.append(
            Scored(
                name,
                scores,
                fitting + time.perf_counter() - start,
                _hvps(infos),
                _solve_dicts(infos),
                f"kronfluence EK-FAC for H_G (fit {fit_seconds:.1f} s, 2 passes over "
                f"the pretraining data), damping = l2 = {l2:g}"
                + (
                    ""
                    if c.case2 is None or name.startswith("Theorem")
                    else f"; EK-FAC for H_ft too (fit {fit_ft:.1f} s)"
                ),
            )
        )
    return out


def subset_effects(
    opt: ConvergedOptimum, kept: Tensor, *, tol: float
) -> tuple[list[float], list[tuple[float, float]]]:
    """Each subset's measured change of the summed test loss: pretraining re-optimized on the
    kept examples (weights 1/m, the removed 0) from the optimum by L-BFGS to ``tol``, then
    finetuning on the moved embedding to rung 3's tolerance."""
    original = opt.test_loss()
    at_optimum = snapshot(opt.pre.params), snapshot(opt.fine.params)
    effects, gradients = [], []
    for mask in progress(kept, desc="LDS subsets"):
        g_pre = fit_lbfgs(opt.kept_objective(mask), tol=tol)
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


def compare_methods_case2(config: MethodsConfig = MethodsConfig()) -> dict[str, Any]:
    """Case 2's comparison, JSON-ready: rung 3's pretraining, finetuning with W updated on
    eq. 12's objective, every method, and its own ground truths: ``case2_removals`` converged
    leave-one-out removals spread over Theorem 1's exact scores, and the same LDS subsets as
    Case 1, both stages re-optimized each time."""
    from .converged_case2 import remove_and_retrain, updated_finetuning

    start = time.perf_counter()
    opt = converged_optimum(config.converged)
    ft = updated_finetuning(opt, config.alpha)
    training = time.perf_counter() - start
    comparison = Comparison(opt, ft)
    scored = score_methods(comparison, config)
    m = comparison.m
    exact = next(s for s in scored if s.name == "Theorem 1, Exact")
    indices = spread(exact.scores, config.case2_removals)
    start = time.perf_counter()
    loo = [remove_and_retrain(ft, index=i) for i in progress(indices, desc="Case 2 LOO")]
    loo_seconds = time.perf_counter() - start
    kept = random_subsets(m, config.subsets, config.fraction, seed=config.seed)
    start = time.perf_counter()
    subsets = [
        remove_and_retrain(ft, kept=k, subset_tol=config.subset_tol)
        for k in progress(kept, desc="LDS subsets")
    ]
    lds_seconds = time.perf_counter() - start
    measured = [change for change, _, _ in loo]
    subset_measured = [change for change, _, _ in subsets]
    return {
        "config": config.as_dict(),
        "m": m,
        "parameters": {
            "pretraining": sum(p.numel() for p in opt.pre.params),
            "finetuning": sum(p.numel() for p in ft.params()),
        },
        "gradient_norms": {
            "pretraining": opt.gradient_norms[0],
            "finetuning": ft.gradient_norm,
        },
        "hessian_extremes": [float(opt.eigenvalues[0]), float(opt.eigenvalues[-1])],
        "seconds": {
            "training": training,
            "loo_retraining": loo_seconds,
            "lds_retraining": lds_seconds,
        },
        "loo": {
            "indices": indices,
            "measured": measured,
            "gradient_norms": [[g, h] for _, g, h in loo],
        },
        "subsets": {
            "seed": config.seed,
            "measured": subset_measured,
            "gradient_norms": [[g, h] for _, g, h in subsets],
        },
        "methods": summarize(scored, m, indices, measured, kept, subset_measured),
    }


SECTION = "methods"


def _same_rung(stored: dict[str, Any], config: ConvergedConfig) -> bool:
    """Whether a stored rung 3 was run with ``config`` (where it ran aside)."""
    mine = {**config.as_dict(), "channels": list(config.channels)}
    return {k: v for k, v in mine.items() if k != "device"} == {
        k: v for k, v in stored.items() if k != "device"
    }


def methods_study(
    lab: Any,
    config: MethodsConfig = MethodsConfig(),
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Case 1's comparison (``"case1"``) and Case 2's (``"case2"``), or those named in
    ``only``, each written to the lab's ``methods`` results with its provenance as it ends.

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
    runs = {
        "case1": lambda: compare_methods(config, **loo),
        "case2": lambda: compare_methods_case2(config),
    }
    unknown = set(only or ()) - set(runs)
    if unknown:
        raise ValueError(
            f"only: unknown {sorted(unknown)}; expected some of {sorted(runs)}"
        )
    for name in only or runs:
        lab.store.record(SECTION, done, name, "cpu", runs[name], "cpu")
    return done
