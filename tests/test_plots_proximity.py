"""The figure function the multi-stage training chapter adds to experiments.plots."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from experiments import plots  # noqa: E402


def test_proximity_sweep_draws_the_distance_and_its_two_limits():
    alphas = np.logspace(-2, 1, 4)
    ax = plots.proximity_sweep(
        alphas, 1 / (1 + alphas), title="t", unconstrained=1.0, gradient_at_w_bar=2.0
    )
    assert ax.get_xscale() == ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(labels) == 3 and "eq. 12" in labels[0] and "eq. 3" in labels[1]
    limit = ax.get_lines()[2].get_ydata()
    np.testing.assert_allclose(limit, 2.0 / (2 * alphas))
    assert any("n = 4" in t.get_text() for t in ax.texts)
    plt.close(ax.figure)


def test_proximity_sweep_rejects_bad_input():
    with pytest.raises(ValueError, match="positive"):
        plots.proximity_sweep([0.0, 1.0], [1.0, 0.5], title="t")
    with pytest.raises(ValueError, match="equal length"):
        plots.proximity_sweep([0.1, 1.0], [1.0], title="t")
    plt.close("all")
