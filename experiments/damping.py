"""Section 4.1's damping study: a stored experiment's removals predicted again over a grid of dampings.

Appendix B gives MNIST's damping as 1e-2 (pretraining) and 1e-8 (finetuning) and leaves three
readings open, which this sweep covers:

- on ``H^2`` (eq. 16, ``CG(operator="H2")``) or on ``H`` (``CG(operator="H")``, sound only where
  ``H + lambda I`` is positive definite, so those rows are skipped below ``-h_min``);
- on the mean or on the *sum* of the per-example Hessians over the k sampled examples. The sum
  is k times the mean, so summed H with damping lambda gives the mean-H solution with damping
  ``lambda / k`` (on H) or ``lambda / k^2`` (on H^2), divided by k. Pearson r ignores that
  factor, so one sweep over lambda on the mean Hessian covers both readings: the summed
  reading of Appendix B's 1e-2 sits at ``1e-2 / k`` or ``1e-2 / k^2`` on the same axis;
- the sign of "true loss difference": a flipped convention flips the sign of r.

The removals and their measured differences are the stored ones, so nothing is retrained.
A damping picked for its r is post hoc; the sweep shows what damping does, not which to use.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Sequence
from typing import Any

import torch

from influence import CG
from influence.spectrum import lanczos

from .pipeline import Lab, measured_weights
from .provenance import provenance
from .scoring import describe_solvers, solvers_for, transfer_scores
from .stats import agreement
from .transfer_data import subsample

# 1e-10 ... 1, sparser at the small end, where a pretraining solve on H^2 runs into its
# iteration cap whatever the damping (each such row costs 200 HVPs over 1,000 images)
DAMPINGS = (1e-10, 1e-7, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)


def damping_sweep(
    experiment: dict[str, Any],
    dampings: Sequence[float] = DAMPINGS,
    *,
    stages: Sequence[str] = ("pretrain", "finetune"),
    iters: int = 200,
    lanczos_steps: int = 40,
    lab: Lab | None = None,
) -> dict[str, Any]:
    """Pearson r of the stored removals' predictions against their measured differences, per damping.

    For each stage in ``stages`` the damping of that stage's solve runs over ``dampings`` on H^2
    and on H, while the other stage keeps the experiment's own solver. Adds the identity limit
    (every inverse Hessian replaced by I) and the Lanczos estimate of H_G's extreme eigenvalues.
    Everything runs on the device of ``lab`` (default: the stored config's), the Lanczos
    vectors on the model's.
    """
    start = time.perf_counter()
    config, data, trained, _ = measured_weights(experiment, lab=lab)
    stored = experiment["validation"]
    indices = torch.tensor(stored["indices"])
    m, n_test = len(data.pretrain[1]), len(data.test[1])
    on_device = indices.to(data.pretrain[1].device)
    candidates = (data.pretrain[0][on_device], data.pretrain[1][on_device])
    retest = experiment.get("retest")
    ms = trained.multistage(config)
    source = provenance(ms.device)  # the code and hardware the sweep ran with
    sample = subsample(data.pretrain, config.hessian_examples, config.seed)
    ritz = lanczos(ms.pretrain_hessian(sample), lanczos_steps, dtype=ms.dtype)
    lowest = float(ritz[0])

    def measured_against(scores: torch.Tensor) -> dict[str, Any]:
        predicted = (-scores / (m * n_test)).tolist()
        out = {
            "controlled": dataclasses.asdict(agreement(predicted, stored["controlled"]))
        }
        if retest is not None:
            position = {int(i): j for j, i in enumerate(stored["indices"])}
            again = retest["validation"]
            mine = [predicted[position[int(i)]] for i in again["indices"]]
            out["retest"] = dataclasses.asdict(agreement(mine, again["controlled"]))
        return out

    rows = []
    own = solvers_for(config)
    for stage in stages:
        for operator in ("H2", "H"):
            for damping in dampings:
                row: dict[str, Any] = {
                    "stage": stage,
                    "on": "H^2" if operator == "H2" else "H",
                    "damping": damping,
                }
                if operator == "H" and stage == "pretrain" and damping <= -lowest:
                    row["skipped"] = (
                        f"H_G + lambda I is not positive definite (h_min about {lowest:.3g})"
                    )
                    rows.append(row)
                    continue
                solvers = {
                    **own,
                    f"{stage}_solver": CG(damping, iters, operator=operator),
                }
                began = time.perf_counter()
                with warnings.catch_warnings():
                    # the row keeps what these say; "not positive definite" stays loud
                    for expected in ("stopped after", "has gradient norm"):
                        warnings.filterwarnings("ignore", f".*{expected}", RuntimeWarning)
                    scores, report = transfer_scores(
                        config, data, trained, candidates=candidates, solvers=solvers
                    )
                solve = (
                    report.pretrain_solves
                    if stage == "pretrain"
                    else report.finetune_solves
                )[0]
                row.update(
                    measured_against(scores),
                    solvers=describe_solvers(solvers),
                    iterations=solve.iterations,
                    relative_residual=solve.relative_residual,
                    converged=solve.converged,
                    positive_definite=solve.positive_definite,
                    seconds=time.perf_counter() - began,
                )
                rows.append(row)
    identity, _ = transfer_scores(
        config,
        data,
        trained,
        candidates=candidates,
        solvers=solvers_for(config, identity=True),
    )
    return {
        "experiment": config.dataset + "-" + config.case,
        "hessian_examples": len(sample[1]),
        "appendix_b": {
            "pretrain": config.pretrain_damping,
            "finetune": config.finetune_damping,
        },
        "solvers": describe_solvers(own),
        "rows": rows,
        "identity": measured_against(identity),
        "ritz_values": ritz.tolist(),
        "lanczos_steps": lanczos_steps,
        "minutes": (time.perf_counter() - start) / 60,
        "provenance": source,
    }
