"""How well predicted effects track measured ones: Pearson's r, Spearman's rho, and r's interval."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Agreement:
    """How well predicted effects track actual ones."""

    pearson_r: float
    spearman_rho: float
    n: int

    def __str__(self) -> str:
        return f"Pearson r = {self.pearson_r:.3f}, Spearman rho = {self.spearman_rho:.3f}, n = {self.n}"

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """Fisher's z interval for Pearson's r: how far a small n lets r wander.

        With 20 points, r = 0.35 is compatible with anything from about -0.1 to 0.7, which
        is why the book reports n beside every r.
        """
        if not 0 < level < 1:
            raise ValueError(f"level must lie in (0, 1), got {level}")
        if self.n < 4 or not np.isfinite(self.pearson_r):
            return float("nan"), float("nan")
        z = np.arctanh(np.clip(self.pearson_r, -1 + 1e-15, 1 - 1e-15))
        half = stats.norm.ppf(0.5 + level / 2) / np.sqrt(self.n - 3)
        return float(np.tanh(z - half)), float(np.tanh(z + half))


def agreement(
    predicted: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray
) -> Agreement:
    """Pearson's r and Spearman's rho between two equally long sequences."""
    p, a = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    if p.shape != a.shape or p.ndim != 1:
        raise ValueError(
            f"predicted and actual must be 1-D and of equal length, got {p.shape} and {a.shape}"
        )
    if len(p) < 3:
        raise ValueError(f"need at least 3 pairs for a correlation, got {len(p)}")
    if (
        np.ptp(p) == 0 or np.ptp(a) == 0
    ):  # a constant side has no correlation: say so, not warn
        return Agreement(float("nan"), float("nan"), len(p))
    return Agreement(
        float(stats.pearsonr(p, a)[0]), float(stats.spearmanr(p, a)[0]), len(p)
    )
