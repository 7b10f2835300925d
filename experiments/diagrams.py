"""Diagrams of the book, drawn by code so that they stay in step with the text.

`pipeline_figure` draws the paper's Fig. 1: the two stages of training, which share the
embedding W, and the two paths of eq. 6 by which a pretraining example z reaches the test
loss of the finetuned model. Only matplotlib patches, arrows and text are used.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

__all__ = ["BOXES", "PATHS", "pipeline_figure"]

# name -> (centre x, centre y, label); axes coordinates, the axes spanning [0, 1] x [0, 1]
BOXES: dict[str, tuple[float, float, str]] = {
    "z": (0.10, 0.80, "pretraining data $z$\n($m$ examples)"),
    "W": (0.36, 0.55, "embedding $W$\n(pretrained: $\\bar W$)"),
    "U": (0.62, 0.80, "pretraining head $U$"),
    "g": (0.88, 0.80, "pretraining loss\n$g(z, W, U)$"),
    "x": (0.10, 0.30, "finetuning data $x$\n($n$ examples)"),
    "Theta": (0.62, 0.30, "finetuning head $\\Theta$\n(finetuned: $\\Theta^*$)"),
    "f": (0.88, 0.30, "loss $f(x, W, \\Theta)$;\ntest: $f(x_t, W, \\Theta^*)$"),
}
# the two highlighted paths of eq. 6: gid -> legend label
PATHS: dict[str, str] = {
    "path-a": "(a) $z \\to \\bar W \\to f$: the finetuned model uses $\\bar W$ directly "
    "($\\partial f/\\partial W$ term)",
    "path-b": "(b) $z \\to \\bar W \\to \\Theta^* \\to f$: the head re-adapts "
    "($\\partial f/\\partial\\Theta \\cdot d\\Theta^*/d\\epsilon$ term)",
}
_WIDTH, _HEIGHT = 0.19, 0.14


def _edge(name: str, side: str) -> tuple[float, float]:
    """The middle of one side ('left', 'right', 'top', 'bottom') of a box."""
    x, y, _ = BOXES[name]
    dx = {"left": -_WIDTH / 2, "right": _WIDTH / 2}.get(side, 0.0)
    dy = {"top": _HEIGHT / 2, "bottom": -_HEIGHT / 2}.get(side, 0.0)
    return x + dx, y + dy


def _arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    color: str | tuple[float, float, float],
    width: float = 1.2,
    rad: float = 0.0,
    style: str = "-",
    gid: str | None = None,
) -> FancyArrowPatch:
    arrow = FancyArrowPatch(
        start,
        end,
        transform=ax.transAxes,
        arrowstyle="-|>",
        mutation_scale=14,
        color=color,
        linewidth=width,
        linestyle=style,
        connectionstyle=f"arc3,rad={rad}",
        shrinkA=2,
        shrinkB=2,
        zorder=3 if gid else 2,
    )
    if gid:
        arrow.set_gid(gid)
    ax.add_patch(arrow)
    return arrow


def pipeline_figure(ax: Axes | None = None) -> Axes:
    """Draw the two-stage pipeline of the paper's Fig. 1 and the two paths of eq. 6.

    Pretraining runs the data z through the embedding W and the head U into the loss
    g; finetuning runs the data x through the same W and a new head Theta into the
    loss f.
    Upweighting z moves the pretrained embedding W_bar (the dark arrow), and from
    there the test loss f(x_t) changes along two highlighted paths: (a) directly,
    because the finetuned model uses W_bar, and (b) through the head Theta*, which
    finetuning re-adapts to the moved embedding. The boxes are patches with gid
    ``box-<name>``, the paths arrows with gid ``path-a`` and ``path-b``; colours come
    from seaborn's colour-blind-safe palette.

    Args:
        ax: the axes to draw on; a new 9 x 4.6 inch figure when None.

    Returns:
        The axes, with its frame and ticks switched off.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 4.6))
    palette = sns.color_palette("colorblind")
    stage_colour = {"z": palette[7], "U": palette[7], "g": palette[7], "W": palette[4]}
    for name, (x, y, label) in BOXES.items():
        box = FancyBboxPatch(
            (x - _WIDTH / 2, y - _HEIGHT / 2),
            _WIDTH,
            _HEIGHT,
            boxstyle="round,pad=0.01,rounding_size=0.02",
            transform=ax.transAxes,
            facecolor=(*stage_colour.get(name, palette[9]), 0.18),
            edgecolor=stage_colour.get(name, palette[9]),
            linewidth=1.5,
            zorder=1,
        )
        box.set_gid(f"box-{name}")
        ax.add_patch(box)
        ax.text(
            x,
            y,
            label,
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=9,
            zorder=4,
        )

    grey = "0.45"
    _arrow(ax, _edge("x", "right"), _edge("W", "left"), grey)  # finetuning data enter W
    _arrow(ax, _edge("W", "right"), _edge("U", "left"), grey)
    _arrow(ax, _edge("U", "right"), _edge("g", "left"), grey)
    # upweighting z by epsilon moves the pretrained embedding (eq. 9)
    _arrow(ax, _edge("z", "right"), _edge("W", "left"), "black", width=2.6, gid="path-z")
    ax.text(
        0.215,
        0.74,
        "upweight $z$ by $\\epsilon$:\n$\\bar W$ moves (eq. 9)",
        transform=ax.transAxes,
        fontsize=8,
        ha="left",
        va="bottom",
    )
    # (a): the finetuned model uses W_bar directly
    _arrow(
        ax,
        _edge("W", "right"),
        (0.86, _edge("f", "top")[1]),
        palette[0],
        width=2.6,
        rad=-0.15,
        gid="path-a",
    )
    ax.text(
        0.66,
        0.56,
        "(a)",
        transform=ax.transAxes,
        color=palette[0],
        fontsize=11,
        fontweight="bold",
        ha="center",
        va="center",
    )
    # (b): the head re-adapts to the moved embedding, then reaches the test loss
    _arrow(
        ax,
        (0.36, _edge("W", "bottom")[1]),
        _edge("Theta", "left"),
        palette[1],
        width=2.6,
        rad=0.25,
        style="--",
        gid="path-b",
    )
    _arrow(
        ax,
        _edge("Theta", "right"),
        _edge("f", "left"),
        palette[1],
        width=2.6,
        style="--",
        gid="path-b2",
    )
    ax.text(
        0.44,
        0.27,
        "(b)",
        transform=ax.transAxes,
        color=palette[1],
        fontsize=11,
        fontweight="bold",
        ha="center",
        va="center",
    )
    ax.text(
        0.02,
        0.97,
        "pretraining: minimize $G(W, U)$ (eq. 1)",
        transform=ax.transAxes,
        fontsize=9,
        style="italic",
        va="top",
    )
    ax.text(
        0.02,
        0.08,
        "finetuning: minimize $F(\\bar W, \\Theta)$ (eq. 2; Case 2: also $W$)",
        transform=ax.transAxes,
        fontsize=9,
        style="italic",
        va="bottom",
    )

    handles = [
        Line2D([], [], color=palette[0], linewidth=2.6),
        Line2D([], [], color=palette[1], linewidth=2.6, linestyle="--"),
    ]
    ax.legend(
        handles,
        list(PATHS.values()),
        loc="lower center",
        bbox_to_anchor=(0.5, -0.16),
        fontsize=8.5,
        frameon=False,
        handlelength=2.5,
    )
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.set_title(
        "Two stages share $W$; a pretraining example $z$ reaches the test loss "
        "by two paths (eq. 6)",
        fontsize=10,
    )
    ax.axis("off")
    return ax
