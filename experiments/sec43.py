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

import numpy as np
from scipy import stats as scipy_stats
from torch import Tensor

from influence import CG

from .configs import SCALES, TransferConfig, section43
from .provenance import read_results, record_experiment
from .transfer import (
    TrainedTransfer,
    TransferData,
    _rounded,
    accuracy,
    load_transfer_data,
    subsample,
    train_transfer,
)


def influence_vectors(
    config: TransferConfig, data: TransferData, trained: TrainedTransfer
) -> dict[str, Any]:
    """Algorithm 1 step by step with the library's line methods, keeping what scores() discards.

    Returns the test gradient's pullback ``u`` (line 3), ``v2 = H_G^-1 u`` (line 4), the scores
    of every pretraining example on the summed test loss (line 5), the Rayleigh quotient
    ``u.H_G u / u.u`` and the solves' reports. The same solvers and samples as
    :func:`experiments.transfer.transfer_scores`, so the scores are the ones it gives.
    """
    ms = trained.multistage(config)
    finetune = subsample(data.finetune, config.finetune_hessian_examples, config.seed)
    h_f = ms.finetune_hessian(finetune)
    h_g = ms.pretrain_hessian(
        subsample(data.pretrain, config.hessian_examples, config.seed)
    )
    test_grad = ms.test_gradient(data.test)
    v1 = ms.first_ihvp(test_grad, h_f, CG(config.finetune_damping, config.cg_iters))
    u = ms.pullback(v1, test_grad, finetune)
    v2 = ms.second_ihvp(u, h_g, CG(config.pretrain_damping, config.cg_iters))
    curvature = float(u @ h_g.matvec(u).detach() / (u @ u))
    return {
        "u": u,
        "v2": v2,
        "scores": ms.score_candidates(data.pretrain, v2),
        "rayleigh": curvature,
        "report": ms.report,
    }


def _cosine(a: Tensor, b: Tensor) -> float:
    return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))


def compare_magnitudes(first: Tensor | list, second: Tensor | list) -> dict[str, float]:
    """Mean |score| of each, their ratio, and two-sample tests that the |scores| differ.

    Mann-Whitney U asks whether one distribution of |score| tends to lie above the other;
    Kolmogorov-Smirnov whether they differ at all. Both are rank tests, so the scale of the
    scores (m, n_test, the loss normalization) does not enter them.
    """
    a = np.abs(np.asarray(first, dtype=float))
    b = np.abs(np.asarray(second, dtype=float))
    return {
        "mean_abs": [float(a.mean()), float(b.mean())],
        "median_abs": [float(np.median(a)), float(np.median(b))],
        "ratio_of_means": float(a.mean() / b.mean()),
        "mann_whitney_p": float(
            scipy_stats.mannwhitneyu(a, b, alternative="two-sided").pvalue
        ),
        "ks_p": float(scipy_stats.ks_2samp(a, b).pvalue),
        # the probability that an |A| score drawn at random exceeds a |B| one
        "p_superiority": float(
            scipy_stats.mannwhitneyu(a, b).statistic / (len(a) * len(b))
        ),
    }


def run_similarity(scale: str = "cpu") -> dict[str, Any]:
    """Section 4.3 at ``scale``: train both tasks on one pretraining, score, compare, as a dict."""
    configs = section43(scale)
    base = SCALES[scale]["cifar10-fixed"]
    tasks: dict[str, Any] = {}
    vectors = {}
    for task, config in configs.items():
        start = time.perf_counter()
        data = load_transfer_data(config)
        trained = train_transfer(config, data, pretrained_by=base)
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
            "scores": _rounded(out["scores"]),
            "u_norm": float(out["u"].norm()),
            "v2_norm": float(out["v2"].norm()),
            "rayleigh": out["rayleigh"],
            "solves": dataclasses.asdict(out["report"]),
            "seconds": {
                "training (or cache)": trained_s,
                "scores": time.perf_counter() - start,
            },
        }
    return {
        "config": {t: c.as_dict() for t, c in configs.items()},
        "tasks": tasks,
        "comparison": compare_magnitudes(vectors["A"]["scores"], vectors["B"]["scores"]),
        "cosine_u": _cosine(vectors["A"]["u"], vectors["B"]["u"]),
        "cosine_v2": _cosine(vectors["A"]["v2"], vectors["B"]["v2"]),
        "pearson_scores": _cosine(
            vectors["A"]["scores"] - vectors["A"]["scores"].mean(),
            vectors["B"]["scores"] - vectors["B"]["scores"].mean(),
        ),
    }


def reproduce_section43(
    path: str | Path, scale: str = "cpu", only: Any = None
) -> dict[str, Any]:
    """Run section 4.3 at ``scale`` and write it, with provenance, to ``path``."""
    path = Path(path)
    done = read_results(path)["results"] if path.exists() else {"experiments": {}}
    record_experiment(
        path, done, "cifar10-similarity", scale, lambda: run_similarity(scale)
    )
    return done
