"""The ladder of ground truths as section 4.1 reports it: its rungs, its table and what each rung measured.

Reads ``book/results/sec41_ladder.json`` (rungs 3 and 2) beside ``sec41.json`` (rung 1, Appendix B).
The numbers come from :mod:`experiments.diagnostics`; the chapter asserts the claims the text makes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from experiments import factors_report
from experiments.diagnostics import size_gap, stationarity
from experiments.stats import Agreement, agreement, format_r

Run = Mapping[str, Any]

# the chapter's own targets, on MNIST in Case 1; Case 2 and CIFAR-10 run at the scale 2 cores
# allow, and their sizes are read beside their r
TARGETS = {"converged": 0.95, "proximal": 0.9}

# the rungs measured in sec41_ladder.json, strictest first: how the figure labels each, which
# ground truth it is and on which network
MEASURED_RUNGS = (
    {
        "key": "converged",
        "label": "3: converged\nleave-one-out",
        "truth": "converged leave-one-out",
        "net": "small CNN, float64",
    },
    {
        "key": "proximal",
        "label": "2: proximal\nresponse",
        "truth": "proximal response, central differences",
        "net": "Table A",
    },
    {
        "key": "proximal-updated",
        "label": "2: proximal,\nCase 2",
        "truth": "proximal response, W updated (eq. 12)",
        "net": "Table A",
    },
    {
        "key": "proximal-cifar10",
        "label": "2: proximal,\nCIFAR-10",
        "truth": "proximal response, CIFAR-10, W fixed",
        "net": "Table A (CIFAR-10)",
    },
)

# what each rung-2 run is, for its paragraph
PROXIMAL_RUNS = {
    "proximal": "the stored MNIST network, W fixed",
    "proximal-updated": "the same pretraining and removals, finetuned with W updated (eq. 12)",
    "proximal-cifar10": "the CIFAR-10 network, W fixed",
}


def rungs(
    ladder: Mapping[str, Run],
    rung1: Run,
    mean_of_orders: Mapping[str, Any],
    factors: Mapping[str, Run] | None = None,
) -> list[dict]:
    """Every rung with its scores' and the identity's agreement, strictest first.

    Rung 1 appears twice: against one batch order of all removals, and against the mean of
    the k orders measured for the retested removals (``experiments.sec41.mean_of_orders``).
    ``factors`` (``sec41_factors.json``) adds, after rung 3, the steps that change one of its
    differences from rung 1 (:func:`experiments.factors_report.steps`).
    """
    k = mean_of_orders["orders"]
    measured = [
        {
            **r,
            "score": ladder[r["key"]]["agreement"],
            "identity": ladder[r["key"]]["identity"],
            "size_gap": size_gap(ladder[r["key"]]),
        }
        for r in MEASURED_RUNGS
        if r["key"] in ladder
    ]
    if factors:
        after = sum(r["key"] == "converged" for r in measured)
        measured[after:after] = factors_report.steps(factors)
    v = rung1["validation"]
    return measured + [
        {
            "key": "appendix-mean",
            "label": f"1: Appendix B,\nmean of {k} orders",
            "truth": f"100 + 100 Adam steps, mean of {k} batch orders",
            "net": "Table A",
            **mean_of_orders,
        },
        {
            "key": "appendix",
            "label": "1: Appendix B,\none order",
            "truth": "100 + 100 Adam steps, one batch order",
            "net": "Table A",
            "score": rung1["agreement"]["controlled"],
            "identity": rung1["identity"]["agreement"]["controlled"],
            "size_gap": size_gap(
                {"predicted": v["predicted"], "measured": v["controlled"]}
            ),
        },
    ]


def table(rows: list[dict], ladder: Mapping[str, Run]) -> str:
    """The Markdown table of the rungs: r with its interval, rho, size gap
    ``||measured - predicted|| / ||predicted||``, identity, target."""
    out = [
        "| rung | ground truth | network | n | r [95% interval] | Spearman rho | "
        "size gap | identity r | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        a = Agreement(**r["score"])
        target = TARGETS.get(r["key"])
        gap = f"{r['size_gap']:.1%}" if "size_gap" in r else "-"
        met = (
            f"{target} ({'met' if a.pearson_r >= target else 'missed'})"
            if target
            else "-"
        )
        out.append(
            f"| {r['label'].replace(chr(10), ' ')} | {r['truth']} | {r['net']} | {a.n} | "
            f"{format_r(a)} | {a.spearman_rho:.2f} | "
            f"{gap} | {r['identity']['pearson_r']:.2f} | {met} |"
        )
    return "\n".join(out)


def converged_worst(c: Run) -> tuple[float, float]:
    """Rung 3's smallest push ||grad g(z)|| / m and the largest gradient norm any retraining ended at."""
    push = min(c["removed_gradient_norms"]) / c["m"]
    worst = max(max(pair) for pair in c["retrained_gradient_norms"])
    return push, worst


def converged_paragraph(c: Run) -> str:
    """What rung 3, converged leave-one-out, ran and what the scores reach against it."""
    push, worst = converged_worst(c)
    return (
        f"**Rung 3.** {c['m']:,} pretraining images, {c['parameters']['pretraining']} + "
        f"{c['parameters']['finetuning']} parameters, weight decay "
        f"{c['config']['l2']}. Every "
        f"retraining ended at a gradient norm of at most {worst:.0e}, below a "
        "thousandth of the "
        f"smallest push $\\lVert\\nabla g(z)\\rVert/m$ = {push:.1e}; $H_G$'s "
        "eigenvalues run "
        f"from {c['hessian_extremes'][0]:.1e} to {c['hessian_extremes'][1]:.2f}. "
        "Against these "
        f"{c['agreement']['n']} converged leave-one-out retrainings the scores reach "
        f"r = {format_r(Agreement(**c['agreement']))}, the identity "
        f"{c['identity']['pearson_r']:.2f}; in size the measured changes differ from "
        f"the predicted by {size_gap(c):.1%} in relative norm. "
        + factors_report.networks_sentence(tuple(c["config"]["channels"]))
        + " The prediction is first order: each removal sets its "
        "example's weight to 0 and keeps the others at 1/m."
    )


def linearity(p: Run) -> list[float]:
    """How far halving eps moves each central difference measured twice, relative to itself."""
    half = np.array(p["measured_at_half_eps"])
    full_eps = np.array(p["measured"][: len(half)])
    with np.errstate(divide="ignore", invalid="ignore"):
        return (np.abs(half - full_eps) / np.abs(full_eps)).tolist()


def effective(p: Run) -> dict[str, Any]:
    """Rung 2's removals whose push ``eps ||grad g(z)||`` exceeds the largest gradient norm stage
    1 stopped at (the floor below which a response is noise), and the agreement over those."""
    pushes = np.array(p["eps_per_removal"]) * np.array(p["removed_gradient_norms"])
    floor = float(np.array(p["response_gradient_norms"])[:, [0, 2]].max())
    above = pushes > floor
    measured = np.array(p["measured"])
    out = {
        "floor": floor,
        "at_floor": int((~above).sum()),
        "zeros": int((measured == 0).sum()),
        "n": int(above.sum()),
    }
    if out["n"] >= 3:
        out["agreement"] = agreement(np.array(p["predicted"])[above], measured[above])
    return out


def without_top(p: Run) -> tuple[Agreement, Agreement]:
    """The scores' and the identity's agreement without the removal of largest prediction."""
    predicted, measured = np.array(p["predicted"]), np.array(p["measured"])
    keep = np.arange(len(predicted)) != np.abs(predicted).argmax()
    identity = np.array(p["identity_predicted"])
    return agreement(predicted[keep], measured[keep]), agreement(
        identity[keep], measured[keep]
    )


def proximal_paragraph(p: Run, what: str) -> str:
    """What one rung-2 run, the proximal response, ran and what the scores reach against it."""
    pushes = np.array(p["eps_per_removal"]) * np.array(p["removed_gradient_norms"])
    reached = max(max(n) for n in p["response_gradient_norms"])
    # a run with its own case (Case 2 from Case 1's pretraining) finetunes weights the
    # stored run never had, so only the others are compared with its test loss
    elsewhere = p["config"].get("case") is None and (
        abs(p.get("test_loss", 0) - p.get("stored_test_loss", 0)) >= 1e-6
    )
    predicted = np.array(p["predicted"])
    share = np.abs(predicted).max() / np.linalg.norm(predicted)
    rest, rest_identity = without_top(p)
    dominated = (
        f" One removal carries {share:.0%} of the predicted norm, so r says mostly that "
        "it is the largest; the ranks agree to Spearman's "
        f"{p['agreement']['spearman_rho']:.2f}. Without it, r = {format_r(rest)} over "
        f"{rest.n} removals, and the identity's {rest_identity.pearson_r:.3f}."
        if share > 0.9
        else ""
    )
    eff = effective(p)
    floor_text = (
        f" {eff['at_floor']} of the {len(predicted)} pushes lie at or below the "
        f"{eff['floor']:.0e} that stage 1 stopped at, and {eff['zeros']} measured exactly "
        f"0: the effective n is {eff['n']}"
        + (
            f", over which r = {format_r(eff['agreement'])}."
            if "agreement" in eff
            else "."
        )
        if eff["at_floor"]
        else ""
    )
    ratios = np.array(p["measured"]) / predicted
    shown = ratios[np.abs(predicted) > 0]
    divided = (
        "for every z, so that every push is $\\epsilon$"
        if p["config"].get("equal_push")
        else "where that exceeds 1"
    )
    floor = (
        " (in float64)"
        if p["config"].get("float64")
        else " (max pooling and float32 leave a floor)"
    )
    moved = (
        " The weights were retrained from the stored config and landed "
        f"elsewhere (test loss {p['test_loss']:.4f}, the stored run's "
        f"{p['stored_test_loss']:.4f}); rung 2 measures the response of the weights "
        "it scores, so it needs the config and the removals, not those weights."
        if elsewhere
        else ""
    )
    return (
        f"**Rung 2, {what}.** $G_S$ on |S| = {p['sample_size']} images, F on "
        f"{p.get('finetune_sample_size', 'all')}, $\\epsilon$ = {p['eps']:.1e} "
        f"divided by $\\lVert\\nabla g(z)\\rVert$ {divided}, "
        f"$\\lambda_1$ = {p['pretrain_damping']:.3g} on $H_G$ (whose smallest Lanczos "
        f"estimate is {p['hessian_extremes'][0]:.2g}), $\\lambda_2$ = "
        f"{p.get('finetune_damping', p['config']['finetune_damping']):.3g}. Against the "
        f"proximal response of {p['agreement']['n']} of section 4.1's removals the "
        f"scores reach r = {format_r(Agreement(**p['agreement']))}, the identity "
        f"{p['identity']['pearson_r']:.2f}; in size, the measured derivatives differ "
        f"from the predicted by {size_gap(p):.1%} in relative norm (measured / predicted "
        f"from {shown.min():.2f} to {shown.max():.2f}). Halving $\\epsilon$ moves the "
        "central difference by "
        + ", ".join(f"{x:.1%}" for x in linearity(p))
        + f" on the {len(p['measured_at_half_eps'])} removal(s) measured twice, each "
        "relative to itself. Each stage stopped at a gradient norm of at most "
        f"{reached:.1e}{floor}, against pushes "
        f"$\\epsilon\\lVert\\nabla g(z)\\rVert$ of {np.median(pushes):.1e} in the median."
        + floor_text
        + dominated
        + moved
    )


def failed_paragraph(f: Run) -> str:
    """The first, diverged attempt at rung 2 in Case 2, which the ladder file keeps."""
    worst = max(max(n) for n in f["response_gradient_norms"])
    return (
        "**Case 2, the first attempt.** In float32 at $\\epsilon = \\pm$"
        f"{f['eps']:.0e}, a whole copy of z, the run diverged at $-\\epsilon$: stage 1 "
        f"ended at gradient norms up to {worst:.0f}, since removing a whole copy of a "
        "large-gradient z can make "
        "$H_G + \\lambda_1 I - \\epsilon\\nabla^2 g(z)$ indefinite. "
        "`sec41_ladder.json` keeps it, marked failed."
    )


def rung1_paragraph(rung1: Run, m1: Mapping[str, Any]) -> str:
    """Rung 1, Appendix B: r over one order, over the mean of orders, and the noise ceiling."""
    fit = rung1["agreement"]["controlled"]
    return (
        "**Rung 1.** Appendix B's protocol: r = "
        f"{fit['pearson_r']:.2f} "
        f"over {fit['n']} removals; against the mean of "
        f"{m1['orders']} batch orders (seeds {', '.join(map(str, m1['seeds']))}), r = "
        f"{m1['score']['pearson_r']:.2f} (n = {m1['score']['n']}), while their mean "
        f"pairwise test-retest r of {m1['mean test-retest r']:.2f} allows about "
        f"{m1['ceiling']:.2f}."
    )


def paragraphs(ladder: Mapping[str, Run], rung1: Run, m1: Mapping[str, Any]) -> list[str]:
    """One paragraph a rung the ladder file holds, strictest first, then rung 1."""
    out = [converged_paragraph(ladder["converged"])] if "converged" in ladder else []
    out += [
        proximal_paragraph(ladder[k], what)
        for k, what in PROXIMAL_RUNS.items()
        if k in ladder
    ]
    if "proximal-updated-failed" in ladder:
        out.append(failed_paragraph(ladder["proximal-updated-failed"]))
    return out + [rung1_paragraph(rung1, m1)]


def stationarity_paragraph(
    leftover: float, removed_gradient_norms: list[float], m: int
) -> str:
    """The stored MNIST weights' gradient norm against the pushes of the removals."""
    s = stationarity(leftover, removed_gradient_norms, m)
    pushes = s["pushes"]
    if s["median ratio"] > 1:
        return (
            f"At the stored MNIST weights $\\lVert\\nabla G\\rVert$ = {leftover:.1e}. For "
            f"{len(pushes)} of the removed examples, $\\lVert\\nabla g(z)\\rVert/m$ with "
            f"m = {m:,} has median {s['median push']:.1e} (range "
            f"{pushes.min():.1e} to {pushes.max():.1e}): the leftover gradient is "
            f"{s['median ratio']:.0f} times the median push, and larger than the push for "
            f"{s['share above']:.0%} of them. On this scale the trained weights are "
            "not stationary, and Theorem 1's assumption does not hold for Appendix B's "
            "model."
        )
    return (
        f"At the stored MNIST weights $\\lVert\\nabla G\\rVert$ = {leftover:.1e}, "
        f"below the median push {s['median push']:.1e} of the removals."
    )
