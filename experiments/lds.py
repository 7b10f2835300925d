"""The linear datamodeling score (LDS; Park et al. 2023, the benchmark of TRAK, dattri and
kronfluence): retrain on random subsets of the training data, predict each subset's effect as
the sum of the removed examples' scores, and rank-correlate predictions with measurements.

With one summed test loss (eq. 8) there is one measurement per subset, so the LDS here is
Spearman's rho over the subsets; its interval is a bootstrap over subsets. The removal
convention is the book's: a removed example's weight goes from 1/m to 0 and the others keep
1/m (eps = -1/m each), so the first-order prediction of removing a set R is
``-sum_{z in R} score(z) / m``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor


def random_subsets(m: int, count: int, fraction: float = 0.5, *, seed: int = 0) -> Tensor:
    """``count`` random subsets of ``range(m)`` of size ``round(fraction * m)``, as a
    ``[count, m]`` boolean mask of the examples *kept*."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction: expected a value in (0, 1), got {fraction}")
    if count < 3:
        raise ValueError(f"count: expected at least 3 subsets, got {count}")
    size = round(fraction * m)
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(count, m, dtype=torch.bool)
    for row in masks:
        row[torch.randperm(m, generator=g)[:size]] = True
    return masks


def subset_predictions(scores: Tensor, kept: Tensor) -> Tensor:
    """The first-order change of each subset's retrained test loss: ``-sum(removed scores) / m``
    for scores ``[m]`` and masks ``[count, m]`` of kept examples."""
    if scores.dim() != 1 or kept.shape[-1] != scores.numel():
        raise ValueError(
            f"scores [m] and kept [count, m] must agree; got {tuple(scores.shape)} "
            f"and {tuple(kept.shape)}"
        )
    removed = (~kept).to(scores.dtype)
    return -(removed @ scores) / scores.numel()


@dataclass(frozen=True)
class LDS:
    """Spearman's rho between predicted and measured subset effects, with a bootstrap interval."""

    rho: float
    low: float
    high: float
    subsets: int

    def __str__(self) -> str:
        return f"LDS = {self.rho:.3f} [{self.low:.3f}, {self.high:.3f}] over {self.subsets} subsets"


def lds(
    predicted: Tensor | np.ndarray,
    measured: Tensor | np.ndarray,
    *,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> LDS:
    """The LDS of one method, with a percentile bootstrap interval over subsets."""
    p = np.asarray(predicted, dtype=float)
    a = np.asarray(measured, dtype=float)
    if p.shape != a.shape or p.ndim != 1 or len(p) < 3:
        raise ValueError(
            f"predicted and measured: expected equal 1-D lengths >= 3, got {p.shape}, {a.shape}"
        )
    rho = float(stats.spearmanr(p, a)[0])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        i = rng.integers(0, len(p), len(p))
        if np.ptp(p[i]) > 0 and np.ptp(a[i]) > 0:
            draws.append(stats.spearmanr(p[i], a[i])[0])
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return LDS(rho, float(low), float(high), len(p))
