"""The methods chapter's table and figures, built from a comparison's rows
(:func:`experiments.methods.summarize`), so that neither can drift from the results file."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

Row = Mapping[str, Any]


def _interval(row: Row, key: str) -> str:
    low, high = row[key]
    return f"[{low:.2f}, {high:.2f}]"


def row_named(rows: Sequence[Row], name: str) -> Row:
    """The row of the method called ``name``."""
    for row in rows:
        if row["method"] == name:
            return row
    raise KeyError(f"no method {name!r}; have {[r['method'] for r in rows]}")


def methods_table(rows: Sequence[Row], *, costs: bool = True) -> str:
    """Markdown: per method, Pearson's r (interval) and Spearman's rho against leave-one-out,
    the LDS (interval), and with ``costs`` the Hessian-vector products and seconds."""
    head = "| method | Pearson r vs LOO | Spearman vs LOO | LDS |"
    rule = "|---|---|---:|---|"
    if costs:
        head += " HVPs | seconds |"
        rule += "---:|---:|"
    lines = [head, rule]
    for row in rows:
        line = (
            f"| {row['method']} | {row['pearson']:.3f} {_interval(row, 'pearson_interval')} "
            f"| {row['spearman']:.3f} | "
            + (
                f"{row['lds']:.3f} {_interval(row, 'lds_interval')} |"
                if "lds" in row
                else "- |"
            )
        )
        if costs:
            line += f" {row['hessian_vector_products']:,} | {row['seconds']:.1f} |"
        lines.append(line)
    return "\n".join(lines)


def methods_figure(cases: Mapping[str, Sequence[Row]]) -> plt.Figure:
    """One panel per case: each method's Pearson r and Spearman rho against leave-one-out and
    its LDS, with the 95% intervals of r and of the LDS."""
    fig, axes = plt.subplots(
        1,
        len(cases),
        figsize=(6.2 * len(cases), 0.42 * max(map(len, cases.values())) + 1.6),
        sharex=True,
        squeeze=False,
    )
    for ax, (title, rows) in zip(axes[0], cases.items(), strict=True):
        _methods_panel(ax, rows)
        ax.set_title(title)
    axes[0][0].legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def _methods_panel(ax: Axes, rows: Sequence[Row]) -> None:
    y = np.arange(len(rows))[::-1]
    for offset, key, interval, label, marker in (
        (0.2, "pearson", "pearson_interval", "Pearson r vs LOO", "o"),
        (0.0, "spearman", None, "Spearman vs LOO", "s"),
        (-0.2, "lds", "lds_interval", "LDS (Spearman over subsets)", "D"),
    ):
        values = np.array([r.get(key, np.nan) for r in rows])
        if interval is None:
            ax.plot(values, y + offset, marker, label=label, ms=5)
            continue
        bounds = np.array([r.get(interval, [np.nan, np.nan]) for r in rows])
        ax.errorbar(
            values,
            y + offset,
            xerr=[values - bounds[:, 0], bounds[:, 1] - values],
            fmt=marker,
            ms=5,
            capsize=2,
            label=label,
        )
    ax.axvline(0, color="0.6", lw=0.8)
    ax.set_yticks(y, [r["method"] for r in rows], fontsize=8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("correlation with the ground truth")


def cost_figure(
    cases: Mapping[str, Sequence[Row]], keys: Sequence[str] = ("spearman", "lds")
) -> plt.Figure:
    """Seconds (log scale) against each of ``keys`` (a panel each), one point per method and
    case; labels alternate above and below so that neighbours stay readable."""
    names = {"lds": "LDS", "pearson": "Pearson r vs LOO", "spearman": "Spearman vs LOO"}
    fig, axes = plt.subplots(1, len(keys), figsize=(6.2 * len(keys), 4.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for marker, (title, rows) in zip("os", cases.items()):
            seconds = np.array([max(r["seconds"], 1e-3) for r in rows])
            values = np.array([r.get(key, np.nan) for r in rows])
            ax.scatter(seconds, values, marker=marker, label=title)
            for rank, i in enumerate(np.argsort(seconds)):
                ax.annotate(
                    rows[i]["method"],
                    (seconds[i], values[i]),
                    fontsize=6,
                    xytext=(4, (5, -10, 14)[rank % 3]),
                    textcoords="offset points",
                )
        ax.set_xscale("log")
        ax.set_xlabel("seconds, one torch thread (log scale)")
        ax.set_ylabel(names.get(key, key))
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig
