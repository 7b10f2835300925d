"""Between rungs 3 and 1 of the ladder, one factor at a time, as section 4.1 reports it.

Reads ``book/results/sec41_factors.json`` (:mod:`experiments.ladder_factors`) beside rung 3 in
``sec41_ladder.json``: the steps the ladder's figure and table show, whether each factor moves
r (a paired bootstrap over the same removals), and the paragraphs the chapter prints. The
networks are described from their modules (:func:`describe`), not from prose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import nn

from experiments.diagnostics import size_gap
from experiments.models import small_mnist, table_a
from experiments.stats import Agreement, Difference, correlation_difference, format_r

Run = Mapping[str, Any]

POOLS = {nn.AvgPool2d: "average", nn.MaxPool2d: "max"}


def describe(
    embedding: nn.Sequential, image: tuple[int, int] = (28, 28)
) -> dict[str, Any]:
    """What an MNIST embedding does to a ``image``-sized input, read from its layers: the
    size its first convolution sees (after any pooling of the input), how it pools the
    input and between its convolutions, and its convolutions' channels."""
    import torch

    x = torch.zeros(1, 1, *image)
    seen, input_pooling, pooling, channels = None, None, [], []
    for layer in embedding:
        kind = POOLS.get(type(layer))
        if isinstance(layer, nn.Conv2d):
            seen = seen or tuple(x.shape[-2:])
            channels.append(layer.out_channels)
        elif kind and seen is None:
            input_pooling = kind
        elif kind:
            pooling.append(kind)
        x = layer(x)
    (between,) = set(pooling)
    return {
        "input": seen,
        "input_pooling": input_pooling,
        "pooling": between,
        "channels": channels,
    }


def networks_sentence(channels: tuple[int, int]) -> str:
    """How rung 3's network (:func:`~experiments.models.small_mnist` with ``channels``)
    differs from Table A's MNIST network, as their modules say."""
    small = describe(small_mnist(4, 6, channels).embedding)
    table = describe(table_a("mnist", 4, 6).embedding)
    size = " x ".join(map(str, small["input"]))
    full = " x ".join(map(str, table["input"]))
    return (
        f"Rung 3's network sees the image {small['input_pooling']}-pooled to {size} "
        f"(Table A's sees all {full}), has tanh convolutions of "
        f"{' and '.join(map(str, small['channels']))} channels (Table A's "
        f"{' and '.join(map(str, table['channels']))}), and pools by the "
        f"{small['pooling']} between them where Table A takes the {table['pooling']}."
    )


def mean_of_orders_run(p: Run) -> dict[str, Any]:
    """The protocol run read against the mean of its batch orders, laid out as a rung."""
    return {
        "predicted": p["predicted"],
        "identity_predicted": p["identity_predicted"],
        "measured": p["mean_of_orders"]["mean"],
    }


def steps(factors: Mapping[str, Run]) -> list[dict[str, Any]]:
    """The factor steps the ladder's figure and table show after rung 3, each with the
    scores' and the identity's agreement and the size gap; those not measured are left out."""
    out = []
    if "protocol" in factors:
        p = factors["protocol"]
        k = p["mean_of_orders"]["orders"]
        out += [
            {
                "key": "protocol",
                "label": "3 + Adam steps,\none order",
                "truth": "100 + 100 Adam steps from rung 3's optimum, one batch order",
                "net": "small CNN, float64",
                "score": p["agreement"],
                "identity": p["identity"],
                "size_gap": size_gap(p),
            },
            {
                "key": "protocol-mean",
                "label": f"3 + Adam steps,\nmean of {k}",
                "truth": f"100 + 100 Adam steps from rung 3's optimum, mean of {k} orders",
                "net": "small CNN, float64",
                "score": p["mean_of_orders"]["score"],
                "identity": p["mean_of_orders"]["identity"],
                "size_gap": size_gap(mean_of_orders_run(p)),
            },
        ]
    d = factors.get("decay")
    if d and d["isolated"] and d["agreement"]:
        out.append(
            {
                "key": "decay",
                "label": f"3 at weight\ndecay {d['l2']:g}",
                "truth": f"converged leave-one-out, weight decay {d['l2']:g}",
                "net": "small CNN, float64",
                "score": d["agreement"],
                "identity": d["identity"],
                "size_gap": size_gap(d),
            }
        )
    return out


def against_rung3(
    run: Run, converged: Run, measured: list[float] | None = None
) -> Difference:
    """r of the scores against ``run``'s measurements minus r against rung 3's, on the
    removals both measured, with a paired bootstrap interval (the items resampled together)."""
    theirs = dict(zip(converged["indices"], converged["measured"]))
    ours = measured if measured is not None else run["measured"]
    kept = [j for j, i in enumerate(run["indices"]) if i in theirs]
    predicted = np.array(run["predicted"])[kept]
    # corr(a, t) - corr(b, t) with t the prediction: Pearson's r is symmetric
    return correlation_difference(
        np.array(ours)[kept],
        [theirs[run["indices"][j]] for j in kept],
        predicted,
    )


def moves(difference: Difference) -> bool:
    """Whether a factor moves r: the interval of the difference excludes 0."""
    return difference.high < 0 or difference.low > 0


def above_rung1(p: Run, rung1: Run) -> bool:
    """Whether the protocol step's r interval lies wholly above rung 1's (one batch order)."""
    ours = Agreement(**p["agreement"]).interval()[0]
    return ours > Agreement(**rung1["agreement"]["controlled"]).interval()[1]


def protocol_paragraph(p: Run, converged: Run, rung1: Run | None = None) -> str:
    """What Appendix B's continued training on rung 3 measures, beside rung 3's r and, given
    ``rung1`` (``sec41.json``'s MNIST experiment), rung 1's."""
    c = p["config"]
    one, mean = Agreement(**p["agreement"]), Agreement(**p["mean_of_orders"]["score"])
    rung3 = Agreement(**converged["agreement"])
    diff = against_rung3(p, converged)
    m_o = p["mean_of_orders"]
    drift = np.array([ctl["drift"] for ctl in p["controls"]])
    left = max(ctl["gradient_norms"]["pretraining"] for ctl in p["controls"])
    pushes = np.array(p["pushes"])
    fresh = Agreement(**p["fresh"]["agreement"]) if "fresh" in p else None
    r1 = (
        ""
        if rung1 is None
        else f" Rung 1 reaches r = {format_r(Agreement(**rung1['agreement']['controlled']))}"
        + (
            ", wholly below: the protocol alone does not take r to rung 1's."
            if above_rung1(p, rung1)
            else "; the intervals overlap."
        )
    )
    verdict = (
        "The protocol moves r: the difference's interval excludes 0."
        if moves(diff)
        else "The protocol does not move r beyond what 40 removals resolve: the "
        "difference's interval includes 0."
    )
    return (
        f"**Rung 3 + Appendix B's retraining.** The same network, {p['m']:,} images, "
        f"weight decay {c['converged']['l2']:g}, scores and {one.n} removals as rung 3, "
        f"measured instead by {c['pretrain_steps']} + {c['finetune_steps']} continued "
        f"Adam steps from rung 3's optimum (batch size {c['batch_size']}, learning rate "
        f"{c['lr']:g}, Adam's moments burned in by {c['burn_in']} steps at the optimum), "
        "minus the same steps with nothing removed. Over one batch order the scores reach "
        f"r = {format_r(one)}, the identity {p['identity']['pearson_r']:.2f}, size gap "
        f"{size_gap(p):.0%}; against the mean of {m_o['orders']} orders r = "
        f"{format_r(mean)} (size gap {size_gap(mean_of_orders_run(p)):.0%}), whose "
        f"mean test-retest r of {m_o['mean test-retest r']:.2f} allows about "
        f"{m_o['ceiling']:.2f}. Rung 3 on the same removals: r = {format_r(rung3)}; the "
        f"difference is {diff.difference:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}] "
        f"(paired bootstrap). {verdict}{r1} The steps alone move the test loss by "
        f"{np.abs(drift).min():.2g} to {np.abs(drift).max():.2g} (summed over "
        f"{p['n_test']} test images) and leave a gradient norm of up to {left:.1e}, "
        f"{left / np.median(pushes):.0f} times the median push "
        f"$\\lVert\\nabla g(z)\\rVert/m$ = {np.median(pushes):.1e}."
        + (
            f" Started from a fresh Adam instead, r = {format_r(fresh)} over the first "
            "order."
            if fresh
            else ""
        )
    )


def decay_paragraph(d: Run, converged: Run) -> str:
    """Rung 3 at a weight decay near 0, on rung 3's removals, or why it could not run."""
    if not d["isolated"]:
        return (
            f"**Rung 3 at weight decay {d['l2']:g}.** No isolated minimum: {d['error']}. "
            "Converged leave-one-out has nothing to converge to, so this factor cannot be "
            "isolated by it."
        )
    done = d["completed"]
    # the removals' own minutes where the run kept them, else the whole run's
    took = (
        f"In {done['minutes']:.0f} minutes of retraining"
        if "minutes" in done
        else f"In a run of {d['minutes']:.0f} minutes, the optimum included,"
    )
    worst = max(max(pair) for pair in d["retrained_gradient_norms"])
    push = min(d["removed_gradient_norms"]) / d["m"]
    head = (
        f"**Rung 3 at weight decay {d['l2']:g}.** The optimum ends at a gradient norm of "
        f"{d['gradient_norms']['pretraining']:.1e}, with $H_G$'s eigenvalues from "
        f"{d['hessian_extremes'][0]:.1e} to {d['hessian_extremes'][1]:.2f}. "
        f"{took} {done['removals']} of rung 3's {done['of']} "
        "removals were retrained (taken coarse to fine over their ranks; rung 3's whole "
        f"run of {converged['agreement']['n']} took {converged['minutes']:.0f} minutes), "
        f"ending at gradient norms of at most {worst:.0e} against a smallest push of "
        f"{push:.1e}"
    )
    if not d["agreement"]:
        ratios = np.array(d["measured"]) / np.array(d["predicted"])
        return (
            head
            + ": too few for an r. Their measured changes are "
            + ", ".join(f"{x:.2f}" for x in ratios)
            + " times the predicted ones."
        )
    a, rung3 = Agreement(**d["agreement"]), Agreement(**converged["agreement"])
    diff = against_rung3(d, converged)
    verdict = (
        "The weight decay moves r: the difference's interval excludes 0."
        if moves(diff)
        else "At this n the weight decay does not move r: the difference's interval "
        "includes 0."
    )
    return (
        head + f". The scores (made at this decay) reach r = {format_r(a)}, the identity "
        f"{d['identity']['pearson_r']:.2f}, size gap {size_gap(d):.0%}; rung 3 on the "
        f"same removals reaches {format_r(rung3)}, a difference of "
        f"{diff.difference:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}]. {verdict}"
    )


def table_a_paragraph(cost: Run, converged: Run) -> str:
    """What converged retraining of Table A's network at rung 3's data size would cost."""
    t, s = cost["table_a"], cost["rung3"]
    return (
        f"**Table A's network at rung 3's size, converged: not run.** On rung 3's "
        f"{cost['m']:,} images in float64 ({cost['threads']} thread), Table A's network "
        f"has {t['parameters']:,} parameters to rung 3's {s['parameters']}: one "
        f"full-batch gradient takes {t['seconds_per_gradient']:.1f} s "
        f"({t['seconds_per_gradient'] / s['seconds_per_gradient']:.0f} times rung 3's), "
        f"one Hessian-vector product {t['seconds_per_hvp']:.1f} s. The dense $H_G$ that "
        f"rung 3's Newton steps use would hold {t['dense_hessian_gib']:.1f} GiB and take "
        f"{t['hours_per_dense_hessian']:.0f} hours to build "
        f"({s['hours_per_dense_hessian'] * 3600:.0f} s for rung 3's), and rung 3 "
        f"needed {converged['minutes']:.0f} minutes for its {converged['agreement']['n']} "
        "removals. Max pooling makes the loss only piecewise smooth besides, and L-BFGS "
        "stalls at its kinks (`experiments.models.small_mnist`). The network factor "
        "stays unisolated here."
    )


def paragraphs(
    factors: Mapping[str, Run], converged: Run, rung1: Run | None = None
) -> list[str]:
    """One paragraph a factor the file holds: the protocol, the weight decay, Table A."""
    out = []
    if "protocol" in factors:
        out.append(protocol_paragraph(factors["protocol"], converged, rung1))
    if "decay" in factors:
        out.append(decay_paragraph(factors["decay"], converged))
    if "table-a-cost" in factors:
        out.append(table_a_paragraph(factors["table-a-cost"], converged))
    return out
