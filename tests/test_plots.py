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


def test_score_distributions_draws_both_panels_and_rejects_empty_input():
    import matplotlib.pyplot as plt

    from experiments.plots import score_distributions

    rng = np.random.default_rng(0)
    scores = {"A": rng.standard_cauchy(500), "B": 0.5 * rng.standard_cauchy(500)}
    left, right = score_distributions(scores, title="t", paper_means={"A": 0.055})
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert len(labels) == 2 and "paper 0.055" in labels[0] and "n = 500" in labels[1]
    assert left.get_yscale() == "log"
    # one dashed mean line a model, at log10 of its mean |score|
    means = sorted(line.get_xdata()[0] for line in right.get_lines())
    expected = sorted(np.log10(np.abs(s).mean()) for s in scores.values())
    np.testing.assert_allclose(means, expected)
    plt.close("all")
    with pytest.raises(ValueError, match="at least one"):
        score_distributions({}, title="t")
    with pytest.raises(ValueError, match="at least one score"):
        score_distributions({"A": []}, title="t")


def test_image_grid_shows_each_image_with_its_caption_and_blanks_the_rest():
    import matplotlib.pyplot as plt

    from experiments.plots import image_grid

    rng = np.random.default_rng(0)
    images = [rng.random((4, 4, 3)) for _ in range(7)] + [rng.random((4, 4))]
    fig = image_grid(images, [f"#{i}" for i in range(8)], title="t", columns=5)
    axes = fig.axes
    assert len(axes) == 10  # two rows of five
    shown = [ax for ax in axes if ax.images]
    assert [ax.get_title() for ax in shown] == [f"#{i}" for i in range(8)]
    np.testing.assert_array_equal(shown[3].images[0].get_array(), images[3])
    plt.close("all")
    with pytest.raises(ValueError, match="equal, nonzero"):
        image_grid(images, ["only one"], title="t")
    with pytest.raises(ValueError, match="equal, nonzero"):
        image_grid([], [], title="t")
