"""Section 4.3 with converged solves and replicated finetuning: is task A's pull a solver artifact?

The first run of section 4.3 (:mod:`experiments.sec43`) stops CG on eq. 16 after 50 iterations,
at relative residuals of 0.06 and 0.04, and finetunes each task once. Its ratio A/B is then a
property of one truncated solve and one finetuning. This study measures both:

- **the solve, along its path.** ``H_G`` is shared by every task and seed, so each
  ``v2 = (H_G + lambda I)^-1 u`` comes from one Lanczos run of ``H_G`` from ``u``
  (:mod:`experiments.krylov`), read by :mod:`experiments.paired_solves`: the ratio is followed
  along the iterations until it settles, and read where the solve converged, at a damping
  that keeps ``H_G + lambda I`` positive definite.
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

import torch

from .configs import SCALES, TransferConfig, section43
from .evaluation import accuracy
from .krylov import krylov
from .paired_solves import paired_study, path_ratios, settled  # noqa: F401 (the chapter's)
from .pipeline import Lab
from .scoring import solvers_for
from .transfer_data import subsample

# Finetuning replicates: None is the committed run's own finetuning (seed = the pretraining's).
FINETUNE_SEEDS = {"paper": (None, 1, 2), "cpu": (None, 1, 2), "quick": (None, 1)}
# On 2 CPU cores each Lanczos step is one block product of H_G (905k parameters, 1,000
# CIFAR-10 images) with the 6 vectors of 2 tasks x 3 seeds, about a minute beside other jobs:
# 50 steps is what fits about an hour.
LANCZOS_STEPS = {"paper": 300, "cpu": 50, "quick": 8}
PATH_CANDIDATES = {"paper": 2000, "cpu": 500, "quick": 100}  # scored at every checkpoint


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


def run_study(
    scale: str = "cpu",
    lab: Lab | None = None,
    *,
    pretrain_seed: int | None = None,
    finetune_seeds: tuple[int | None, ...] | None = None,
) -> dict[str, Any]:
    """Section 4.3 with converged solves and finetuning replicates at ``scale``, as a dict.

    ``pretrain_seed``: another pretraining (its ``seed``, which also draws the samples), for a
    replicate of the whole study; ``finetune_seeds``: the finetunings of each task on it
    (default :data:`FINETUNE_SEEDS` of the scale).
    """
    lab = lab or Lab()
    tasks = {t: lab.config(c) for t, c in section43(scale).items()}
    base = lab.config(SCALES[scale]["cifar10-fixed"])
    if pretrain_seed is not None:
        tasks = {t: c.replace(seed=pretrain_seed) for t, c in tasks.items()}
        base = base.replace(seed=pretrain_seed)
    seeds = FINETUNE_SEEDS[scale] if finetune_seeds is None else tuple(finetune_seeds)
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
    start = time.perf_counter()
    # one Lanczos recurrence a (task, seed), in lockstep: each step is one block product
    keys = list(replicates)
    block = torch.stack([replicates[key]["u"] for key in keys])
    steps = LANCZOS_STEPS[scale]
    runs = dict(
        zip(keys, krylov(h_g, block, steps, desc=f"Lanczos, {len(keys)} at once"))
    )
    lanczos_s = time.perf_counter() - start
    details = {
        key: {
            "finetune_accuracy": r["finetune_accuracy"],
            "finetune_solve": r["finetune_solve"],
            "seconds_finetuning_and_u": r["seconds"],
        }
        for key, r in replicates.items()
    }
    path_set = subsample(data.pretrain, PATH_CANDIDATES[scale], config.seed + 1)
    study = paired_study(
        runs, ("A", "B"), seeds, h_g, ms, data.pretrain, path_set, details
    )
    return {
        "config": {t: c.as_dict() for t, c in tasks.items()},
        "pretrain_seed": base.seed,
        "path_candidates": PATH_CANDIDATES[scale],
        **study,
        "seconds": {"lanczos": lanczos_s},
    }
