"""experiments.stats.Agreement: the correlations every validation figure reports."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from experiments.plots import Agreement, agreement


def test_interval_matches_scipys_fisher_interval():
    rng = np.random.default_rng(0)
    x = rng.normal(size=20)
    y = 0.4 * x + rng.normal(size=20)
    fit = agreement(x, y)
    expected = stats.pearsonr(x, y).confidence_interval(confidence_level=0.9)
    np.testing.assert_allclose(
        fit.interval(0.9), (expected.low, expected.high), rtol=1e-12
    )
    low, high = fit.interval()
    assert low < fit.pearson_r < high


def test_interval_narrows_as_n_grows_and_is_undefined_for_tiny_n():
    assert np.diff(Agreement(0.35, 0.3, 200).interval()) < np.diff(
        Agreement(0.35, 0.3, 20).interval()
    )
    assert all(np.isnan(Agreement(0.5, 0.5, 3).interval()))
    with pytest.raises(ValueError, match="level"):
        Agreement(0.5, 0.5, 10).interval(1.5)
