"""Two arms scored through one H_G, with converged solves: the shared machinery of 4.3 and 4.4.

Sections 4.3 (tasks A and B) and 4.4 (models C and D) compare the scores of two finetunings
that share a pretraining, so both arms invert the same ``H_G``. Each arm and finetuning seed
contributes one right side ``u``; one Lanczos run of ``H_G`` a right side
(:mod:`experiments.krylov`) gives CG's iterate at every step and for every damping. This module
reads those runs:

- **the damping.** Plain damping needs ``H_G + lambda I`` positive definite; the Ritz values
  say from which lambda it is, and the dampings tried are fractions of the largest one above
  that (:func:`positive_dampings`). The one read is the smallest at which every solve reached
  the tolerance (:func:`converged_damping`).
- **the path.** A ratio is followed along the iterations on a sample of candidates, so a reader
  sees where it settles (:func:`score_path`, :func:`path_ratios`, :func:`settled`).
- **the comparison.** Per example the two arms are paired (the same z, the same ``H_G``), so
  the statistics are paired (:func:`experiments.stats.paired_magnitudes`), one finetuning seed
  at a time, and the spread of the ratio of means is taken across seeds: the unit of
  replication is the trained model, not the pretraining example.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from influence import MultiStage
from influence.solvers import Operator

from .krylov import Krylov
from .records import rounded
from .stats import paired_magnitudes

# Dampings as fractions of the largest Ritz value; those that do not lift the most negative
# Ritz value above zero with a margin (PD_MARGIN) are dropped: CG on H + lambda I needs it
# positive definite.
RELATIVE_DAMPINGS = (1e-1, 1e-2, 1e-3, 1e-4)
PD_MARGIN = 1.1
TOLERANCE = 1e-3  # the relative residual a solve must reach to count as converged

Key = tuple[str, Any]  # (arm, finetuning seed)


def checkpoints(steps: int) -> list[int]:
    """Iterations at which the path is read: roughly geometric from 1, always ending at ``steps``."""
    points = {int(round(x)) for x in np.geomspace(1, steps, num=12)}
    return sorted(p for p in points | {steps} if 1 <= p <= steps)


def positive_dampings(
    runs: Sequence[Krylov], relative: Sequence[float] = RELATIVE_DAMPINGS
) -> tuple[float, float, list[float]]:
    """The smallest and largest Ritz values over all ``runs``, and the dampings (``relative``
    fractions of the largest) that make every ``T_j + lambda I`` positive definite with a margin."""
    low = min(float(k.ritz()[0]) for k in runs)
    high = max(float(k.ritz()[-1]) for k in runs)
    kept = [c * high for c in relative if c * high > PD_MARGIN * max(0.0, -low)]
    return low, high, kept


def converged_damping(
    runs: Sequence[Krylov], dampings: Sequence[float], tolerance: float = TOLERANCE
) -> tuple[float, dict[float, bool]]:
    """The smallest damping at which every run's last iterate reached ``tolerance`` (else the
    largest tried), and whether each damping did."""
    converged = {
        d: all(k.relative_residual(k.steps, d) <= tolerance for k in runs)
        for d in dampings
    }
    return min((d for d in dampings if converged[d]), default=max(dampings)), converged


def score_path(
    k: Krylov, ms: MultiStage, candidates: Any, dampings: Sequence[float]
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


def paired_study(
    runs: dict[Key, Krylov],
    pair: tuple[str, str],
    seeds: Sequence[Any],
    h_g: Operator,
    ms: MultiStage,
    candidates: Any,
    path_set: Any,
    details: dict[Key, dict[str, Any]],
) -> dict[str, Any]:
    """Read the Lanczos ``runs`` of ``H_G`` (one a (arm, seed) of ``pair`` x ``seeds``): the damping,
    every candidate's score per arm, the paths on ``path_set``, and the paired comparison per seed.

    ``details``: what the caller measured of each (arm, seed), stored beside its solve.
    """
    low, high, dampings = positive_dampings(list(runs.values()))
    if not dampings:
        raise RuntimeError(
            f"H_G + lambda I is indefinite at every damping tried: smallest Ritz value "
            f"{low:.3g}, largest {high:.3g}"
        )
    chosen, converged = converged_damping(list(runs.values()), dampings)
    checks = {
        f"{arm} {seed}": {
            "formula": k.relative_residual(k.steps, chosen),
            "product": k.true_residual(h_g, k.steps, chosen),
        }
        for (arm, seed), k in list(runs.items())[:2]
    }
    final = {}
    for key, k in runs.items():
        x = k.iterate(k.steps, chosen).to(dtype=ms.dtype, device=ms.pretrain_point.device)
        final[key] = ms.score_candidates(candidates, x).cpu()
    replicates = []
    for seed in seeds:
        first, second = final[pair[0], seed], final[pair[1], seed]
        replicates.append(
            {
                "finetune_seed": seed,
                "comparison": paired_magnitudes(first.numpy(), second.numpy()),
                "tasks": {
                    arm: {
                        **details[arm, seed],
                        "u_norm": runs[arm, seed].b_norm,
                        "v2_norm": float(
                            runs[arm, seed].iterate(runs[arm, seed].steps, chosen).norm()
                        ),
                        "ritz_extremes": [
                            float(runs[arm, seed].ritz()[0]),
                            float(runs[arm, seed].ritz()[-1]),
                        ],
                        "path": score_path(runs[arm, seed], ms, path_set, dampings),
                        "scores": rounded(final[arm, seed]),
                    }
                    for arm in pair
                },
            }
        )
    ratios = [r["comparison"]["ratio_of_means"] for r in replicates]
    return {
        "pair": list(pair),
        "finetune_seeds": list(seeds),
        "lanczos_steps": max(k.steps for k in runs.values()),
        "tolerance": TOLERANCE,
        "ritz": {"smallest": low, "largest": high},
        "dampings": dampings,
        "converged": {f"{d:.6g}": c for d, c in converged.items()},
        "damping": chosen,
        "residual_checks": checks,
        "replicates": replicates,
        "ratio_of_means": {
            "per_seed": ratios,
            "mean": float(np.mean(ratios)),
            "min": float(np.min(ratios)),
            "max": float(np.max(ratios)),
        },
    }


def pair_of(study: dict[str, Any]) -> tuple[str, str]:
    """The two arms a study compares (section 4.3's first study predates the field: A and B)."""
    first, second = study.get("pair", ("A", "B"))
    return first, second


def path_ratios(
    study: dict[str, Any],
) -> dict[tuple[Any, float], list[tuple[int, float]]]:
    """The ratio of the two arms' mean |score| on the path's candidates at each checkpoint, keyed
    by (finetuning seed, damping): how the ratio moves as the solve proceeds."""
    first, second = pair_of(study)
    out: dict[tuple[Any, float], list[tuple[int, float]]] = {}
    for r in study["replicates"]:
        a, b = r["tasks"][first]["path"], r["tasks"][second]["path"]
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
