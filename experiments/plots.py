"""The book's figures: one function a figure, so chapters and tests draw the same picture.

Every figure states its finding in the title, labels its axes with units, writes n, and
where the paper has a number, shows it beside ours. :func:`use_book_style` sets the one
seaborn style and palette of the book.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.axes import Axes

from .damping_report import stopped
from .stats import Agreement, agreement

PALETTE = "colorblind"


def use_book_style() -> None:
    """Seaborn's whitegrid theme with the book's palette."""
    sns.set_theme(style="whitegrid", palette=PALETTE, context="notebook")


def predicted_vs_actual(
    predicted: Sequence[float] | np.ndarray,
    actual: Sequence[float] | np.ndarray,
    *,
    title: str,
    xlabel: str = "actual change in test loss",
    ylabel: str = "predicted change in test loss",
    paper_r: float | None = None,
    diagonal: bool = True,
    ax: Axes | None = None,
) -> tuple[Axes, Agreement]:
    """Scatter of predicted against actual effects with a least-squares line, r, rho and n.

    ``paper_r`` writes the paper's Pearson r beside ours. ``diagonal`` draws y = x, the
    line a perfect first-order prediction would sit on (off when the axes are in different units).
    """
    ax = ax or plt.subplots(figsize=(5.2, 4.4))[1]
    p, a = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    fit = agreement(p, a)
    ax.scatter(a, p, s=22, alpha=0.75, edgecolor="white", linewidth=0.4)
    if np.ptp(a) > 0:
        slope, intercept = np.polyfit(a, p, 1)
        xs = np.linspace(a.min(), a.max(), 2)
        ax.plot(
            xs,
            slope * xs + intercept,
            color=sns.color_palette(PALETTE)[1],
            lw=1.5,
            label="least squares",
        )
    if diagonal:
        lo, hi = min(a.min(), p.min()), max(a.max(), p.max())
        ax.plot([lo, hi], [lo, hi], ls=":", color="grey", lw=1, label="y = x")
    stats_line = (
        f"ours: r = {fit.pearson_r:.3f}, rho = {fit.spearman_rho:.3f}, n = {fit.n}"
    )
    if paper_r is not None:
        stats_line += f"; paper: r = {paper_r:.2f}"
    # the numbers go under the title, where no point can hide behind them
    ax.set_title(f"{title}\n{stats_line}", fontsize=10)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    return ax, fit


def convergence(
    steps: Sequence[float] | np.ndarray,
    errors: dict[str, Sequence[float] | np.ndarray],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    ax: Axes | None = None,
) -> tuple[Axes, dict[str, float]]:
    """Log-log plot of errors against a step size, one line a series, with the fitted slope of each.

    The slope of ``log error`` against ``log step`` is the order of convergence: about 1 for a
    forward difference or a first-order remainder, about 2 for a central difference or a
    second-order remainder. Each series' slope is written in its legend entry and returned.
    """
    ax = ax or plt.subplots(figsize=(5.2, 4.4))[1]
    h = np.asarray(steps, dtype=float)
    if h.ndim != 1 or len(h) < 2 or not (h > 0).all():
        raise ValueError(f"steps must be at least 2 positive numbers, got {h}")
    slopes = {}
    for name, values in errors.items():
        e = np.asarray(values, dtype=float)
        if e.shape != h.shape or not (e > 0).all():
            raise ValueError(
                f"errors[{name!r}] must be {len(h)} positive numbers, got {e}"
            )
        slopes[name] = float(np.polyfit(np.log(h), np.log(e), 1)[0])
        ax.loglog(h, e, marker="o", lw=1.5, label=f"{name}: slope {slopes[name]:.2f}")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.text(
        0.97,
        0.03,
        f"n = {len(h)} step sizes",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
    )
    ax.legend(loc="upper left", fontsize=8)
    return ax, slopes


def _show_image(ax: Axes, image: np.ndarray) -> None:
    """An image in [0, 1], grey where it has no channel axis, with its pixels kept square."""
    ax.imshow(
        image,
        cmap="gray" if image.ndim == 2 else None,
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )


def influential_pairs(
    pairs: Sequence[tuple[np.ndarray, str, np.ndarray, str]],
    *,
    title: str,
) -> plt.Figure:
    """Fig. 4: each misclassified test image beside the pretraining image that most raised its loss.

    ``pairs`` holds ``(test_image, test_caption, pretrain_image, pretrain_caption)``, images as
    ``[H, W]`` or ``[H, W, 3]`` arrays in [0, 1].
    """
    if not pairs:
        raise ValueError("pairs: nothing to draw")
    fig, axes = plt.subplots(
        len(pairs), 2, figsize=(4.6, 2.4 * len(pairs)), squeeze=False
    )
    for row, (test_image, test_caption, pre_image, pre_caption) in zip(axes, pairs):
        for ax, image, caption, head in (
            (row[0], test_image, test_caption, "finetuning test image"),
            (row[1], pre_image, pre_caption, "most harmful pretraining image"),
        ):
            _show_image(ax, image)
            ax.set_title(head, fontsize=8)
            ax.set_xlabel(caption, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def validation_figure(
    predicted: Sequence[float],
    measured: dict[str, Sequence[float]],
    *,
    title: str,
    paper_r: float | None = None,
    diagonal: Sequence[str] = ("controlled",),
) -> tuple[plt.Figure, dict[str, Agreement]]:
    """Section 4.1's check, one panel per measure of the true effect (e.g. raw and controlled).

    Each panel plots the predicted change in mean test loss (``-score / (m n_test)``)
    against one measured change, with the paper's r beside ours. y = x is drawn on the
    panels named in ``diagonal``: only a measure that isolates the removal can sit on it.
    """
    fig, axes = plt.subplots(
        1, len(measured), figsize=(5.0 * len(measured), 4.4), squeeze=False
    )
    fits = {}
    for ax, (name, values) in zip(axes[0], measured.items()):
        _, fits[name] = predicted_vs_actual(
            predicted,
            values,
            title=name,
            paper_r=paper_r,
            ax=ax,
            diagonal=name in diagonal,
            xlabel=f"{name} change in mean test loss (nats)",
            ylabel="predicted change in mean test loss (nats)",
        )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig, fits


def proximity_sweep(
    alphas: Sequence[float] | np.ndarray,
    distances: Sequence[float] | np.ndarray,
    *,
    title: str,
    unconstrained: float | None = None,
    gradient_at_w_bar: float | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Case 2 (eq. 12): how far finetuning moves the embedding, ``||W* - W_bar||``, against alpha.

    Log axes, one marker per alpha. ``unconstrained`` is the distance with alpha = 0 (eq. 3:
    finetuning from W_bar without the proximity term), drawn as a horizontal line.
    ``gradient_at_w_bar`` is ``||dF/dW||`` at Case 1's optimum (W_bar, Theta*); the line
    ``||dF/dW|| / (2 alpha)`` it draws is where the distance goes for large alpha, since the
    stationarity of eq. 12 reads ``2 alpha (W* - W_bar) = -dF/dW(W*, Theta*)``.
    """
    a, dist = np.asarray(alphas, dtype=float), np.asarray(distances, dtype=float)
    if a.ndim != 1 or a.shape != dist.shape or len(a) < 2:
        raise ValueError(
            f"alphas and distances must be 1-D, of equal length >= 2, got {a.shape} and {dist.shape}"
        )
    if not ((a > 0).all() and (dist > 0).all()):
        raise ValueError("alphas and distances must be positive (log axes)")
    ax = ax or plt.subplots(figsize=(5.2, 4.4))[1]
    colors = sns.color_palette(PALETTE)
    ax.loglog(
        a, dist, marker="o", lw=1.5, color=colors[0], label=r"$\|W^* - \bar W\|$, eq. 12"
    )
    top = dist.max()
    if unconstrained is not None:
        ax.axhline(
            unconstrained, ls="--", lw=1, color="grey", label=r"$\alpha = 0$ (eq. 3)"
        )
        top = max(top, unconstrained)
    if gradient_at_w_bar is not None:
        ax.loglog(
            a,
            gradient_at_w_bar / (2 * a),
            ls=":",
            lw=1.5,
            color=colors[1],
            label=r"$\|\partial F/\partial W\|\,/\,2\alpha$ at Case 1's $(\bar W, \Theta^*)$",
        )
    ax.set_ylim(dist.min() / 2, top * 2)
    ax.set(
        title=title,
        xlabel=r"proximity coefficient $\alpha$ (eq. 12)",
        ylabel=r"$\|W^* - \bar W\|$ (Euclidean norm)",
    )
    ax.text(
        0.97,
        0.03,
        f"n = {len(a)} values of alpha",
        transform=ax.transAxes,
        ha="right",
        va="bottom",
        fontsize=8,
    )
    ax.legend(loc="lower left", fontsize=8)
    return ax


def score_distributions(
    scores: dict[str, Sequence[float] | np.ndarray],
    *,
    title: str,
    paper_means: dict[str, float] | None = None,
    axes: Sequence[Axes] | None = None,
    bins: int = 60,
) -> Sequence[Axes]:
    """Figs. 5 and 6: each model's pretraining scores, as the paper draws them and by magnitude.

    The left panel is the paper's: score value against probability density on a log axis.
    Multi-stage scores are heavy tailed (a few examples carry most of the mass), so the right
    panel histograms log10 |score|, where the bulk of each distribution can be seen, with a
    dashed line at each model's mean |score|, the statistic the paper compares.
    ``paper_means`` writes the paper's mean |score| beside ours in the legend.
    """
    if not scores:
        raise ValueError("scores needs at least one model")
    arrays = {k: np.asarray(v, dtype=float) for k, v in scores.items()}
    if any(a.size == 0 for a in arrays.values()):
        raise ValueError("every model needs at least one score")
    if axes is None:
        axes = plt.subplots(1, 2, figsize=(10.4, 4.0))[1]
    left, right = axes
    colors = sns.color_palette(PALETTE)
    lo = min(a.min() for a in arrays.values())
    hi = max(a.max() for a in arrays.values())
    edges = np.linspace(lo, hi, bins + 1) if hi > lo else bins
    magnitudes = {k: np.abs(a[a != 0]) for k, a in arrays.items()}
    logs = np.concatenate([np.log10(m) for m in magnitudes.values() if m.size])
    log_edges = np.linspace(logs.min(), logs.max(), bins + 1) if logs.size else bins
    for color, (name, a) in zip(colors, arrays.items()):
        mean = float(np.abs(a).mean())
        label = f"{name}: mean |score| {mean:.3g}"
        if paper_means and name in paper_means:
            label += f" (paper {paper_means[name]:.3g})"
        label += f", n = {a.size}"
        left.hist(a, bins=edges, density=True, histtype="step", lw=1.5, color=color)
        left.set_yscale("log")
        if magnitudes[name].size:
            right.hist(
                np.log10(magnitudes[name]),
                bins=log_edges,
                density=True,
                histtype="step",
                lw=1.5,
                color=color,
                label=label,
            )
        right.axvline(np.log10(mean), ls="--", lw=1, color=color)
    left.set(
        title="as in the paper",
        xlabel="influence function score",
        ylabel="probability density",
    )
    right.set(
        title="by magnitude (dashed: mean |score|)",
        xlabel=r"$\log_{10}$ |score|",
        ylabel="probability density",
    )
    # powers of ten on the left's x axis: long tick labels would collide
    left.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
    # headroom above the bars, so the legend covers none of them
    right.set_ylim(top=1.45 * right.get_ylim()[1])
    right.legend(loc="upper left", fontsize=8)
    left.figure.suptitle(title, fontsize=11)
    return axes


def image_grid(
    images: Sequence[np.ndarray],
    captions: Sequence[str],
    *,
    title: str,
    columns: int = 10,
) -> plt.Figure:
    """Images in rows of ``columns``, each with its caption: what a person inspects by eye.

    ``images`` are ``[H, W]`` or ``[H, W, 3]`` arrays in [0, 1], ``captions`` one per image.
    """
    if not len(images) or len(images) != len(captions):
        raise ValueError(
            f"images and captions: expected equal, nonzero lengths, got {len(images)} and {len(captions)}"
        )
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(1.1 * columns, 1.25 * rows + 0.4), squeeze=False
    )
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, image, caption in zip(axes.flat, images, captions):
        _show_image(ax, image)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def ladder(rungs: Sequence[dict], *, ax: Axes | None = None) -> Axes:
    """Pearson r of the inverse-Hessian scores and of the identity at each rung, with intervals.

    Each rung is ``{"label", "score": Agreement-like dict, "identity": dict or None}``,
    ordered from the strictest ground truth to the loosest.
    """
    # a rung's two labelled points need about an inch; the factor steps add rungs
    ax = ax or plt.subplots(figsize=(max(7.5, 1.3 * len(rungs)), 4.2))[1]
    colors = sns.color_palette(PALETTE)
    xs = np.arange(len(rungs))
    for shift, key, label, color in (
        (-0.12, "score", "inverse-Hessian score", colors[0]),
        (0.12, "identity", "identity (gradient dot product)", colors[1]),
    ):
        points = [(x, r[key]) for x, r in zip(xs, rungs) if r.get(key)]
        for i, (x, fit) in enumerate(points):
            a = Agreement(**fit)
            low, high = a.interval()
            ax.errorbar(
                x + shift,
                a.pearson_r,
                yerr=[[a.pearson_r - low], [high - a.pearson_r]],
                fmt="o",
                color=color,
                capsize=4,
                label=label if i == 0 else None,
            )
            ax.annotate(
                f"{a.pearson_r:.2f}\nn={a.n}",
                (x + shift, a.pearson_r),
                textcoords="offset points",
                xytext=(8 if shift > 0 else -8, 0),
                ha="left" if shift > 0 else "right",
                va="center",
                fontsize=8,
            )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(xs, [r["label"] for r in rungs], fontsize=8 if len(rungs) > 6 else None)
    ax.set_xlim(-0.6, len(rungs) - 0.4)
    ax.set_ylim(-1.05, 1.15)
    ax.set_ylabel("Pearson r, predicted vs measured\n(95% interval)")
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(
        "Where the agreement is lost: from a converged minimum to 100 Adam steps"
    )
    return ax


def damping_sweep(
    sweep: dict, *, k: int, axes: Sequence[Axes] | None = None
) -> Sequence[Axes]:
    """Left: r against the damping of each stage's solve, on H^2 (eq. 16) and on H, with the
    identity limit and Appendix B's value under both Hessian readings. Right: the Lanczos
    estimates of H_G's eigenvalues beside sqrt(lambda), the scale below which eq. 16 filters.

    ``k`` is the number of examples H_G averages (the "summed" reading divides lambda by it).
    """
    if axes is None:
        axes = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=[1.6, 1])[1]
    left, right = axes
    colors = sns.color_palette(PALETTE)
    styles = {
        ("pretrain", "H^2"): (colors[0], "-o"),
        ("pretrain", "H"): (colors[0], ":s"),
        ("finetune", "H^2"): (colors[2], "-o"),
        ("finetune", "H"): (colors[2], ":s"),
    }
    for (stage, on), (color, style) in styles.items():
        rows = [
            r
            for r in sweep["rows"]
            if (r["stage"], r["on"]) == (stage, on) and "controlled" in r
        ]
        if rows:
            left.plot(
                [r["damping"] for r in rows],
                [r["controlled"]["pearson_r"] for r in rows],
                style,
                color=color,
                ms=4,
                label=f"{stage} damping on {on}",
            )
            short = [r for r in rows if stopped(r)]
            left.plot(  # CG stopped above its tolerance: hollow
                [r["damping"] for r in short],
                [r["controlled"]["pearson_r"] for r in short],
                style[-1],
                color=color,
                mfc="white",
                ms=5,
                label="_",
            )
    left.axhline(
        sweep["identity"]["controlled"]["pearson_r"],
        color=colors[1],
        ls="--",
        lw=1,
        label="identity (no Hessian)",
    )
    ours = sweep["appendix_b"]["pretrain"]
    for value, text in (
        (ours, "Appendix B, mean H"),
        (ours / k**2, "summed H, on H$^2$"),
    ):
        left.axvline(value, color="grey", lw=0.8, ls="-.")
        left.annotate(
            text,
            (value, 0.95),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            ha="right",
            va="top",
        )
    left.set_xscale("log")
    left.axhline(0, color="grey", lw=0.6)
    left.set_xlabel("damping $\\lambda$ (mean Hessian)")
    left.set_ylabel("Pearson r against the measured changes")
    left.legend(fontsize=7, loc="best")
    left.set_title("What damping does to r (hollow: CG stopped short)")
    ritz = np.asarray(sweep["ritz_values"], dtype=float)
    right.scatter(
        np.abs(ritz),
        np.arange(len(ritz)),
        c=[colors[3] if h < 0 else colors[0] for h in ritz],
        s=14,
    )
    for value in (ours, ours / k**2):
        right.axvline(np.sqrt(value), color="grey", lw=0.8, ls="-.")
    right.set_xscale("log")
    right.set_xlabel("|Ritz value| of $H_G$ (red: negative)")
    right.set_ylabel("Ritz value, ascending")
    right.set_title("Curvature left of $\\sqrt{\\lambda}$ is filtered")
    return axes
