"""Section 4.3 with converged solves and replicated finetuning: is task A's pull a solver artifact?

The first run of section 4.3 (:mod:`experiments.sec43`) stops CG on eq. 16 after 50 iterations,
at relative residuals of 0.06 and 0.04, and finetunes each task once. Its ratio A/B is then a
property of one truncated solve and one finetuning. This study measures both:

- **the solve, along its path.** ``H_G`` is shared by every task and seed, so each
  ``v2 = (H_G + lambda I)^-1 u`` comes from one Lanczos run of ``H_G`` from ``u``
  (:mod:`experiments.krylov`): that run gives CG's iterate at every step and for every damping,
  with its residual. The ratio is followed along the iterations until it settles, and read
  where the solve converged (relative residual at most ``TOLERANCE``). Plain damping needs
  ``H_G + lambda I`` positive definite; the Ritz values say from which lambda it is, and the
  dampings are set as fractions of the largest eigenvalue above that.
- **the replicate.** The unit of replication is the trained model, not the pretraining
  example: each task is finetuned again from fresh head initializations and batch orders
  (``TransferConfig.finetune_seed``) on the one pretraining, and the ratio is reported per seed
  and across seeds. Per example, A and B are paired (the same z, the same ``H_G``), so the
  statistics are paired: the median of ``|A(z)| / |B(z)|`` and the share of z with
  ``|A(z)| > |B(z)|``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from .configs import SCALES, TransferConfig, section43
from .evaluation import accuracy
from .krylov import Krylov, krylov
from .pipeline import Lab
from .records import rounded
from .scoring import solvers_for
from .stats import paired_magnitudes
from .transfer_data import subsample

# Finetuning replicates: None is the committed run's own finetuning (seed = the pretraining's).
FINETUNE_SEEDS = {"paper": (None, 1, 2), "cpu": (None, 1, 2), "quick": (None, 1)}
# On 2 CPU cores each Lanczos step is one block product of H_G (905k parameters, 1,000
# CIFAR-10 images) with the 6 vectors of 2 tasks x 3 seeds, about a minute beside other jobs:
# 50 steps is what fits about an hour.
LANCZOS_STEPS = {"paper": 300, "cpu": 50, "quick": 8}
# Dampings as fractions of H_G's largest Ritz value; those that do not lift the most negative
# Ritz value above zero with a margin (PD_MARGIN) are dropped: CG on H + lambda I needs it
# positive definite.
RELATIVE_DAMPINGS = (1e-1, 1e-2, 1e-3, 1e-4)
PD_MARGIN = 1.1
TOLERANCE = 1e-3  # the relative residual a solve must reach to count as converged
PATH_CANDIDATES = {"paper": 2000, "cpu": 500, "quick": 100}  # scored at every checkpoint


def checkpoints(steps: int) -> list[int]:
    """Iterations at which the path is read: roughly geometric from 1, always ending at ``steps``."""
    points = {int(round(x)) for x in np.geomspace(1, steps, num=12)}
    return sorted(p for p in points | {steps} if 1 <= p <= steps)


def _replicate(config: TransferConfig, lab: Lab, base: TransferConfig) -> dict[str, Any]:
    """Finetune ``config`` on the base pretraining and pull its test gradient back to ``u``."""
    start = time.perf_counter()
    run = lab.run(config, pretrained_by=base)
    data, trained = run.data, run.trained
    ms = trained.multistage(config)
    finetune = subsample(data.finetune, config.finetune_hessian_examples, config.seed)
    test_grad = ms.test_gradient(data.test)
    v1 = ms.first_ihvp(
        test_grad, ms.finetune_hessian(finetune), solvers_for(config)["finetune_solver"]
    )
    u = ms.pullback(v1, test_grad, finetune)
    return {
        "ms": ms,
        "data": data,
        "u": u,
        "finetune_accuracy": accuracy(
            trained.net.embedding, trained.net.finetune_head, data.test
        ),
        "finetune_solve": ms.report.finetune_solves[-1].as_dict(),
        "seconds": time.perf_counter() - start,
    }


def _dampings(runs: list[Krylov]) -> tuple[float, float, list[float]]:
    """The smallest and largest Ritz values over all runs, and the dampings kept."""
    low = min(float(k.ritz()[0]) for k in runs)
    high = max(float(k.ritz()[-1]) for k in runs)
    kept = [c * high for c in RELATIVE_DAMPINGS if c * high > PD_MARGIN * max(0.0, -low)]
    return low, high, kept


def _path(
    k: Krylov, ms: Any, candidates: Any, dampings: list[float]
) -> list[dict[str, Any]]:
    """Residual, stretch ``||x_j|| / ||u||`` and mean |score| on ``candidates`` at each checkpoint."""
    points = checkpoints(k.steps)
    rows, iterates = [], []
    for damping in dampings:
        for j in points:
            x = k.iterate(j, damping)
            iterates.append(x)
            rows.append(
                {
                    "damping": damping,
                    "iteration": j,
                    "relative_residual": k.relative_residual(j, damping),
                    "stretch": float(x.norm() / k.b_norm),
                }
            )
    block = torch.stack(iterates).to(dtype=ms.dtype, device=ms.pretrain_point.device)
    scores = ms.score_candidates(candidates, block).abs().mean(0).cpu()
    for row, s in zip(rows, scores.tolist()):
        row["mean_abs_score"] = s
    return rows


def run_study(scale: str = "cpu", lab: Lab | None = None) -> dict[str, Any]:
    """Section 4.3 with converged solves and finetuning replicates at ``scale``, as a dict."""
    lab = lab or Lab()
    tasks = {t: lab.config(c) for t, c in section43(scale).items()}
    base = lab.config(SCALES[scale]["cifar10-fixed"])
    seeds = FINETUNE_SEEDS[scale]
    replicates: dict[tuple[str, int | None], dict[str, Any]] = {}
    for seed in seeds:
        for task, config in tasks.items():
            replicates[task, seed] = _replicate(
                config.replace(finetune_seed=seed), lab, base
            )
    first = replicates["A", seeds[0]]
    ms, data = first["ms"], first["data"]
    config = tasks["A"]
    h_g = ms.pretrain_hessian(
        subsample(data.pretrain, config.hessian_examples, config.seed)
    )
    steps = LANCZOS_STEPS[scale]
    start = time.perf_counter()
    # one Lanczos recurrence a (task, seed), in lockstep: each step is one block product
    keys = list(replicates)
    block = torch.stack([replicates[key]["u"] for key in keys])
    runs = dict(
        zip(keys, krylov(h_g, block, steps, desc=f"Lanczos, {len(keys)} at once"))
    )
    lanczos_s = time.perf_counter() - start
    low, high, dampings = _dampings(list(runs.values()))
    if not dampings:
        raise RuntimeError(
            f"H_G + lambda I is indefinite at every damping tried: smallest Ritz value "
            f"{low:.3g}, largest {high:.3g}"
        )
    path_set = subsample(data.pretrain, PATH_CANDIDATES[scale], config.seed + 1)
    converged = {
        d: all(k.relative_residual(k.steps, d) <= TOLERANCE for k in runs.values())
        for d in dampings
    }
    # the smallest damping at which every solve converged (else the largest tried)
    chosen = min((d for d in dampings if converged[d]), default=max(dampings))
    checks = {
        f"{t} {s}": {
            "formula": k.relative_residual(k.steps, chosen),
            "product": k.true_residual(h_g, k.steps, chosen),
        }
        for (t, s), k in list(runs.items())[:2]
    }
    final = {}
    for key, k in runs.items():
        x = k.iterate(k.steps, chosen).to(dtype=ms.dtype, device=ms.pretrain_point.device)
        final[key] = ms.score_candidates(data.pretrain, x).cpu()
    out_replicates = []
    for seed in seeds:
        a, b = final["A", seed], final["B", seed]
        out_replicates.append(
            {
                "finetune_seed": seed,
                "comparison": paired_magnitudes(a.numpy(), b.numpy()),
                "tasks": {
                    t: {
                        "u_norm": float(replicates[t, seed]["u"].norm()),
                        "v2_norm": float(runs[t, seed].iterate(steps, chosen).norm()),
                        "finetune_accuracy": replicates[t, seed]["finetune_accuracy"],
                        "finetune_solve": replicates[t, seed]["finetune_solve"],
                        "ritz_extremes": [
                            float(runs[t, seed].ritz()[0]),
                            float(runs[t, seed].ritz()[-1]),
                        ],
                        "path": _path(runs[t, seed], ms, path_set, dampings),
                        "scores": rounded(final[t, seed]),
                        "seconds_finetuning_and_u": replicates[t, seed]["seconds"],
                    }
                    for t in tasks
                },
            }
        )
    ratios = [r["comparison"]["ratio_of_means"] for r in out_replicates]
    return {
        "config": {t: c.as_dict() for t, c in tasks.items()},
        "finetune_seeds": list(seeds),
        "lanczos_steps": steps,
        "path_candidates": PATH_CANDIDATES[scale],
        "tolerance": TOLERANCE,
        "ritz": {"smallest": low, "largest": high},
        "dampings": dampings,
        "converged": {f"{d:.6g}": c for d, c in converged.items()},
        "damping": chosen,
        "residual_checks": checks,
        "replicates": out_replicates,
        "ratio_of_means": {
            "per_seed": ratios,
            "mean": float(np.mean(ratios)),
            "min": float(np.min(ratios)),
            "max": float(np.max(ratios)),
        },
        "seconds": {"lanczos": lanczos_s},
    }


def path_ratios(
    study: dict[str, Any],
) -> dict[tuple[Any, float], list[tuple[int, float]]]:
    """The ratio A/B of mean |score| on the path's candidates at each checkpoint, keyed by
    (finetuning seed, damping): how the ratio moves as the solve proceeds."""
    out: dict[tuple[Any, float], list[tuple[int, float]]] = {}
    for r in study["replicates"]:
        a, b = (r["tasks"][t]["path"] for t in "AB")
        for pa, pb in zip(a, b):
            key = (r["finetune_seed"], pa["damping"])
            ratio = pa["mean_abs_score"] / pb["mean_abs_score"]
            out.setdefault(key, []).append((pa["iteration"], ratio))
    return out


def settled(points: list[tuple[int, float]], within: float = 0.05) -> bool:
    """Whether a ratio's path has settled: its last value within ``within`` (relative) of its
    value at half the iterations."""
    last_j, last = points[-1]
    half = min(points, key=lambda p: abs(p[0] - last_j / 2))[1]
    return abs(last / half - 1) <= within
