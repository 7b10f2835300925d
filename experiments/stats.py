"""How well predicted effects track measured ones (Pearson's r, Spearman's rho, and r's
interval), how two sets of scores differ in magnitude (:func:`compare_magnitudes`), and what
a few paired seeds can show (:func:`mean_interval`, :func:`seeds_for_power`)."""

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


def compare_magnitudes(
    first: Sequence[float] | np.ndarray, second: Sequence[float] | np.ndarray
) -> dict[str, float | list[float]]:
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
        "mann_whitney_p": float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue),
        "ks_p": float(stats.ks_2samp(a, b).pvalue),
        # the probability that an |A| score drawn at random exceeds a |B| one
        "p_superiority": float(stats.mannwhitneyu(a, b).statistic / (len(a) * len(b))),
    }


def paired_magnitudes(
    first: Sequence[float] | np.ndarray, second: Sequence[float] | np.ndarray
) -> dict[str, float | list[float]]:
    """Two scorings of the same examples compared example by example, by |score|.

    Two tasks (or models) that share a pretraining score the same z through the same ``H_G``
    and the same gradient, so their scores are paired and dependent, not two samples: the
    examples are no replicates, and a two-sample test over them overstates the evidence. This
    describes the pairs; an interval belongs to the replicates (the trained models), across
    seeds. ``median_ratio`` is the median of ``|first(z)| / |second(z)|`` over the examples
    where both are nonzero, ``share_larger`` the share of examples with ``|first| > |second|``.
    """
    a = np.abs(np.asarray(first, dtype=float))
    b = np.abs(np.asarray(second, dtype=float))
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two paired 1-d arrays, got {a.shape} and {b.shape}")
    both = (a > 0) & (b > 0)
    log_ratio = np.log10(a[both] / b[both])
    return {
        "mean_abs": [float(a.mean()), float(b.mean())],
        "median_abs": [float(np.median(a)), float(np.median(b))],
        "ratio_of_means": float(a.mean() / b.mean()),
        "median_ratio": float(10 ** np.median(log_ratio)),
        "log10_ratio_quartiles": [float(q) for q in np.percentile(log_ratio, (25, 75))],
        "share_larger": float(np.mean(a > b)),
        "pairs": int(both.sum()),
    }


@dataclass(frozen=True)
class Difference:
    """How much better one predictor tracks the truth than another, on the same items."""

    difference: float  # corr(first, truth) - corr(second, truth)
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.difference:+.3f} [{self.low:+.3f}, {self.high:+.3f}], n = {self.n}"


def correlation_difference(
    first: Sequence[float] | np.ndarray,
    second: Sequence[float] | np.ndarray,
    truth: Sequence[float] | np.ndarray,
    *,
    method: str = "pearson",
    level: float = 0.95,
    resamples: int = 4000,
    seed: int = 0,
) -> Difference:
    """``corr(first, truth) - corr(second, truth)``, with a paired percentile bootstrap interval.

    The items are resampled together for both predictors, so the interval accounts for their
    sharing one truth: two predictors that agree with each other differ little even where each
    one's own interval is wide.
    """
    a, b, t = (np.asarray(v, dtype=float) for v in (first, second, truth))
    if not a.shape == b.shape == t.shape or a.ndim != 1 or len(a) < 4:
        raise ValueError(
            f"expected three equally long 1-D sequences of >= 4, got {a.shape}"
        )
    if method not in ("pearson", "spearman"):
        raise ValueError(f"method: expected 'pearson' or 'spearman', got {method!r}")
    corr = (
        (lambda x, y: stats.pearsonr(x, y)[0])
        if method == "pearson"
        else (lambda x, y: stats.spearmanr(x, y)[0])
    )
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        i = rng.integers(0, len(a), len(a))
        if min(np.ptp(a[i]), np.ptp(b[i]), np.ptp(t[i])) > 0:
            draws.append(corr(a[i], t[i]) - corr(b[i], t[i]))
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Difference(float(corr(a, t) - corr(b, t)), float(low), float(high), len(a))


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student's t interval for the mean of ``values`` (paired differences, one per seed)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        raise ValueError(f"need at least 2 values for an interval, got {len(x)}")
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def seeds_for_power(
    sigma: float, delta: float, power: float = 0.8, level: float = 0.05
) -> int:
    """The fewest paired seeds whose two-sided test at ``level`` detects a true mean difference
    ``delta`` with probability ``power``, for a per-seed standard deviation ``sigma`` taken as
    known: the smallest n with Phi(|delta| sqrt(n) / sigma - z_{1 - level/2}) >= power."""
    if sigma <= 0 or delta == 0:
        raise ValueError(f"need sigma > 0 and delta != 0, got {sigma} and {delta}")
    z = stats.norm.ppf(1 - level / 2) + stats.norm.ppf(power)
    return max(1, int(np.ceil((z * sigma / abs(delta)) ** 2)))


def format_r(a: Agreement, level: float = 0.95) -> str:
    """Pearson's r with its Fisher interval, to as many decimals as 1 - |r| needs: 0.99996 is
    not printed as 1.0000, and its interval shows how close to 1 the data allow."""
    low, high = a.interval(level)
    gap = 1 - abs(a.pearson_r)
    decimals = 2 if gap >= 0.01 else min(6, int(np.floor(-np.log10(max(gap, 1e-9)))) + 2)
    return f"{a.pearson_r:.{decimals}f} [{low:.{decimals}f}, {high:.{decimals}f}]"
