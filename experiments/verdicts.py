"""Sentences that say what a stored run shows against the paper: the experiment chapters' verdicts.

Every number in them is formatted from the results file (through :func:`experiments.diagnostics.facts`),
never typed, so a new run cannot leave the text behind. The claims the sentences make are asserted
in the chapter, beside the cell that shows them; these functions only word them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from experiments import configs
from experiments.configs import TransferConfig
from experiments.diagnostics import differences, interval
from experiments.stats import paired_magnitudes

Facts = Mapping[str, Any]


def interval_side(fit: Mapping[str, Any], paper: float) -> str:
    """Where the paper's value lies against r's 95% interval: "below", "above" or "within".

    "below" means the interval lies below the paper's value (the paper's r is higher than
    anything ours allows); "above" the reverse.
    """
    low, high = interval(fit)
    if high < paper:
        return "below"
    if low > paper:
        return "above"
    return "within"


def verdict(fit: Mapping[str, Any], paper: float) -> str:
    """What r's 95% interval says about the paper's value (and about zero), as a heading."""
    side = interval_side(fit, paper)
    if side == "below":
        return "missed: the interval lies below the paper's value"
    if side == "above":
        return "above the paper's value"
    low = interval(fit)[0]
    return "within noise of the paper's value" + (
        ", and of zero" if low <= 0 else ", and above zero"
    )


def verdict_clause(fit: Mapping[str, Any], paper: float) -> str:
    """The same verdict as a clause after "r = ..., which", with the interval's numbers."""
    low, high = interval(fit)
    side = interval_side(fit, paper)
    if side == "below":
        return (
            f"misses: its 95% interval, {low:.2f} to {high:.2f}, "
            f"lies below the paper's {paper:.2f}"
        )
    if side == "above":
        return f"exceeds the paper's {paper:.2f}: its 95% interval is {low:.2f} to {high:.2f}"
    return (
        f"is within noise of the paper's {paper:.2f}: its 95% interval, {low:.2f} to "
        f"{high:.2f}, holds it" + (" and zero" if low <= 0 else ", but not zero")
    )


def solve_words(solves: list[dict], label: str) -> str:
    """Each CG solve's iterations and residual, saying when it stopped at its iteration cap.

    The cap is read from the solver's description (``iters=N``): a solve that ran to it did
    not converge, whatever its residual.
    """
    out = []
    for s in solves:
        limit = re.search(r"iters=(\d+)", s["solver"])
        at_limit = limit is not None and s["iterations"] >= int(limit.group(1))
        how = "stopped at its limit of" if at_limit else "ran"
        out.append(
            f"the {label} solve {how} {s['iterations']} iterations, "
            f"at a relative residual of {s['relative_residual']:.1e}"
        )
    return "; ".join(out) or f"no {label} solve"


def solves_words(f: Facts) -> str:
    """Both stages' solves of one experiment, pretraining first."""
    return (
        solve_words(f["pretrain_solves"], "pretraining")
        + "; "
        + solve_words(f["finetune_solves"], "finetuning")
    )


def lever_sentence(f: Facts) -> str:
    """The removal that moves r the most, and whether it sets r's sign."""
    flips = np.sign(f["r without lever"]) != np.sign(f["r"])
    paired = (
        f" (Fig. 4 pairs it with {f['lever pairs']} of the test mistakes)"
        if f["lever pairs"]
        else ""
    )
    return (
        f"One removal, pretraining image {f['lever index']}{paired}, moves r the most"
        f"{' and sets its sign' if flips else ''}: without it r is "
        f"{f['r without lever']:.2f}."
    )


def size_sentence(f: Facts) -> str:
    """Size and sign of the measured changes against the predicted ones."""
    return (
        f"The measured changes are about {f['ratio']:.0f} times the predicted ones, "
        "their sign matches the "
        f"prediction for {f['same sign']:.0%} of the large-score removals, and "
        "removals with large scores move "
        f"the loss {f['spread']:.1f} times as much as those with scores near zero; r "
        "between the magnitudes "
        f"is {f['magnitude r']:.2f}."
    )


def scale_words(f: Facts) -> str:
    """'at Appendix B scale', or 'at reduced scale' where the run's config departs from it."""
    return (
        "at reduced scale"
        if differences(configs.PAPER[f["name"]], f["config"])
        else "at Appendix B scale"
    )


def _heading(f: Facts, what: str) -> str:
    return (
        f"**{f['figure']}, {what}, {scale_words(f)}: {verdict(f['fit'], f['paper'])}.**"
    )


def mnist_gap(f: Facts) -> str:
    """The paragraph on Fig. 2b (MNIST, W fixed)."""
    return (
        _heading(f, "MNIST") + f" Our r is {f['r']:.2f} (95% interval "
        f"{f['low']:.2f} to {f['high']:.2f}, Spearman's rho {f['rho']:.2f}, "
        f"{f['n']} removals) against the paper's "
        f"{f['paper']:.2f}. The gradient norms are {f['grad_pre']:.1e} "
        f"(pretraining) and {f['grad_fine']:.1e} (finetuning): small, but not "
        "against the perturbation a removal makes (see *Stationarity, on the "
        f"right scale* above); {solves_words(f)}. "
        + size_sentence(f)
        + " "
        + lever_sentence(f)
    )


def mnist_retest(f: Facts) -> str:
    """The paragraph on the MNIST measurement measured twice."""
    return (
        f"Nor is the MNIST measurement mere noise. Retraining {f['retest n']} of "
        "the removals with the batches of "
        f"another seed gives a test-retest r of {f['retest r']:.2f}, "
        f"enough to allow an r of about {f['attainable']:.1f}. "
        f"The prediction's r with the two measurements of those {f['retest n']} "
        f"is {f['r first']:.2f} and "
        f"{f['r second']:.2f}. Appendix B's continuation responds to a removal "
        "reproducibly; how far the "
        f"first-order theory predicts that response is the r above."
    )


def cifar_fixed_gap(f: Facts, paper_config: TransferConfig) -> str:
    """The paragraph on Fig. 2a (CIFAR-10, W fixed), against Appendix B's ``paper_config``."""
    c = f["config"]
    text = (
        _heading(f, "CIFAR-10, embedding fixed") + f" Our r is {f['r']:.2f} "
        f"against {f['paper']:.2f}; with {f['n']} removals its interval is "
        f"{f['low']:.2f} to {f['high']:.2f}. "
        "Three departures from Appendix B weaken what this run can say. The "
        "pretrained network is far from "
        f"stationary: after {c.pretrain_steps:,} Adam steps its gradient norm is "
        f"{f['grad_pre']:.1f}, so Theorem 1's "
        f"first assumption does not hold. Then {solves_words(f)}. And each removal "
        "continued training for "
        f"{c.retrain_pretrain_steps} + {c.retrain_finetune_steps} steps instead of "
        f"{paper_config.retrain_pretrain_steps:,} + "
        f"{paper_config.retrain_finetune_steps:,}. " + size_sentence(f)
    )
    if "retest r" in f:
        text += (
            " The retest says how much of this is measurement: the same "
            f"{f['retest n']} removals, measured again "
            f"with another batch order, give a test-retest r of {f['retest r']:.2f}, "
            "so the retraining mostly "
            "measures how one removal reshuffles a non-converged Adam trajectory. "
            "The prediction's r with the two "
            f"measurements is {f['r first']:.2f} and {f['r second']:.2f}; with a "
            "ground truth this unreliable, "
            f"neither can be told from zero."
        )
    return text + (
        f" Our finetuned head also reaches {f['accuracy']:.1%} test accuracy, against "
        "the 58.15% the paper "
        f"reports for the same task in section 4.2."
    )


def cifar_updated_gap(f: Facts) -> str:
    """The paragraph on Fig. 2c (CIFAR-10, W updated)."""
    text = (
        _heading(f, "CIFAR-10, embedding updated") + f" Our r is {f['r']:.2f} "
        f"(interval {f['low']:.2f} to {f['high']:.2f}, Spearman's rho {f['rho']:.2f}, "
        f"{f['n']} removals) against the "
        f"paper's {f['paper']:.2f}. It shares Fig. 2a's non-stationary pretrained "
        "network and adds a finetuned one far "
        f"from its minimum too: its gradient norm is {f['grad_fine']:.2f}, and the "
        "continued training alone, the "
        f"control, moves the mean test loss from {f['original loss']:.2f} "
        f"to {f['control loss']:.2f} nats, while single "
        f"removals move it by a median of {f['median removal effect']:.3f} around "
        f"that. Then {solves_words(f)}. " + size_sentence(f)
    )
    if "retest r" in f:
        text += (
            f" Measured again with another batch order, the {f['retest n']} removals "
            "give a test-retest r of "
            f"{f['retest r']:.2f}. This retraining measures the continuation, not the "
            "removal."
        )
    return text


def identity_gap(f: Facts, paper_identity: float) -> str:
    """The paragraph on Fig. 3 (the identity ablation), on MNIST's facts."""
    low, high = f["identity interval"]
    text = (
        f"**Fig. 3, the identity ablation: r = {f['identity r']:.2f} against the "
        "paper's "
        f"{paper_identity:.2f}** (interval {low:.2f} to "
        f"{high:.2f}), on the same "
        f"{f['identity n']} removals as Fig. 2b, where the inverse Hessians give "
        f"{f['r']:.2f}. With the identity in "
        "place of both inverse Hessians, the score is an inner product of gradients: "
        "what a few gradient steps "
        f"would feel, not where the minimum moves. "
    )
    if f["identity r"] > f["r"]:
        return text + (
            "That it tracks the short continued training better than the inverse-Hessian "
            "score does fits the "
            "reading above: the continuation measures the removal's early pull on "
            "training, not the shifted "
            "minimum of eq. 4. It does not show that the Hessians matter at this scale."
        )
    return text + (
        "Here the inverse Hessians track the continued training better than "
        "the identity does, as the paper "
        "finds."
    )


def in_short(facts_by_name: Mapping[str, Facts]) -> str:
    """The closing paragraph: the two kinds of miss the retest separates.

    A test-retest r below 0.2 in size counts as noise, one of 0.5 or more as reproducible;
    the same thresholds the chapter's asserts use.
    """
    reproducible = {n: f["retest r"] for n, f in facts_by_name.items() if "retest r" in f}
    noisy = [n for n, r in reproducible.items() if abs(r) < 0.2]
    solid = [n for n, r in reproducible.items() if r >= 0.5]
    lines = ["**In short.** The retest separates two kinds of miss."]
    if noisy:
        lines.append(
            "Where the ground truth itself is noise "
            f"({', '.join(f'{n}: test-retest r {reproducible[n]:.2f}' for n in noisy)}), "
            "no score could match it, and neither the paper's r nor ours can be "
            "checked there without "
            "Appendix B's longer retraining and more removals."
        )
    if solid:
        magnitudes = ", ".join(
            f"{n}: {facts_by_name[n]['magnitude r']:.2f}" for n in solid
        )
        lines.append(
            "Where it is reproducible "
            f"({', '.join(f'{n}: {reproducible[n]:.2f}' for n in solid)}), the r "
            "between "
            "magnitudes "
            f"({magnitudes}) says how "
            "well the "
            "scores pick out the removals that matter, and r itself whether they "
            "also get the direction in "
            "which the continued training moves the loss."
        )
    return " ".join(lines)


def passes_sentence(
    passes: Mapping[str, float],
    configs_by_name: Mapping[str, TransferConfig],
    results: Mapping[str, Mapping[str, Any]],
) -> str:
    """How many passes over the m examples each run's continued pretraining makes."""
    return "passes of continued pretraining over the m examples: " + ", ".join(
        f"{name} {p:.1f} ({configs_by_name[name].retrain_pretrain_steps} steps of "
        f"{configs_by_name[name].batch_size}, "
        f"m = {results[name]['m']:,})"
        for name, p in passes.items()
    )


def magnitude_comparison(r: Mapping[str, Any]) -> str:
    """Section 4.4: models C's and D's |scores|, as means and paired by example
    (:func:`~experiments.stats.paired_magnitudes`, computed from the run's scores)."""
    m = r["models"]
    c = paired_magnitudes(m["C"]["scores"], m["D"]["scores"])
    return (
        f"ratio of means C / D {c['ratio_of_means']:.2f}; paired by example, the median "
        f"of \\|C(z)\\| / \\|D(z)\\| is {c['median_ratio']:.2f}, and "
        f"\\|C(z)\\| > \\|D(z)\\| for {c['share_larger']:.0%} of the {c['pairs']:,} examples"
    )
