"""Section 4.4 end to end: does more finetuning data loosen the tie to pretraining? (Fig. 6)

Model C finetunes on 5,000 examples with W updated (the 4.1 setup, Case 2); model D on 15,000,
for 3x the finetuning steps, from the same pretraining. Every pretraining example is scored on
each model's summed test loss, and the two distributions of |score| are compared. The mechanism
is measured too: in Case 2 pretraining reaches the test loss only through the coupling
alpha ||W - W_bar||^2 (eq. 15: u = -2 alpha [v1]_W), and ||W* - W_bar|| says how far finetuning
pulled W from the pretrained embedding.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .configs import TransferConfig, section44
from .provenance import read_results, record_experiment
from .sec43 import compare_magnitudes
from .transfer import (
    TrainedTransfer,
    _rounded,
    accuracy,
    load_transfer_data,
    train_transfer,
    transfer_scores,
)

RESULTS_41 = Path(__file__).resolve().parent.parent / "book" / "results" / "sec41.json"


def distance(a: nn.Module, b: nn.Module) -> float:
    """``||a - b||``: the Euclidean distance between two modules' parameters."""
    return float(
        torch.sqrt(
            sum(
                ((p.detach().double() - q.detach().double()) ** 2).sum()
                for p, q in zip(a.parameters(), b.parameters())
            )
        )
    )


def stored_scores(config: TransferConfig, path: Path = RESULTS_41) -> list[float] | None:
    """Section 4.1's scores of ``config``'s model, where its results file holds that very config."""
    if not path.exists():
        return None
    experiments = read_results(path)["results"]["experiments"]
    for experiment in experiments.values():
        if config.is_stored_as(experiment.get("config")):
            return experiment["scores"]
    return None


def _model(config: TransferConfig, trained: TrainedTransfer, data: Any) -> dict[str, Any]:
    net = trained.net
    return {
        "config": config.as_dict(),
        "m": len(data.pretrain[1]),
        "n_test": len(data.test[1]),
        "finetune_accuracy": accuracy(net.embedding, net.finetune_head, data.test),
        "w_distance": distance(net.embedding, net.pretrained_embedding),
        "w_bar_norm": float(
            torch.sqrt(
                sum(
                    (p.detach().double() ** 2).sum()
                    for p in net.pretrained_embedding.parameters()
                )
            )
        ),
    }


def run_finetune_size(scale: str = "cpu") -> dict[str, Any]:
    """Section 4.4 at ``scale``: train C and D on one pretraining, score both, compare, as a dict.

    Where section 4.1's results file holds C's scores under the same config (C is its
    CIFAR-10 "updated" model), they are used, not recomputed: its weights are the cached ones.
    """
    configs = section44(scale)
    models: dict[str, Any] = {}
    for name, config in configs.items():
        start = time.perf_counter()
        data = load_transfer_data(config)
        source = None if name == "C" else configs["C"]
        trained = train_transfer(config, data, pretrained_by=source)
        seconds = {"training (or cache)": time.perf_counter() - start}
        models[name] = _model(config, trained, data)
        stored = stored_scores(config) if scale != "quick" else None
        start = time.perf_counter()
        if stored is not None:
            models[name]["scores"] = stored
            models[name]["scores_from"] = "book/results/sec41.json (the same config)"
        else:
            scores, report = transfer_scores(config, data, trained)
            models[name]["scores"] = _rounded(scores)
            models[name]["solves"] = dataclasses.asdict(report)
            seconds["scores"] = time.perf_counter() - start
        models[name]["seconds"] = seconds
    return {
        "config": {n: c.as_dict() for n, c in configs.items()},
        "models": models,
        "comparison": compare_magnitudes(models["C"]["scores"], models["D"]["scores"]),
    }


def reproduce_section44(
    path: str | Path, scale: str = "cpu", only: Any = None
) -> dict[str, Any]:
    """Run section 4.4 at ``scale`` and write it, with provenance, to ``path``."""
    path = Path(path)
    done = read_results(path)["results"] if path.exists() else {"experiments": {}}
    record_experiment(
        path, done, "cifar10-finetune-size", scale, lambda: run_finetune_size(scale)
    )
    return done
