"""Section 4.3 end to end: does pretraining data matter more to a task like its own? (Fig. 5)

One embedding is pretrained on bird vs frog. Task A finetunes a head on bird vs frog again,
task B on automobile vs deer; W is fixed and the hyperparameters are equal. Every pretraining
example is scored on each task's summed test loss, and the two distributions of |score| are
compared. The mechanism is measured too: the influence vectors u (eq. 11's bracket, pulled back
to W) and v2 = H_G^-1 u of the two tasks, their cosine, and how much curvature of H_G each u sees.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from torch import Tensor

from .configs import SCALES, TransferConfig, section43
from .evaluation import accuracy
from .pipeline import Lab
from .records import rounded
from .scoring import describe_solvers, solvers_for
from .similarity_study import run_study
from .stats import paired_magnitudes
from .store import ResultsStore
from .transfer_data import TransferData, subsample
from .transfer_training import TrainedTransfer

SECTION = "sec43"


def influence_vectors(
    config: TransferConfig, data: TransferData, trained: TrainedTransfer
) -> dict[str, Any]:
    """Algorithm 1 step by step with the library's line methods, keeping what scores() discards.

    Returns the test gradient's pullback ``u`` (line 3), ``v2 = H_G^-1 u`` (line 4), the scores
    of every pretraining example on the summed test loss (line 5, on the CPU), the Rayleigh
    quotient ``u.H_G u / u.u`` and the solves' reports. The same solvers and samples as
    :func:`experiments.scoring.transfer_scores`, so the scores are the ones it gives.
    """
    ms = trained.multistage(config)
    solvers = solvers_for(config)
    finetune = subsample(data.finetune, config.finetune_hessian_examples, config.seed)
    h_f = ms.finetune_hessian(finetune)
    h_g = ms.pretrain_hessian(
        subsample(data.pretrain, config.hessian_examples, config.seed)
    )
    test_grad = ms.test_gradient(data.test)
    v1 = ms.first_ihvp(test_grad, h_f, solvers["finetune_solver"])
    u = ms.pullback(v1, test_grad, finetune)
    v2 = ms.second_ihvp(u, h_g, solvers["pretrain_solver"])
    curvature = float(u @ h_g.matvec(u).detach() / (u @ u))
    return {
        "u": u,
        "v2": v2,
        "scores": ms.score_candidates(data.pretrain, v2).cpu(),
        "rayleigh": curvature,
        "report": ms.report,
    }


def _cosine(a: Tensor, b: Tensor) -> float:
    return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))


def run_similarity(scale: str = "cpu", lab: Lab | None = None) -> dict[str, Any]:
    """Section 4.3 at ``scale``: train both tasks on one pretraining, score, compare, as a dict."""
    lab = lab or Lab()
    configs = {task: lab.config(c) for task, c in section43(scale).items()}
    base = lab.config(SCALES[scale]["cifar10-fixed"])
    tasks: dict[str, Any] = {}
    vectors = {}
    for task, config in configs.items():
        start = time.perf_counter()
        run = lab.run(config, pretrained_by=base)
        data, trained = run.data, run.trained
        trained_s = time.perf_counter() - start
        start = time.perf_counter()
        out = influence_vectors(config, data, trained)
        vectors[task] = out
        tasks[task] = {
            "config": config.as_dict(),
            "m": len(data.pretrain[1]),
            "n_test": len(data.test[1]),
            "finetune_accuracy": accuracy(
                trained.net.embedding, trained.net.finetune_head, data.test
            ),
            "scores": rounded(out["scores"]),
            "u_norm": float(out["u"].norm()),
            "v2_norm": float(out["v2"].norm()),
            "rayleigh": out["rayleigh"],
            "solves": dataclasses.asdict(out["report"]),
            "solvers": describe_solvers(run.solvers()),
            "seconds": {
                "training (or cache)": trained_s,
                "scores": time.perf_counter() - start,
            },
        }
    return {
        "config": {t: c.as_dict() for t, c in configs.items()},
        "tasks": tasks,
        "comparison": paired_magnitudes(vectors["A"]["scores"], vectors["B"]["scores"]),
        "cosine_u": _cosine(vectors["A"]["u"], vectors["B"]["u"]),
        "cosine_v2": _cosine(vectors["A"]["v2"], vectors["B"]["v2"]),
        "pearson_scores": _cosine(
            vectors["A"]["scores"] - vectors["A"]["scores"].mean(),
            vectors["B"]["scores"] - vectors["B"]["scores"].mean(),
        ),
    }


STUDY = "cifar10-similarity-converged"
# the study again on a second pretraining, finetuned twice a task: 2 cores fit no more
SECOND_PRETRAINING = (STUDY + "-pretraining-1", 1, (None, 1))


def reproduce_section43(
    lab: Lab | ResultsStore | str | Path, scale: str = "cpu", only: Any = None
) -> dict[str, Any]:
    """Run section 4.3 at ``scale`` and write it, with provenance, to the lab's store.

    Three experiments: the first run (``cifar10-similarity``, truncated CG on eq. 16, one
    finetuning a task), the study with converged solves and finetuning replicates
    (``cifar10-similarity-converged``, :mod:`experiments.similarity_study`), and that study on
    a second pretraining (:data:`SECOND_PRETRAINING`). ``only`` names
    those to (re)run; the others stay as they are in the file.
    """
    lab = Lab.of(lab, SECTION)
    runs = {
        "cifar10-similarity": lambda: run_similarity(scale, lab),
        STUDY: lambda: run_study(scale, lab),
    }
    name, seed, finetunings = SECOND_PRETRAINING
    runs[name] = lambda: run_study(
        scale, lab, pretrain_seed=seed, finetune_seeds=finetunings
    )
    return lab.record_all(SECTION, scale, runs, only)
