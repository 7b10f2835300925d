"""experiments.diagrams.pipeline_figure: its labelled boxes and two highlighted paths."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from experiments.diagrams import BOXES, pipeline_figure  # noqa: E402


@pytest.fixture
def ax():
    ax = pipeline_figure()
    yield ax
    plt.close(ax.figure)


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_returns_the_axes_it_draws_on():
    fig, given = plt.subplots()
    try:
        assert pipeline_figure(given) is given
    finally:
        plt.close(fig)


def test_every_stage_has_its_labelled_box(ax):
    boxes = {p.get_gid() for p in ax.patches if isinstance(p, FancyBboxPatch)}
    assert boxes == {f"box-{name}" for name in ("z", "W", "U", "g", "x", "Theta", "f")}
    texts = "\n".join(_texts(ax))
    for words in (
        "pretraining data $z$",
        "embedding $W$",
        "$\\bar W$",
        "pretraining head $U$",
        "$g(z, W, U)$",
        "finetuning data $x$",
        "finetuning head $\\Theta$",
        "$f(x, W, \\Theta)$",
        "$f(x_t, W, \\Theta^*)$",
    ):
        assert words in texts, f"no label {words!r}"
    assert len(BOXES) == 7


def test_two_highlighted_paths_in_two_colour_blind_safe_colours(ax):
    arrows = {
        p.get_gid(): p
        for p in ax.patches
        if isinstance(p, FancyArrowPatch) and p.get_gid()
    }
    assert {"path-z", "path-a", "path-b", "path-b2"} <= set(arrows)
    palette = sns.color_palette("colorblind")
    a, b = (
        to_rgb(arrows["path-a"].get_edgecolor()),
        to_rgb(arrows["path-b"].get_edgecolor()),
    )
    assert a == pytest.approx(palette[0]) and b == pytest.approx(palette[1])
    assert to_rgb(arrows["path-b2"].get_edgecolor()) == pytest.approx(b)
    plain = [p for p in ax.patches if isinstance(p, FancyArrowPatch) and not p.get_gid()]
    assert plain and all(
        p.get_linewidth() < arrows["path-a"].get_linewidth() for p in plain
    )
    assert {"(a)", "(b)"} <= set(_texts(ax))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert (
        len(legend) == 2 and legend[0].startswith("(a)") and legend[1].startswith("(b)")
    )
    assert "re-adapts" in legend[1] and "\\partial f/\\partial W" in legend[0]


def test_draws_without_error_and_has_no_axis_frame(ax):
    ax.figure.canvas.draw()
    assert not ax.axison and "eq. 6" in ax.get_title()
