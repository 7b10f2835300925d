"""Rung 3 against the weight decay as section 4.1 reports it: a table, a figure, the facts.

Reads ``book/results/sec41_decay.json`` (``python -m tools.reproduce sec41 --decay``,
:mod:`.decay_sweep`): at each weight decay, converged leave-one-out of the examples with the
largest scores and of examples drawn at random.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from .ladder_report import converged_worst
from .stats import Agreement, format_r

GROUPS = {"top": "top-scored", "random": "drawn at random"}
Point = dict[str, Any]


def points(done: Mapping[str, Any]) -> list[Point]:
    """One row a weight decay, largest first, with each group's r, interval and size ratios."""
    out = []
    for run in done.values():
        point: Point = {"l2": run["l2"], "isolated": run["isolated"]}
        if run["isolated"]:
            push, worst = converged_worst(run)
            point |= {
                "lambda_min": run["hessian_extremes"][0],
                "lambda_max": run["hessian_extremes"][1],
                "worst_gradient": worst,
                "smallest_push": push,
            }
            k = len(run["groups"]["top"]["ratios"])
            pushes = np.asarray(run["removed_gradient_norms"]) / run["m"]
            for name, group in run["groups"].items():
                a = Agreement(**group["agreement"])
                ratios = np.asarray(group["ratios"])
                point[name] = {
                    "pushes": (pushes[:k] if name == "top" else pushes[k:]).tolist(),
                    "r": a.pearson_r,
                    "rho": a.spearman_rho,
                    "interval": a.interval(),
                    "n": a.n,
                    "identity_r": group["identity"]["pearson_r"],
                    "ratios": ratios.tolist(),
                    "median_ratio": float(np.median(ratios)),
                    "ratio_range": (float(ratios.min()), float(ratios.max())),
                }
        out.append(point)
    return sorted(out, key=lambda p: -p["l2"])


def reach(rows: Sequence[Point], scale: float = 0.1) -> dict[str, Any]:
    """How far the first order reaches, read on the push ``||grad g(z)|| / m`` over the weight
    decay ``l2``, the curvature every direction is guaranteed: every removal below ``scale``
    with its largest relative miss ``|measured / predicted - 1|``, and how many above it
    missed by more than a fifth."""
    removals = [
        (push / p["l2"], ratio)
        for p in rows
        if p["isolated"]
        for name in GROUPS
        for push, ratio in zip(p[name]["pushes"], p[name]["ratios"])
    ]
    below = [abs(r - 1) for x, r in removals if x < scale]
    above = [abs(r - 1) for x, r in removals if x >= scale]
    return {
        "scale": scale,
        "below": len(below),
        "worst_below": max(below, default=float("nan")),
        "above": len(above),
        "missed_above": sum(d > 0.2 for d in above),
        "worst_above": max(above, default=float("nan")),
    }


def table(rows: Sequence[Point]) -> str:
    """Markdown: per weight decay and group, r [interval], Spearman, measured/predicted."""
    lines = [
        "| weight decay | H_G's smallest eigenvalue | removals | Pearson r [95%] | Spearman "
        "| measured / predicted: median (range) | identity r |",
        "|---|---:|---|---|---:|---|---:|",
    ]
    for p in rows:
        if not p["isolated"]:
            lines.append(f"| {p['l2']:g} | not positive definite | | | | | |")
            continue
        for name, label in GROUPS.items():
            g = p[name]
            lines.append(
                f"| {p['l2']:g} | {p['lambda_min']:.1e} | {g['n']} {label} | "
                f"{format_r(Agreement(g['r'], g['rho'], g['n']))} | {g['rho']:.2f} | "
                f"{g['median_ratio']:.2f} ({g['ratio_range'][0]:.2f} to "
                f"{g['ratio_range'][1]:.2f}) | {g['identity_r']:.2f} |"
            )
    return "\n".join(lines)


def figure(rows: Sequence[Point]) -> plt.Figure:
    """Left: Pearson r against the weight decay, per group, with Fisher intervals. Right: each
    removal's measured / predicted change (1 where the first order holds) against its push over
    the weight decay (:func:`reach`), a cross where the measured change has the opposite sign."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    shown = [p for p in rows if p["isolated"]]
    decays = np.array([p["l2"] for p in shown])
    for k, (name, label) in enumerate(GROUPS.items()):
        r = np.array([p[name]["r"] for p in shown])
        low, high = np.array([p[name]["interval"] for p in shown]).T
        shift = 1.06 if k else 1 / 1.06  # side by side at each decay
        left.errorbar(
            decays * shift,
            r,
            yerr=[r - low, high - r],
            marker="o",
            capsize=3,
            label=f"{label}",
        )
    for j, p in enumerate(shown):
        x = np.array([u / p["l2"] for n in GROUPS for u in p[n]["pushes"]])
        ratios = np.array([v for n in GROUPS for v in p[n]["ratios"]])
        for sign, marker in ((ratios > 0, "o"), (ratios <= 0, "x")):
            right.scatter(
                x[sign],
                np.abs(ratios[sign]),
                s=18,
                alpha=0.8,
                color=f"C{j + 2}",
                marker=marker,
                label=f"weight decay {p['l2']:g}" if marker == "o" else None,
            )
    left.set(
        xscale="log",
        xlabel="weight decay",
        ylabel="Pearson r, predicted vs retrained",
        title="Agreement with converged leave-one-out",
    )
    left.legend(loc="lower right")
    right.axhline(1.0, color="0.4", lw=1, ls="--")
    right.axvline(reach(rows)["scale"], color="0.6", lw=1, ls=":")
    right.set(
        xscale="log",
        yscale="log",
        xlabel="push over weight decay, ‖∇g(z)‖ / (m λ)",
        ylabel="|measured / predicted|",
        title="Each removal against its prediction (x: opposite sign)",
    )
    right.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig
