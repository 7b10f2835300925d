"""Section 4.4 end to end: does more finetuning data loosen the tie to pretraining? (Fig. 6)

Model C finetunes on 5,000 examples with W updated (the 4.1 setup, Case 2); model D on 15,000,
for 3x the finetuning steps, from the same pretraining. Every pretraining example is scored on
each model's summed test loss, and the two distributions of |score| are compared. The mechanism
is measured too: in Case 2 pretraining reaches the test loss only through the coupling
alpha ||W - W_bar||^2 (eq. 15: u = -2 alpha [v1]_W), and ||W* - W_bar|| says how far finetuning
pulled W from the pretrained embedding.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from .configs import TransferConfig, section44
from .evaluation import accuracy, distance  # noqa: F401 (sec44.distance: the chapter's)
from .pipeline import Lab
from .records import scores_record
from .size_study import k_damping_sweep, run_study
from .stats import paired_magnitudes
from .store import ResultsStore
from .transfer_data import TransferData
from .transfer_training import TrainedTransfer

SECTION = "sec44"
SCORES_FROM = (
    "sec41"  # C is section 4.1's CIFAR-10 "updated" model: its scores are stored there
)


def _model(
    config: TransferConfig, data: TransferData, trained: TrainedTransfer
) -> dict[str, Any]:
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


def _stored_scores(
    lab: Lab, config: TransferConfig, scale: str
) -> tuple[list[float], str] | None:
    """Section 4.1's scores of ``config``'s model, where the lab's store holds that very config."""
    if scale == "quick" or lab.store is None:
        return None
    experiment = lab.store.find(SCORES_FROM, config)
    if experiment is None:
        return None
    return experiment["scores"], f"{SCORES_FROM}.json (the same config)"


def run_finetune_size(scale: str = "cpu", lab: Lab | None = None) -> dict[str, Any]:
    """Section 4.4 at ``scale``: train C and D on one pretraining, score both, compare, as a dict.

    Where the lab's section-4.1 results hold C's scores under the same config (C is its
    CIFAR-10 "updated" model), they are used, not recomputed: its weights are the cached ones.
    """
    lab = lab or Lab()
    configs = {name: lab.config(c) for name, c in section44(scale).items()}
    models: dict[str, Any] = {}
    for name, config in configs.items():
        start = time.perf_counter()
        run = lab.run(config, pretrained_by=None if name == "C" else configs["C"])
        trained = run.trained
        seconds = {"training (or cache)": time.perf_counter() - start}
        models[name] = _model(run.config, run.data, trained)
        stored = _stored_scores(lab, config, scale)
        start = time.perf_counter()
        if stored is not None:
            models[name]["scores"], models[name]["scores_from"] = stored
        else:
            scores, report = run.scores()
            record = scores_record(config, scores, report)
            models[name].update(record)
            seconds["scores"] = time.perf_counter() - start
        models[name]["seconds"] = seconds
    return {
        "config": {n: c.as_dict() for n, c in configs.items()},
        "models": models,
        "comparison": paired_magnitudes(models["C"]["scores"], models["D"]["scores"]),
    }


FIRST_RUN = "cifar10-finetune-size"
STUDY = FIRST_RUN + "-converged"
# the ratio against the damping of K, a finetuning seed each: seed 0's models, and a third
# seed's, whose row at the study's damping is a replicate the study did not train
K_SWEEPS = {None: STUDY + "-k-damping", 2: STUDY + "-k-damping-seed-2"}


def _k_sweep(lab: Lab, scale: str, seed: int | None) -> dict[str, Any]:
    """:func:`~experiments.size_study.k_damping_sweep` on finetuning seed ``seed``, with the
    damping the stored study read added to its grid."""
    study = lab.store.results(SECTION).get("experiments", {}).get(STUDY)
    shared = () if study is None else (study["mean"]["finetune_solves"]["damping"],)
    return k_damping_sweep(scale, lab, seed, also=shared)


def reproduce_section44(
    lab: Lab | ResultsStore | str | Path, scale: str = "cpu", only: Any = None
) -> dict[str, Any]:
    """Run section 4.4 at ``scale`` and write it, with provenance, to the lab's store.

    Four experiments: the first run (``cifar10-finetune-size``, CG on eq. 16 stopped at 30
    iterations, one finetuning a model), the study with converged solves, finetuning
    replicates and the summed-F reading (``cifar10-finetune-size-converged``,
    :mod:`experiments.size_study`), and the ratio against K's damping on finetuning seeds 0
    and 2 (:data:`K_SWEEPS`). ``only`` names those to (re)run; the others stay as they
    are in the file.
    """
    lab = Lab.of(lab, SECTION)
    runs = {
        FIRST_RUN: lambda: run_finetune_size(scale, lab),
        STUDY: lambda: run_study(scale, lab),
        **{
            name: lambda seed=seed: _k_sweep(lab, scale, seed)
            for seed, name in K_SWEEPS.items()
        },
    }
    return lab.record_all(SECTION, scale, runs, only)
