"""The numbers a chapter reads off a stored run before it states them: measurements of results files.

Each function takes the dicts of ``book/results/*.json`` (as :func:`experiments.provenance.read_results`
returns them) and computes one quantity the prose, a table or an assert needs: the size and sign of
the measured changes, the removal that moves r the most, the never-drawn removals, a rung's size gap.
Nothing here formats text (:mod:`experiments.verdicts`, :mod:`experiments.tables` do), so each
number is tested once and every sentence that states it reads the same value.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from experiments.configs import TransferConfig
from experiments.paper_numbers import FIGURE, PAPER_R
from experiments.stats import Agreement, agreement
from experiments.validation import removal_draws

Result = Mapping[str, Any]


def differences(a: TransferConfig, b: TransferConfig) -> dict[str, tuple]:
    """The fields where ``b`` departs from ``a``: ``{field: (a's value, b's value)}``."""
    return {k: (v, getattr(b, k)) for k, v in a.as_dict().items() if getattr(b, k) != v}


def interval(fit: Mapping[str, Any]) -> tuple[float, float]:
    """Fisher's 95% interval of a stored agreement (``{"pearson_r", "spearman_rho", "n"}``)."""
    return Agreement(**fit).interval()


def sizes(r: Result) -> dict[str, float]:
    """Size and sign of a validation's measured changes against the predicted ones.

    The two thirds of removals with the largest |predicted| are the tails that the removal
    protocol picks on purpose; the last third, drawn at random, has scores near zero and is the
    reference for "does a large score move the loss more".
    """
    v = r["validation"]
    predicted, measured = np.array(v["predicted"]), np.array(v["controlled"])
    order = np.argsort(-np.abs(predicted))
    large, small = order[: 2 * len(order) // 3], order[2 * len(order) // 3 :]
    return {
        "n": len(order),
        "same sign": float(
            np.mean(np.sign(predicted[large]) == np.sign(measured[large]))
        ),
        "ratio": float(np.median(np.abs(measured[large]) / np.abs(predicted[large]))),
        "spread": float(np.abs(measured[large]).mean() / np.abs(measured[small]).mean()),
        "magnitude r": agreement(np.abs(predicted), np.abs(measured)).pearson_r,
    }


def lever(r: Result) -> dict[str, float | int]:
    """The removal whose omission moves r the most: its position, index and r without it.

    With a few dozen removals one extreme point can set Pearson's r, sign included; the text
    names it rather than let r stand for all of them.
    """
    v = r["validation"]
    predicted, measured = np.array(v["predicted"]), np.array(v["controlled"])
    without = [
        agreement(np.delete(predicted, j), np.delete(measured, j)).pearson_r
        for j in range(len(predicted))
    ]
    position = int(
        np.argmax(np.abs(np.array(without) - r["agreement"]["controlled"]["pearson_r"]))
    )
    index = v["indices"][position]
    return {
        "position": position,
        "index": index,
        "r without": without[position],
        "pairs": sum(p["pretrain_index"] == index for p in r.get("pairs", [])),
    }


def retest(r: Result) -> dict[str, float | int]:
    """The test-retest numbers of a run measured under a second batch order (empty without one).

    The attainable r is about the square root of the test-retest r (Spearman's correction for
    attenuation); a negative test-retest r allows nothing.
    """
    if "retest" not in r:
        return {}
    a = r["retest"]["agreement"]
    out = {
        "retest r": a["with the first measurement"]["pearson_r"],
        "retest n": len(r["retest"]["positions"]),
        "r first": a["first measurement with the prediction"]["pearson_r"],
        "r second": a["with the prediction"]["pearson_r"],
    }
    out["attainable"] = float(np.sqrt(max(out["retest r"], 0)))
    return out


def facts(name: str, e: Result) -> dict[str, Any]:
    """Every number the "Gaps to the paper" paragraphs state about one section 4.1 experiment."""
    fit = e["agreement"]["controlled"]
    low, high = interval(fit)
    v = e["validation"]
    big = lever(e)
    f = {
        "name": name,
        "figure": FIGURE[name],
        "paper": PAPER_R[name],
        "r": fit["pearson_r"],
        "rho": fit["spearman_rho"],
        "n": fit["n"],
        "low": low,
        "high": high,
        "fit": fit,
        "grad_pre": e["solves"]["pretrain_gradient_norm"],
        "grad_fine": e["solves"]["finetune_gradient_norm"],
        "pretrain_solves": e["solves"]["pretrain_solves"],
        "finetune_solves": e["solves"]["finetune_solves"],
        "lever index": big["index"],
        "r without lever": big["r without"],
        "lever pairs": big["pairs"],
        "accuracy": e["finetune_accuracy"],
        "original loss": v["original_loss"],
        "control loss": v["control_loss"],
        "median removal effect": float(np.median(np.abs(v["controlled"]))),
        "config": TransferConfig.from_dict(e["config"]),
        **sizes(e),
        **retest(e),
    }
    if "identity" in e:
        fid = e["identity"]["agreement"]["controlled"]
        f |= {
            "identity r": fid["pearson_r"],
            "identity interval": interval(fid),
            "identity n": fid["n"],
        }
    return f


def drawn_removals(r: Result, config: TransferConfig) -> dict[str, Any]:
    """Which removals continued pretraining never draws, and r over the drawn ones alone.

    A removal that is never drawn changes nothing but rounding, whatever its score, so it
    carries no signal to correlate with.
    """
    v = r["validation"]
    draws = removal_draws(config, r["m"], v["indices"])
    seen = [j for j, d in enumerate(draws) if d > 0]
    drawn = sorted(abs(v["controlled"][j]) for j in seen)
    return {
        "removals": len(draws),
        "unseen": [abs(v["controlled"][j]) for j, d in enumerate(draws) if d == 0],
        "median drawn": drawn[len(drawn) // 2] if drawn else float("nan"),
        "r drawn": agreement(
            [v["predicted"][j] for j in seen], [v["controlled"][j] for j in seen]
        ).pearson_r
        if len(seen) >= 3
        else float("nan"),
    }


def passes(
    results: Mapping[str, Result], configs_by_name: Mapping[str, TransferConfig]
) -> dict[str, float]:
    """How many times continued pretraining goes over the m examples, per experiment."""
    return {
        name: configs_by_name[name].retrain_pretrain_steps
        * configs_by_name[name].batch_size
        / r["m"]
        for name, r in results.items()
    }


def size_gap(run: Result) -> float:
    """||measured - predicted|| / ||predicted|| of a rung-2 run's d test loss / d eps."""
    p, m = np.array(run["predicted"]), np.array(run["measured"])
    return float(np.linalg.norm(m - p) / np.linalg.norm(p))


def sweep_row(sweep: Result, stage: str, on: str, damping: float) -> dict:
    """The one row of a damping sweep (``sec41_damping.json``) at ``(stage, on, damping)``."""
    (row,) = [
        r
        for r in sweep["rows"]
        if (r["stage"], r["on"], r["damping"]) == (stage, on, damping)
    ]
    return row


def stationarity(
    leftover: float, removed_gradient_norms: list[float], m: int
) -> dict[str, Any]:
    """The leftover gradient norm against each removal's push ``||grad g(z)|| / m``.

    Theorem 1 linearizes an optimality condition; a leftover gradient larger than the push
    moves the weights for reasons that have nothing to do with the removal.
    """
    pushes = np.array(removed_gradient_norms) / m
    ratio = leftover / pushes
    return {
        "pushes": pushes,
        "median push": float(np.median(pushes)),
        "median ratio": float(np.median(ratio)),
        "share above": float(np.mean(ratio > 1)),
    }


def paired_difference(summary: Mapping[str, Any], kind: str) -> dict | None:
    """Section 4.2: a condition's accuracy difference from `none`, paired by seed, if it was tested.

    None when the condition is missing or has one seed (no paired t-test).
    """
    d = summary.get(kind, {}).get("difference")
    return d if d and "paired_t_p" in d else None


def seed_spread(difference: Mapping[str, Any]) -> float:
    """The sample standard deviation of a paired difference's per-seed values."""
    return float(np.std(np.array(difference["values"]), ddof=1))


def score_factors(r: Result) -> dict[str, dict[str, float]]:
    """Section 4.3: each task's mean |score| split into size, stretch and alignment.

    mean |score| = ||u|| * (||v2|| / ||u||) * (mean |score| / ||v2||), so the ratio of the
    tasks' means is the product of the three factors' ratios; the Rayleigh quotient
    u^T H_G u / u^T u says how curved the directions are that u points along.
    """
    out = {}
    for t in "AB":
        task = r["tasks"][t]
        mean = r["comparison"]["mean_abs"]["AB".index(t)]
        out[t] = {
            "size": task["u_norm"],
            "stretch": task["v2_norm"] / task["u_norm"],
            "alignment": mean / task["v2_norm"],
            "Rayleigh quotient": task["rayleigh"],
        }
    return out


def top_share(scores: Any, fraction: float = 0.01) -> float:
    """The share of the total |score| carried by the largest ``fraction`` of examples (at least one)."""
    a = np.sort(np.abs(np.asarray(scores, dtype=float)))[::-1]
    return float(a[: max(1, int(round(fraction * a.size)))].sum() / a.sum())
