"""Section 4.4 with converged solves, finetuning replicates, and the summed-F reading.

The first run of section 4.4 (:mod:`experiments.sec44`) stops CG on eq. 16 after 30
iterations, at relative residuals of 0.47 (C) and 0.065 (D), and finetunes each model once. This
study measures what that leaves open, the way :mod:`experiments.similarity_study` does for 4.3:

- **both solves, converged.** Line 2 solves ``K v1 = df/d(W, Theta)`` with K of each model,
  and line 4 ``H_G v2 = u`` with the ``H_G`` that C and D share. Each is one Lanczos run
  (:mod:`experiments.krylov`), read at the smallest damping, a fraction of the largest Ritz
  value, that keeps the system positive definite and reaches the tolerance
  (:mod:`experiments.paired_solves`).
- **replicates.** Each model is finetuned again from fresh head initializations and batch
  orders on the one pretraining (``TransferConfig.finetune_seed``); the ratio C/D is reported
  per seed and across seeds, with paired statistics per example.
- **the summed-F reading.** Our F is the *mean* finetuning loss, so the coupling
  ``alpha ||W - W_bar||^2`` weighs the same against 5,000 or 15,000 examples. Were F their
  *sum*, F's Hessian would grow with n while ``2 alpha I`` would not, and eq. 15 would tie W
  to W_bar less for the larger set. The study solves eq. 15 with ``K_sum = n K - (n - 1)
  2 alpha P_W`` (:class:`SummedF`) at the same trained weights and compares the ratio C/D it
  gives with the mean's and the paper's. The weights were trained with the mean, so this asks
  what the paper's normalization would predict here, not what a model trained with the sum
  would do.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from influence.autodiff import DataHessian

from .configs import TransferConfig, section44
from .evaluation import accuracy, distance
from .krylov import Krylov, krylov
from .paired_solves import PD_MARGIN, converged_damping, paired_study, positive_dampings
from .pipeline import Lab
from .transfer_data import subsample

FINETUNE_SEEDS = {"paper": (None, 1, 2), "cpu": (None, 1), "quick": (None,)}
SUMMED_SEEDS = {"paper": (None, 1, 2), "cpu": (None,), "quick": (None,)}
# Lanczos steps of K (one model at a time) and of H_G (every u at once, one block product a
# step). On 2 CPU cores a product over 1,000 CIFAR-10 images takes a few seconds a vector.
K_STEPS = {"paper": 200, "cpu": 50, "quick": 8}
H_G_STEPS = {"paper": 300, "cpu": 50, "quick": 8}
# K's dampings, fractions of its largest Ritz value: the coupling 2 alpha = 0.02 sits near 1e-2
# of the mean K's, so smaller fractions are tried than for H_G
K_RELATIVE_DAMPINGS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
PATH_CANDIDATES = {"paper": 2000, "cpu": 500, "quick": 100}
REDUCTIONS = ("mean", "sum")


class SummedF:
    """K of the summed finetuning objective ``n F + alpha ||W - W_bar||^2``, from K of the mean.

    Summing the n finetuning losses multiplies F's Hessian by n and leaves the coupling's
    ``2 alpha I`` on the W block alone: ``K_sum = n K - (n - 1) 2 alpha P_W`` (eq. 15 with F a
    sum). An :class:`influence.solvers.Operator`.
    """

    def __init__(self, k: DataHessian, n: int, alpha: float, w_numel: int) -> None:
        if n < 1:
            raise ValueError(f"n: expected at least one finetuning example, got {n}")
        self.k, self.n, self.alpha, self.w_numel = k, n, alpha, w_numel

    @property
    def dim(self) -> int:
        return self.k.dim

    @property
    def dtype(self) -> torch.dtype:
        return self.k.dtype

    @property
    def device(self) -> torch.device:
        return self.k.device

    def matvec(self, v: Tensor) -> Tensor:
        out = self.n * self.k.matvec(v)
        coupling = (self.n - 1) * 2 * self.alpha
        out[..., : self.w_numel] -= coupling * v[..., : self.w_numel]
        return out

    def to_dense(self) -> Tensor:
        dense = self.n * self.k.to_dense()
        idx = torch.arange(self.w_numel, device=dense.device)
        dense[idx, idx] -= (self.n - 1) * 2 * self.alpha
        return dense


def _replicate(config: TransferConfig, lab: Lab, base: TransferConfig) -> dict[str, Any]:
    """Finetune ``config`` on the base pretraining; its K on a sample, test gradient, and more."""
    start = time.perf_counter()
    run = lab.run(config, pretrained_by=None if config == base else base)
    data, trained = run.data, run.trained
    ms = trained.multistage(config)
    finetune = subsample(data.finetune, config.finetune_hessian_examples, config.seed)
    net = trained.net
    return {
        "ms": ms,
        "data": data,
        "finetune": finetune,
        "k": ms.finetune_hessian(finetune),
        "test_grad": ms.test_gradient(data.test),
        "n": len(data.finetune[1]),
        "details": {
            "finetune_accuracy": accuracy(net.embedding, net.finetune_head, data.test),
            "w_distance": distance(net.embedding, net.pretrained_embedding),
            "seconds_finetuning": time.perf_counter() - start,
        },
    }


def _operator(rep: dict[str, Any], reduction: str) -> Any:
    if reduction == "mean":
        return rep["k"]
    ms = rep["ms"]
    return SummedF(rep["k"], rep["n"], ms.alpha, ms.W.numel)


def _u(rep: dict[str, Any], k: Krylov, damping: float) -> Tensor:
    """Line 3: ``u = -2 alpha [v1]_W`` from K's Lanczos run read at ``damping``."""
    ms = rep["ms"]
    v1 = k.iterate(k.steps, damping).to(dtype=ms.dtype, device=ms.finetune_point.device)
    return ms.pullback(v1, rep["test_grad"], rep["finetune"])


def _first_solves(
    reps: dict[tuple[str, Any], dict[str, Any]], reduction: str, steps: int
) -> tuple[dict[tuple[str, Any], Tensor], dict[str, Any]]:
    """Line 2 and 3 for every replicate under ``reduction``: one Lanczos run of K a model, read
    at the damping all of them share; returns each ``u`` and the solves' record."""
    runs: dict[tuple[str, Any], Krylov] = {}
    for (arm, seed), rep in reps.items():
        runs[arm, seed] = krylov(
            _operator(rep, reduction),
            rep["test_grad"],
            steps,
            desc=f"Lanczos of K ({reduction}), {arm} seed {seed}",
        )[0]
    low, high, dampings = positive_dampings(list(runs.values()), K_RELATIVE_DAMPINGS)
    if not dampings:
        raise RuntimeError(
            f"K ({reduction}) is indefinite at every damping tried: smallest Ritz value "
            f"{low:.3g}, largest {high:.3g}"
        )
    chosen, converged = converged_damping(list(runs.values()), dampings)
    us, solves = {}, {}
    for key, k in runs.items():
        us[key] = _u(reps[key], k, chosen)
        solves[key] = {
            "steps": k.steps,
            "damping": chosen,
            "relative_residual": k.relative_residual(k.steps, chosen),
            "ritz_extremes": [float(k.ritz()[0]), float(k.ritz()[-1])],
        }
    first_key = next(iter(runs))
    record = {
        "ritz": {"smallest": low, "largest": high},
        "dampings": dampings,
        "converged": {f"{d:.6g}": c for d, c in converged.items()},
        "damping": chosen,
        "coupling_2alpha": 2 * reps[first_key]["ms"].alpha,
        "residual_check": {
            "formula": runs[first_key].relative_residual(runs[first_key].steps, chosen),
            "product": runs[first_key].true_residual(
                _operator(reps[first_key], reduction), runs[first_key].steps, chosen
            ),
        },
        "solves": solves,
    }
    return us, record


def run_study(scale: str = "cpu", lab: Lab | None = None) -> dict[str, Any]:
    """Section 4.4 with converged solves, finetuning replicates and the summed-F reading at
    ``scale``, as a dict: one paired study of C against D per reduction of F."""
    lab = lab or Lab()
    models = {m: lab.config(c) for m, c in section44(scale).items()}
    base = models["C"]
    seeds = {"mean": FINETUNE_SEEDS[scale], "sum": SUMMED_SEEDS[scale]}
    reps = {
        (m, seed): _replicate(config.replace(finetune_seed=seed), lab, base)
        for seed in seeds["mean"]
        for m, config in models.items()
    }
    first = reps["C", seeds["mean"][0]]
    ms, data = first["ms"], first["data"]
    for (m, seed), rep in reps.items():  # H_G is shared: the same pretraining
        if not torch.equal(rep["ms"].pretrain_point, ms.pretrain_point):
            raise RuntimeError(f"{m} seed {seed}: its pretrained weights differ from C's")
    start = time.perf_counter()
    us, finetune_records = {}, {}
    for reduction in REDUCTIONS:
        chosen = {k: r for k, r in reps.items() if k[1] in seeds[reduction]}
        u, finetune_records[reduction] = _first_solves(chosen, reduction, K_STEPS[scale])
        us.update({(reduction, *key): v for key, v in u.items()})
    k_s = time.perf_counter() - start
    h_g = ms.pretrain_hessian(subsample(data.pretrain, base.hessian_examples, base.seed))
    start = time.perf_counter()
    keys = list(us)
    runs = dict(
        zip(
            keys,
            krylov(
                h_g,
                torch.stack([us[k] for k in keys]),
                H_G_STEPS[scale],
                desc=f"Lanczos of H_G, {len(keys)} at once",
            ),
        )
    )
    h_g_s = time.perf_counter() - start
    path_set = subsample(data.pretrain, PATH_CANDIDATES[scale], base.seed + 1)
    studies = {}
    for reduction in REDUCTIONS:
        details = {
            (m, seed): {
                **reps[m, seed]["details"],
                "finetune_solve": finetune_records[reduction]["solves"][m, seed],
            }
            for m in models
            for seed in seeds[reduction]
        }
        studies[reduction] = {
            "finetune_solves": {
                k: v for k, v in finetune_records[reduction].items() if k != "solves"
            },
            **paired_study(
                {(m, s): runs[red, m, s] for red, m, s in keys if red == reduction},
                ("C", "D"),
                seeds[reduction],
                h_g,
                ms,
                data.pretrain,
                path_set,
                details,
            ),
        }
    return {
        "config": {m: c.as_dict() for m, c in models.items()},
        "n_finetune": {m: reps[m, seeds["mean"][0]]["n"] for m in models},
        "path_candidates": PATH_CANDIDATES[scale],
        **studies,
        "seconds": {"lanczos_k": k_s, "lanczos_h_g": h_g_s},
    }


def k_damping_sweep(
    scale: str = "cpu",
    lab: Lab | None = None,
    seed: int | None = None,
    also: tuple[float, ...] = (),
) -> dict[str, Any]:
    """The ratio C/D against the damping of line 2 (K + lambda_K I), on one finetuning seed.

    :func:`run_study` reads every model's K at one damping, the smallest positive definite one
    over all models and seeds, so one model's negative curvature sets it for all. Here C and D
    of ``seed`` get their own grid (:data:`K_RELATIVE_DAMPINGS` of their largest Ritz value,
    positive definite with a margin and converged), plus the dampings in ``also`` (the study's,
    to tie the two); each damping gives a ``u`` a model, and every ``u`` goes into one Lanczos
    block of ``H_G``, read at its own smallest converged damping as in the study. One row a
    ``lambda_K``: the paired comparison of C and D, with the norms of ``u`` and ``v2``.
    """
    lab = lab or Lab()
    models = {m: lab.config(c) for m, c in section44(scale).items()}
    base = models["C"]
    reps = {
        m: _replicate(config.replace(finetune_seed=seed), lab, base)
        for m, config in models.items()
    }
    start = time.perf_counter()
    runs = {
        m: krylov(rep["k"], rep["test_grad"], K_STEPS[scale], desc=f"Lanczos of K, {m}")[
            0
        ]
        for m, rep in reps.items()
    }
    low, high, grid = positive_dampings(list(runs.values()), K_RELATIVE_DAMPINGS)
    indefinite = [d for d in also if d <= PD_MARGIN * max(0.0, -low)]
    if indefinite:
        raise ValueError(
            f"also: {indefinite} leave K + lambda I indefinite (smallest Ritz value {low:.3g})"
        )
    _, converged = converged_damping(list(runs.values()), grid or [high])
    dampings = sorted({d for d in grid if converged[d]} | set(also), reverse=True)
    if not dampings:
        raise RuntimeError(
            f"K: no damping of the grid is positive definite and converged (smallest Ritz "
            f"value {low:.3g}, largest {high:.3g}) and none was given in `also`"
        )
    us = {}
    for m, k in runs.items():
        for d in dampings:
            us[m, d] = _u(reps[m], k, d)
    k_s = time.perf_counter() - start
    ms, data = reps["C"]["ms"], reps["C"]["data"]
    h_g = ms.pretrain_hessian(subsample(data.pretrain, base.hessian_examples, base.seed))
    start = time.perf_counter()
    keys = list(us)
    h_runs = krylov(
        h_g,
        torch.stack([us[k] for k in keys]),
        H_G_STEPS[scale],
        desc=f"Lanczos of H_G, {len(keys)} at once",
    )
    details = {
        (m, d): {
            "k_relative_residual": runs[m].relative_residual(runs[m].steps, d),
            "k_ritz_extremes": [float(runs[m].ritz()[0]), float(runs[m].ritz()[-1])],
        }
        for m, d in keys
    }
    path_set = subsample(data.pretrain, PATH_CANDIDATES[scale], base.seed + 1)
    study = paired_study(
        dict(zip(keys, h_runs)),
        ("C", "D"),
        dampings,  # the replicates of this study are the dampings of K, not seeds
        h_g,
        ms,
        data.pretrain,
        path_set,
        details,
    )
    rows = [
        {
            "k_damping": r["finetune_seed"],
            "k_converged": all(
                t["k_relative_residual"] <= study["tolerance"]
                for t in r["tasks"].values()
            ),
            "comparison": r["comparison"],
            "u_norm": {m: t["u_norm"] for m, t in r["tasks"].items()},
            "v2_norm": {m: t["v2_norm"] for m, t in r["tasks"].items()},
            "k_relative_residual": {
                m: t["k_relative_residual"] for m, t in r["tasks"].items()
            },
        }
        for r in study["replicates"]
    ]
    return {
        "config": {m: c.as_dict() for m, c in models.items()},
        "finetune_seed": seed,
        "k_ritz": {"smallest": low, "largest": high},
        "k_grid": grid,
        "k_converged": {f"{d:.6g}": c for d, c in converged.items()},
        # Lanczos's residual estimate, checked by one product with K a model and damping
        "k_residual_checks": {
            f"{m} {d:.6g}": runs[m].true_residual(reps[m]["k"], runs[m].steps, d)
            for m, d in keys
        },
        "coupling_2alpha": 2 * ms.alpha,
        "h_g": {k: study[k] for k in ("ritz", "dampings", "converged", "damping")},
        "h_g_residual_checks": study["residual_checks"],
        "rows": rows,
        "seconds": {"lanczos_k": k_s, "lanczos_h_g": time.perf_counter() - start},
    }


def sweep_row(sweep: dict[str, Any], k_damping: float) -> dict[str, Any] | None:
    """The row of a :func:`k_damping_sweep` at ``k_damping`` (to 1e-9 relative), or None."""
    return next(
        (
            r
            for r in sweep["rows"]
            if math.isclose(r["k_damping"], k_damping, rel_tol=1e-9)
        ),
        None,
    )


def at_study_damping(
    study: dict[str, Any], sweeps: dict[Any, dict[str, Any]]
) -> list[tuple[Any, dict[str, Any]]]:
    """Every finetuning seed's paired comparison at the dampings of ``study`` (its ``"mean"``
    part): the study's replicates, then each sweep's row at the study's lambda_K on a seed the
    study did not train, where the sweep read H_G at the study's damping too. (seed, comparison)
    pairs, in that order."""
    lam_k = study["finetune_solves"]["damping"]
    out = [(r["finetune_seed"], r["comparison"]) for r in study["replicates"]]
    for seed, sweep in sweeps.items():
        if seed in study["finetune_seeds"]:
            continue
        if not math.isclose(sweep["h_g"]["damping"], study["damping"], rel_tol=1e-6):
            continue
        row = sweep_row(sweep, lam_k)
        if row is not None and row["k_converged"]:
            out.append((seed, row["comparison"]))
    return out
