"""What a transfer experiment writes to its results file: JSON-ready dicts of its scores, solvers,
validation, agreements, the identity ablation (Fig. 3) and the influential pairs (Fig. 4).

Every record of scores says, per stage, which solver made them, its damping and the operator the
damping was added to (:func:`~experiments.scoring.describe_solvers`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from influence.multistage import Report

from .configs import TransferConfig
from .evaluation import accuracy, misclassified
from .scoring import describe_solvers, solvers_for, transfer_scores
from .stats import agreement
from .transfer_data import TransferData
from .transfer_training import TrainedTransfer
from .validation import Validation


def rounded(values: Tensor) -> list[float]:
    """Scores as a results file keeps them: six significant digits."""
    return [float(f"{v:.6g}") for v in values.tolist()]


def scores_record(
    config: TransferConfig, scores: Tensor, report: Report, *, identity: bool = False
) -> dict[str, Any]:
    """``scores``, the ``solves`` that made them and the ``solvers`` (damping, operator) per stage."""
    return {
        "scores": rounded(scores),
        "solves": dataclasses.asdict(report),
        "solvers": describe_solvers(solvers_for(config, identity=identity)),
    }


def agreements(validation: Validation) -> dict[str, Any]:
    """r and rho of the prediction against the raw and the controlled differences (and the drawn removals alone)."""
    out = {
        "raw": dataclasses.asdict(agreement(validation.predicted, validation.raw)),
        "controlled": dataclasses.asdict(
            agreement(validation.predicted, validation.controlled)
        ),
    }
    # removals that continued pretraining drew at least once: the others changed nothing
    seen = [j for j, d in enumerate(validation.draws) if d > 0]
    if len(seen) >= 3:
        out["controlled, drawn only"] = dataclasses.asdict(
            agreement(
                [validation.predicted[j] for j in seen],
                [validation.controlled[j] for j in seen],
            )
        )
    return out


def validation_record(
    config: TransferConfig,
    data: TransferData,
    trained: TrainedTransfer,
    scores: Tensor,
    report: Report,
    validation: Validation,
) -> dict[str, Any]:
    """One experiment of section 4.1 as its results file holds it: config, sizes, accuracies,
    scores with their solvers, the validation and its agreements."""
    net = trained.net
    return {
        "config": config.as_dict(),
        "m": len(data.pretrain[1]),
        "n_test": len(data.test[1]),
        "pretrain_accuracy": accuracy(
            net.pretrained_embedding, net.pretrain_head, data.pretrain_test
        ),
        "finetune_accuracy": accuracy(net.embedding, net.finetune_head, data.test),
        **scores_record(config, scores, report),
        "validation": validation.as_dict(),
        "agreement": agreements(validation),
    }


def identity_ablation(
    config: TransferConfig,
    data: TransferData,
    trained: TrainedTransfer,
    validation: Validation,
) -> dict[str, Any]:
    """Fig. 3: the same removals predicted with every inverse Hessian replaced by I."""
    m, n_test = len(data.pretrain[1]), len(data.test[1])
    ablation, _ = transfer_scores(config, data, trained, identity=True)
    predicted = (-ablation[torch.tensor(validation.indices)] / (m * n_test)).tolist()
    return {
        "scores": rounded(ablation),
        "solvers": describe_solvers(solvers_for(config, identity=True)),
        "predicted": predicted,
        "agreement": {
            "raw": dataclasses.asdict(agreement(predicted, validation.raw)),
            "controlled": dataclasses.asdict(agreement(predicted, validation.controlled)),
        },
    }


def influential_pairs(
    config: TransferConfig, data: TransferData, trained: TrainedTransfer, pairs: int
) -> list[dict[str, Any]]:
    """Fig. 4: ``pairs`` misclassified test points, each with its most harmful pretraining example."""
    net = trained.net
    x, y = data.test
    wrong = misclassified(net.embedding, net.finetune_head, data.test, pairs, config.seed)
    if not len(wrong):
        return []
    chosen = wrong.to(x.device)
    per_test, _ = transfer_scores(
        config, data, trained, test=(x[chosen], y[chosen]), per_test=True
    )
    with torch.no_grad():
        predicted_labels = net.finetune_head(net.embedding(x[chosen])).argmax(1)
    pretrain_labels = data.pretrain[1].cpu()
    return [
        {
            "test_index": int(t),
            "test_label": int(y[t]),
            "predicted_label": int(p),
            "pretrain_index": int(per_test[:, j].argmax()),
            "pretrain_label": int(pretrain_labels[per_test[:, j].argmax()]),
            "score": float(per_test[:, j].max()),
        }
        for j, (t, p) in enumerate(zip(wrong.tolist(), predicted_labels.tolist()))
    ]
