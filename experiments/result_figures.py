"""The experiment chapters' figures of a stored run: results-file entries drawn with :mod:`experiments.plots`.

:mod:`experiments.plots` draws from arrays and knows nothing of results files; these functions
read one entry of ``book/results/*.json`` (or a live run of the same shape), pick what a figure
shows and title it. Each returns the figure; the chapter shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import ticker
from matplotlib.axes import Axes

from experiments.configs import TransferConfig
from experiments.data import CIFAR10_CLASSES
from experiments.paired_solves import pair_of, path_ratios
from experiments.paper_numbers import FIGURE, PAPER_R
from experiments.plots import (
    influential_pairs,
    predicted_vs_actual,
    score_distributions,
    validation_figure,
)
from experiments.stats import Agreement
from experiments.tables import LABEL
from experiments.transfer_data import load_transfer_data

Result = Mapping[str, Any]


def validation(
    name: str, r: Result, scale: str, against_paper: bool = True
) -> plt.Figure:
    """One section 4.1 experiment: raw and controlled differences against the prediction."""
    v = r["validation"]
    fit = r["agreement"]["controlled"]
    title = f"{FIGURE[name]}, {LABEL[name]} ({scale} scale): n = {fit['n']}"
    if against_paper:
        title += f", r = {fit['pearson_r']:.2f} vs the paper's {PAPER_R[name]:.2f}"
    fig, _ = validation_figure(
        v["predicted"],
        {"raw": v["raw"], "controlled": v["controlled"]},
        title=title,
        paper_r=PAPER_R[name] if against_paper else None,
    )
    return fig


def ablation(r: Result, scale: str) -> plt.Figure:
    """Fig. 3: the same removals scored with the inverse Hessians and with the identity."""
    v, identity = r["validation"], r["identity"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    panels = [
        ("inverse Hessians (eq. 11)", v["predicted"], PAPER_R["mnist-fixed"]),
        (
            "identity instead (Fig. 3)",
            identity["predicted"],
            PAPER_R["mnist-identity"],
        ),
    ]
    for ax, (label, predicted, paper) in zip(axes, panels):
        predicted_vs_actual(
            predicted,
            v["controlled"],
            title=label,
            paper_r=paper,
            ax=ax,
            diagonal=False,
            xlabel="controlled change in mean test loss (nats)",
            ylabel="predicted change (nats)",
        )
    fig.suptitle(
        f"MNIST, W fixed, the same {len(v['indices'])} removals ({scale} scale): "
        "does replacing the inverse Hessians by the identity change r?"
    )
    fig.tight_layout()
    return fig


def _picture(x: torch.Tensor) -> np.ndarray:
    # one channel is a grey image; three are drawn channels-last
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def pairs(name: str, r: Result, config: TransferConfig) -> plt.Figure | None:
    """Fig. 4: misclassified test images beside their most harmful pretraining image (None if no pairs)."""
    if not r.get("pairs"):
        return None
    data = load_transfer_data(config)
    names = (
        CIFAR10_CLASSES if config.dataset == "cifar10" else [str(d) for d in range(10)]
    )
    shown = []
    for p in r["pairs"]:
        truth = names[config.finetune_classes[p["test_label"]]]
        guess = names[config.finetune_classes[p["predicted_label"]]]
        origin = names[config.pretrain_classes[p["pretrain_label"]]]
        shown.append(
            (
                _picture(data.test[0][p["test_index"]]),
                f"true {truth}, predicted {guess}",
                _picture(data.pretrain[0][p["pretrain_index"]]),
                f"label {origin}, score {p['score']:.3g}",
            )
        )
    return influential_pairs(
        shown,
        title=f"{LABEL[name]}: misclassified test images and "
        "their most harmful pretraining image",
    )


def retest(name: str, r: Result, scale: str) -> plt.Figure:
    """The same removals measured under two batch orders, and the prediction against the second."""
    t, v = r["retest"], r["validation"]
    first = [v["controlled"][j] for j in t["positions"]]
    second = t["validation"]["controlled"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    predicted_vs_actual(
        second,
        first,
        title="the same removals, measured twice",
        ax=axes[0],
        xlabel="controlled change, first batch order (nats)",
        ylabel="controlled change, second order (nats)",
    )
    predicted_vs_actual(
        t["validation"]["predicted"],
        second,
        title="the prediction against the second measurement",
        ax=axes[1],
        diagonal=False,
        xlabel="controlled change, second batch order (nats)",
        ylabel="predicted change (nats)",
    )
    fig.suptitle(
        f"{LABEL[name]}: {len(first)} removals retrained with the batches of seed "
        f"{t['retrain_seed']} ({scale} scale)"
    )
    fig.tight_layout()
    return fig


def model_label(model: str, r: Result) -> str:
    """Section 4.4's name of a model: "C: 5k finetune data"."""
    size = r["models"][model]["config"]["finetune_size"]
    return f"{model}: {size / 1000:g}k finetune data"


def fig6(r: Result, scale: str, paper_means: Mapping[str, float]) -> None:
    """Fig. 6: the pretraining |score| distributions of models C and D, with the paper's means.

    ``paper_means`` maps "C" and "D" to the paper's mean |score|.
    """
    keys = {k: model_label(k, r) for k in "CD"}
    score_distributions(
        {keys[k]: r["models"][k]["scores"] for k in "CD"},
        title=f"Fig. 6 ({scale} scale): pretraining scores of models C and D",
        paper_means={keys[k]: paper_means[k] for k in "CD"},
    )
    plt.tight_layout()


def score_check(r: Result, label: str, ax: Axes) -> None:
    """Section 4.5's check: predicted scores against re-optimized central differences, on ``ax``."""
    c = r["check"]
    fit = Agreement(**c["agreement"])
    low, high = fit.interval()
    top = c["top"]
    ax.scatter(c["measured"][:top], c["predicted"][:top], label="largest |score|")
    ax.scatter(c["measured"][top:], c["predicted"][top:], label="random")
    both = np.concatenate([c["measured"], c["predicted"]])
    ax.plot([both.min(), both.max()], [both.min(), both.max()], color="grey", lw=1)
    ax.set_xlabel("re-optimized d f / d eps (central difference)")
    ax.set_ylabel("predicted score")
    ax.set_title(
        f"{label}: r = {fit.pearson_r:.3f} (95% {low:.3f} to {high:.3f}), n = {fit.n}"
    )
    ax.legend()


def solve_path(study: Result, scale: str, section: str = "4.3") -> plt.Figure:
    """A converged paired study (4.3 or 4.4): the ratio of the two arms along the solve, and the
    solves' residuals."""
    first, second = pair_of(study)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.4, 4.0))
    dampings = study["dampings"]
    styles = dict(zip(dampings, ("-", "--", ":", "-.")))
    colors = {r["finetune_seed"]: f"C{i}" for i, r in enumerate(study["replicates"])}
    for (seed, damping), points in path_ratios(study).items():
        j, ratio = zip(*points)
        left.plot(
            j,
            ratio,
            styles[damping],
            color=colors[seed],
            marker=".",
            label=f"seed {seed if seed is not None else 0}, λ = {damping:.2g}",
        )
    left.axhline(1.0, color="0.5", lw=0.8)
    left.set(
        xscale="log",
        xlabel="CG iteration (Lanczos step)",
        ylabel=f"ratio of mean |score|, {first} / {second} (path sample)",
        title="The ratio along the solve",
    )
    left.legend(fontsize=7)
    for r in study["replicates"]:
        for task, marker in ((first, "o"), (second, "s")):
            for damping in dampings:
                rows = [p for p in r["tasks"][task]["path"] if p["damping"] == damping]
                right.plot(
                    [p["iteration"] for p in rows],
                    [p["relative_residual"] for p in rows],
                    styles[damping],
                    color=colors[r["finetune_seed"]],
                    marker=marker,
                    ms=3,
                )
    right.axhline(study["tolerance"], color="k", lw=0.8, ls="--")
    right.set(
        xscale="log",
        yscale="log",
        xlabel="CG iteration (Lanczos step)",
        ylabel="relative residual",
        title=f"Residuals (circles {first}, squares {second}); "
        f"tolerance {study['tolerance']:g}",
    )
    for ax in (left, right):  # plain iteration numbers on the log axis, not 2 x 10^0
        ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    fig.suptitle(f"Section {section} with converged solves ({scale} scale)")
    fig.tight_layout()
    return fig


def k_damping_ratio(
    sweeps: Mapping[Any, Result], study: Result, paper_ratio: float, scale: str
) -> plt.Figure:
    """Section 4.4's ratio C/D against line 2's damping lambda_K, a line a finetuning seed
    (:func:`experiments.size_study.k_damping_sweep`), beside the study's seeds at its one
    lambda_K; the coupling 2 alpha and the paper's ratio are marked."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, (seed, sweep) in enumerate(sweeps.items()):
        rows = sweep["rows"]
        ax.plot(
            [r["k_damping"] for r in rows],
            [r["comparison"]["ratio_of_means"] for r in rows],
            "-o",
            color=f"C{i}",
            label=f"seed {seed or 0}, λ_K swept (H_G at λ = {sweep['h_g']['damping']:.3g})",
        )
        for r in rows:
            if not r["k_converged"]:
                ax.plot(r["k_damping"], r["comparison"]["ratio_of_means"], "x", color="k")
    lam_k = study["finetune_solves"]["damping"]
    for r in study["replicates"]:
        ax.plot(
            lam_k,
            r["comparison"]["ratio_of_means"],
            "s",
            mfc="none",
            color="0.3",
            label=f"the study, seed {r['finetune_seed'] or 0}",
        )
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.axhline(paper_ratio, color="C3", lw=0.8, ls="--", label=f"paper {paper_ratio:.2f}")
    ax.axvline(study["finetune_solves"]["coupling_2alpha"], color="0.5", ls=":", lw=0.8)
    ax.text(
        study["finetune_solves"]["coupling_2alpha"],
        ax.get_ylim()[1],
        " 2α",
        va="top",
        fontsize=8,
    )
    ax.set(
        xscale="log",
        xlabel="damping of K, λ_K (x: a solve short of the tolerance)",
        ylabel="ratio of mean |score|, C / D",
        title=f"Fig. 6's ratio against line 2's damping ({scale} scale)",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
