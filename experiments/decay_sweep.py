"""Does rung 3's agreement rest on its weight decay? Converged leave-one-out against l2.

Rung 3 (:mod:`.converged_loo`) retrains to convergence and finds r = 0.999 at a weight decay
of 0.03. Theorem 1 is a first-order prediction: removing ``z`` moves G by ``-g(z)/m``, and the
score predicts the test loss's change along the tangent at the optimum. The weight decay sets
how curved G is around its minimum, and so how far that tangent holds. This module reruns rung
3, with m = 600 pretraining images, at smaller weight decays and measures the agreement
separately for the examples with the largest scores (whose removal moves the optimum furthest)
and for examples drawn at random.

The removal convention is rung 3's: the removed example's weight drops to 0 and the others keep
``1/m`` (G - g(z)/m, eps = -1/m in eq. 9), so the prediction is ``-score / m``. Averaging over
the other ``m - 1`` instead would add ``mean(score) / m`` to every prediction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from .converged_loo import ConvergedConfig, converged_loo
from .stats import agreement

DECAYS = (3e-2, 1e-2, 1e-3)  # rung 3's own, then down to Appendix-like values


@dataclass(frozen=True)
class DecayConfig:
    """The sweep: rung 3's network and data at each weight decay of ``decays``."""

    decays: tuple[float, ...] = DECAYS
    per_group: int = 8  # removals of the top-scored group, and as many random ones
    # rung 3 with m = 600 instead of 2,000: each removal pushes 3.3 times harder, and the
    # top-scored removals, whose re-optimization Newton's chord cannot finish and L-BFGS
    # takes thousands of steps over, fit in an hour of two cores
    converged: ConvergedConfig = ConvergedConfig(pretrain_size=600)
    seed: int = 0  # the random group's draw

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def top_and_random(scores: Tensor, k: int, seed: int = 0) -> list[int]:
    """The ``k`` examples with the largest ``|score|``, then ``k`` drawn at random from the rest."""
    if not 3 <= k <= len(scores) // 2:
        raise ValueError(f"k: expected 3 to {len(scores) // 2}, got {k}")
    top = scores.abs().argsort(descending=True)[:k].tolist()
    rest = np.setdiff1d(np.arange(len(scores)), top)
    drawn = np.random.default_rng(seed).choice(rest, size=k, replace=False)
    return [int(i) for i in top] + [int(i) for i in drawn]


def size_ratios(predicted: Sequence[float], measured: Sequence[float]) -> list[float]:
    """measured / predicted for each removal: 1 where the first-order prediction holds."""
    return [a / p if p != 0 else float("nan") for p, a in zip(predicted, measured)]


def decay_point(l2: float, config: DecayConfig) -> dict[str, Any]:
    """Rung 3 at weight decay ``l2``: converged leave-one-out of the top-scored and random
    groups, with each group's agreement and size ratios. Where H_G is not positive definite at
    the optimum there is no isolated minimum to linearize around; that is recorded, not raised.
    """
    k = config.per_group
    run_config = dataclasses.replace(config.converged, l2=l2, removals=k)
    try:
        run = converged_loo(
            run_config, choose=lambda s, n: top_and_random(s, n, config.seed)
        )
    except RuntimeError as error:  # converged_optimum: not an isolated minimum
        return {"l2": l2, "isolated": False, "error": str(error)}
    groups = {"top": slice(0, k), "random": slice(k, 2 * k)}
    run["l2"], run["isolated"] = l2, True
    run["groups"] = {
        name: {
            "agreement": dataclasses.asdict(
                agreement(run["predicted"][part], run["measured"][part])
            ),
            "identity": dataclasses.asdict(
                agreement(run["identity_predicted"][part], run["measured"][part])
            ),
            "ratios": size_ratios(run["predicted"][part], run["measured"][part]),
        }
        for name, part in groups.items()
    }
    return run
