"""Section 4.5's scores: every pretraining sentence's influence on each Table 1 tweet's loss.

:func:`multistage` sets up Case 1 (W frozen in finetuning), :func:`pretrain_damping` fixes
lambda_1 from H_G's lowest Ritz value before any score is seen, and :func:`score_sentences`
scores every sentence with :meth:`influence.MultiStage.scores` (one forward-mode JVP a batch of
sentences), timed, with the solvers it used and what their solves reported.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import torch

from influence import CG, MultiStage
from influence.spectrum import lanczos

from . import lm
from .nlp_task import Section45Config, TextData, stage_data
from .nlp_training import Trained
from .scoring import describe_solvers
from .warning_counts import counted_warnings


def multistage(config: Section45Config, trained: Trained) -> MultiStage:
    """Case 1 of the paper: W frozen in finetuning; g = :func:`lm.lm_losses`, f = cross-entropy."""
    return MultiStage(
        trained.encoder,
        trained.head,
        trained.classifier,
        pretrain_loss=lm.lm_losses,
        finetune_l2=config.finetune_l2,
        case="fixed",
    )


def pretrain_damping(
    config: Section45Config, ms: MultiStage, pretrain: Any
) -> tuple[float, list[float]]:
    """lambda_1: the larger of the floor and twice |H_G's lowest Ritz value|, so H_G + lambda_1 I is positive definite.

    The floor, 0.1, is where eq. 16's damping of 1e-2 on H^2 puts its cut: eigenvalues below
    sqrt(1e-2) are filtered there too. Fixed before any score is seen.
    """
    ritz = lanczos(
        ms.pretrain_hessian(pretrain),
        config.lanczos_steps,
        seed=config.seed,
        dtype=ms.dtype,
    )
    lowest, highest = float(ritz[0]), float(ritz[-1])
    return max(config.pretrain_damping_floor, 2 * max(0.0, -lowest)), [lowest, highest]


def sentence_losses(trained: Trained, loader: Any, order: list[int]) -> np.ndarray:
    """g(z) of every pretraining sentence, back in corpus order."""
    out = []
    with torch.no_grad():
        for x, y in loader:
            x, y = (t.to(lm.device_of(trained.encoder)) for t in (x, y))
            out.append(lm.lm_losses(trained.head(trained.encoder(x)).double(), y))
    losses = torch.cat(out).cpu().numpy()
    back = np.empty_like(losses)
    back[order] = losses
    return back


def score_sentences(
    config: Section45Config, data: TextData, trained: Trained, sample: list[int]
) -> dict[str, Any]:
    """Every pretraining sentence's score for each Table 1 tweet, by ``ms.scores(..., per_test=True)``, timed.

    ``"solvers"`` records each stage's solver, damping and operator
    (:func:`~experiments.scoring.describe_solvers`).
    """
    ms = multistage(config, trained)
    staged = stage_data(config, data, sample)
    with counted_warnings() as warned:
        damping, ritz = pretrain_damping(config, ms, staged["pretrain"])
        solvers = dict(
            pretrain_solver=CG(damping, config.cg_iters, squared=False),
            finetune_solver=CG(
                config.finetune_damping, config.finetune_cg_iters, squared=False
            ),
        )
        start = time.perf_counter()
        raw = ms.scores(
            staged["pretrain"],
            staged["finetune"],
            staged["test"],
            staged["candidates"],
            **solvers,
            per_test=True,
            batch_size=config.score_batch,
        ).cpu()
        seconds = time.perf_counter() - start
    scores = torch.empty_like(raw)
    scores[torch.tensor(staged["order"])] = raw
    report = ms.report
    return {
        "scores": scores,
        "damping": damping,
        "ritz": ritz,
        "seconds": seconds,
        "losses": sentence_losses(trained, staged["candidates"], staged["order"]),
        "solvers": describe_solvers(solvers),
        "solves": {
            "pretrain": [dataclasses.asdict(s) for s in report.pretrain_solves],
            "finetune": [dataclasses.asdict(s) for s in report.finetune_solves],
        },
        "gradient_norms": {
            "pretrain": report.pretrain_gradient_norm,
            "finetune": report.finetune_gradient_norm,
        },
        "warnings": warned,
    }
