"""experiments.stats: magnitudes of two sets of scores, paired differences, seeds and power."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from experiments.stats import (
    Agreement,
    compare_magnitudes,
    format_r,
    mean_interval,
    paired_magnitudes,
    seeds_for_power,
)


def test_compare_magnitudes_matches_numpy_and_scipy():
    rng = np.random.default_rng(0)
    a, b = rng.standard_cauchy(300), 0.5 * rng.standard_cauchy(200)
    c = compare_magnitudes(a, b)
    assert c["mean_abs"] == pytest.approx([np.abs(a).mean(), np.abs(b).mean()])
    assert c["median_abs"] == pytest.approx([np.median(np.abs(a)), np.median(np.abs(b))])
    assert c["ratio_of_means"] == pytest.approx(np.abs(a).mean() / np.abs(b).mean())
    assert c["ks_p"] == pytest.approx(scipy_stats.ks_2samp(np.abs(a), np.abs(b)).pvalue)
    # P(|A| > |B|) counted pair by pair (no ties among continuous draws)
    pairs = (np.abs(a)[:, None] > np.abs(b)[None, :]).mean()
    assert c["p_superiority"] == pytest.approx(pairs, abs=1e-12)


def test_compare_magnitudes_ignores_signs_and_a_common_scale():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=100), 3 * rng.normal(size=120)
    c = compare_magnitudes(a, b)
    flipped = compare_magnitudes(-a, b)
    scaled = compare_magnitudes(1e4 * a, 1e4 * b)
    for key in ("ratio_of_means", "mann_whitney_p", "ks_p", "p_superiority"):
        assert flipped[key] == pytest.approx(c[key], rel=1e-12)
        assert scaled[key] == pytest.approx(c[key], rel=1e-9)
    assert scaled["mean_abs"][0] == pytest.approx(1e4 * c["mean_abs"][0])


def test_compare_magnitudes_separates_what_differs_and_not_what_does_not():
    rng = np.random.default_rng(2)
    same = compare_magnitudes(rng.normal(size=2000), rng.normal(size=2000))
    assert same["mann_whitney_p"] > 0.01 and abs(same["p_superiority"] - 0.5) < 0.03
    apart = compare_magnitudes(10 + rng.random(50), rng.random(50))
    assert apart["p_superiority"] == 1.0 and apart["mann_whitney_p"] < 1e-15


def test_correlation_difference_is_paired():
    from experiments.stats import correlation_difference

    rng = np.random.default_rng(0)
    truth = rng.normal(size=40)
    good = truth + 0.1 * rng.normal(size=40)
    worse = truth + 0.6 * rng.normal(size=40)
    d = correlation_difference(good, worse, truth)
    assert d.low < d.difference < d.high and d.low > 0  # clearly better, paired
    same = correlation_difference(good, good + 1e-9 * rng.normal(size=40), truth)
    assert abs(same.difference) < 1e-6 and same.high - same.low < 1e-6
    with pytest.raises(ValueError, match="method"):
        correlation_difference(good, worse, truth, method="kendall")


def test_mean_interval_is_students_t():
    values = [0.008875, -0.011125, -0.0055]  # sec42's three top-minus-none differences
    low, high = mean_interval(values)
    expected = scipy_stats.t.interval(
        0.95, 2, loc=np.mean(values), scale=scipy_stats.sem(values)
    )
    assert (low, high) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        mean_interval([1.0])


def test_seeds_for_power_is_the_smallest_n_that_reaches_the_power():
    sigma, delta = 0.0103, 0.0021
    n = seeds_for_power(sigma, delta)
    z = scipy_stats.norm.ppf(0.975)

    def power(k: int) -> float:
        return scipy_stats.norm.cdf(delta * np.sqrt(k) / sigma - z)

    assert power(n) >= 0.8 > power(n - 1)
    # by simulation: a z-test on n paired seeds rejects in about 80% of 20,000 experiments
    rng = np.random.default_rng(0)
    means = rng.normal(delta, sigma / np.sqrt(n), size=20_000)
    assert abs(np.mean(np.abs(means) > z * sigma / np.sqrt(n)) - 0.8) < 0.02
    assert seeds_for_power(sigma, -delta) == n


def test_format_r_shows_how_far_from_one():
    # two significant digits of 1 - r, the interval to the same decimals (Fisher's z)
    assert format_r(Agreement(0.99996, 0.99, 16)) == "0.999960 [0.999881, 0.999987]"
    assert format_r(Agreement(0.9993, 0.99, 40)) == "0.99930 [0.99867, 0.99963]"
    assert format_r(Agreement(0.42, 0.4, 20)) == "0.42 [-0.03, 0.73]"


def test_paired_magnitudes_reads_each_example_against_itself():
    rng = np.random.default_rng(3)
    b = rng.lognormal(0.0, 3.0, 4001)  # many decades between examples
    a = -2.0 * b  # every example twice as large on the first scoring, the sign flipped
    c = paired_magnitudes(a, b)
    assert c["ratio_of_means"] == pytest.approx(2.0)
    assert c["median_ratio"] == pytest.approx(2.0)
    assert c["share_larger"] == 1.0 and c["pairs"] == 4001
    # the unpaired view of the same data sees far less: examples differ by decades
    assert compare_magnitudes(a, b)["p_superiority"] < 0.6
    assert paired_magnitudes(b, a)["median_ratio"] == pytest.approx(0.5)


def test_paired_magnitudes_median_and_share_against_numpy():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=1001), rng.normal(size=1001)
    b[:10] = 0.0  # a zero has no ratio; it still counts in the share
    c = paired_magnitudes(a, b)
    keep = b != 0
    assert c["median_ratio"] == pytest.approx(
        np.median(np.abs(a[keep] / b[keep])), rel=1e-9
    )
    assert c["share_larger"] == pytest.approx(np.mean(np.abs(a) > np.abs(b)))
    assert c["pairs"] == 991
    with pytest.raises(ValueError, match="paired"):
        paired_magnitudes(a, b[:-1])
