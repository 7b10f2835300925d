"""The figure function the Case 1 chapter adds to experiments.plots."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from experiments import plots  # noqa: E402


def test_convergence_fits_the_order():
    h = np.geomspace(1e-1, 1e-3, 5)
    ax, slopes = plots.convergence(
        h, {"first": 3 * h, "second": 0.5 * h**2}, title="t", xlabel="x", ylabel="y"
    )
    assert slopes["first"] == pytest.approx(1.0, abs=1e-10)
    assert slopes["second"] == pytest.approx(2.0, abs=1e-10)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["first: slope 1.00", "second: slope 2.00"]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    plt.close(ax.figure)


def test_convergence_rejects_bad_input():
    with pytest.raises(ValueError, match="errors"):
        plots.convergence(
            [1e-1, 1e-2], {"a": [1.0, 0.0]}, title="t", xlabel="x", ylabel="y"
        )
    with pytest.raises(ValueError, match="steps"):
        plots.convergence([1e-1], {"a": [1.0]}, title="t", xlabel="x", ylabel="y")
    plt.close("all")
