"""The Markdown tables the experiment chapters show, built from their results files and configs.

Each function returns the table as Markdown text (the chapter wraps it in ``display(Markdown(...))``)
and formats every number from the dict it is given, so a table cannot drift from its results file.
Sections 4.1 to 4.5 and the reproduction page; the ladder's and the damping sweep's tables live
with their reports (:mod:`experiments.ladder_report`, :mod:`experiments.damping_report`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from experiments.configs import TransferConfig
from experiments.data import CIFAR10_CLASSES
from experiments.diagnostics import differences, drawn_removals, interval, sizes
from experiments.paired_solves import pair_of
from experiments.paper_numbers import FIGURE, PAPER_R
from experiments.stats import paired_magnitudes

Result = Mapping[str, Any]

# how the section 4.1 chapter names each experiment
LABEL = {
    "mnist-fixed": "MNIST, W fixed",
    "cifar10-fixed": "CIFAR-10, W fixed",
    "cifar10-updated": "CIFAR-10, W updated",
}


def _interval_words(fit: Mapping[str, Any]) -> str:
    low, high = interval(fit)
    return f"[{low:.2f}, {high:.2f}]"


def config_differences(
    names: Iterable[str],
    paper: Mapping[str, TransferConfig],
    ours: Mapping[str, TransferConfig],
) -> str:
    """Where this book's scale departs from Appendix B's, one row a field that differs."""
    rows = [
        "| experiment | field | Appendix B (`paper`) | this book (`cpu`) |",
        "|---|---|---|---|",
    ]
    for name in names:
        diff = differences(paper[name], ours[name])
        rows += [f"| {name} | `{k}` | {p} | {c} |" for k, (p, c) in diff.items()] or [
            f"| {name} | none: Appendix B scale | | |"
        ]
    return "\n".join(rows)


def rescored(results: Mapping[str, Result]) -> str | None:
    """What scoring again in float64 changed: exact-zero scores and r, before and after.

    None when no experiment of the file records a re-scoring.
    """
    rows = [
        "| experiment | m | exact-zero scores before | after | r before | r after |",
        "|---|---|---|---|---|---|",
    ]
    for name, e in results.items():
        if "rescored" not in e:
            continue
        before, after = e["rescored"]["before"], e["rescored"]["after"]
        r_before = before["agreement"]["controlled"]["pearson_r"]
        r_after = e["agreement"]["controlled"]["pearson_r"]
        rows.append(
            f"| {name} | {e['m']:,} | {before['exact zeros']:,} | "
            f"{after['exact zeros']:,} | {r_before:.2f} | {r_after:.2f} |"
        )
    return "\n".join(rows) if len(rows) > 2 else None


def blind_spot(
    results: Mapping[str, Result], configs_by_name: Mapping[str, TransferConfig]
) -> str:
    """The removals continued pretraining never draws, how small their effect is, r without them."""
    rows = [
        "| experiment | removals | never drawn | largest \\|controlled\\| "
        "among those | median \\|controlled\\| of the drawn | "
        "r, all | r, drawn only |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        d = drawn_removals(r, configs_by_name[name])
        rows.append(
            f"| {name} | {d['removals']} | {len(d['unseen'])} | "
            f"{max(d['unseen'], default=float('nan')):.1e} | "
            f"{d['median drawn']:.1e} | "
            f"{r['agreement']['controlled']['pearson_r']:.2f} | {d['r drawn']:.2f} |"
        )
    return "\n".join(rows)


def size_and_sign(results: Mapping[str, Result]) -> str:
    """Sign agreement, size ratio and r of magnitudes of each experiment (see ``diagnostics.sizes``)."""
    rows = [
        "| experiment | n | r | r of magnitudes | same sign (large "
        "scores) | median measured / predicted size (large scores) | "
        "mean size, large scores / near-zero scores |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        s = sizes(r)
        rows.append(
            f"| {name} | {s['n']} | {r['agreement']['controlled']['pearson_r']:.2f} | "
            f"{s['magnitude r']:.2f} | {s['same sign']:.0%} | {s['ratio']:.1f} | "
            f"{s['spread']:.1f} |"
        )
    return "\n".join(rows)


def retest(name: str, r: Result) -> str:
    """Test-retest r, the r it allows, and the prediction's r with each measurement."""
    fits = r["retest"]["agreement"]
    retest_r = fits["with the first measurement"]["pearson_r"]
    return "\n".join(
        [
            "| experiment | test-retest r | attainable r, about "
            "| r with the first measurement | r with the second |",
            "|---|---|---|---|---|",
            f"| {name} | {retest_r:.2f} | {np.sqrt(max(retest_r, 0)):.2f} | "
            f"{fits['first measurement with the prediction']['pearson_r']:.2f} | "
            f"{fits['with the prediction']['pearson_r']:.2f} |",
        ]
    )


def cg_words(solves: list[dict]) -> str:
    """Each CG solve as "iterations, residual", or "none"."""
    return (
        "; ".join(f"{x['iterations']}, {x['relative_residual']:.1e}" for x in solves)
        or "none"
    )


def assumptions(results: Mapping[str, Result]) -> str:
    """Accuracy, gradient norms and CG solves of each run: how far from Theorem 1's assumptions."""
    rows = [
        "| experiment | pretraining accuracy | finetuning accuracy "
        "| gradient norm, pretraining | gradient norm, finetuning | "
        "CG, finetuning: iterations, residual | CG, pretraining: iterations, "
        "residual |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        s = r["solves"]
        rows.append(
            f"| {name} | {r['pretrain_accuracy']:.1%} | "
            f"{r['finetune_accuracy']:.1%} | {s['pretrain_gradient_norm']:.1e} | "
            f"{s['finetune_gradient_norm']:.1e} | {cg_words(s['finetune_solves'])} | "
            f"{cg_words(s['pretrain_solves'])} |"
        )
    return "\n".join(rows)


def beside_paper(results: Mapping[str, Result]) -> str:
    """Section 4.1's r beside the paper's, with Fisher's interval, rho, n and scale."""
    rows = [
        "| figure | paper r | our r | 95% interval | our Spearman rho | n | scale |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        fit = r["agreement"]["controlled"]
        rows.append(
            f"| {FIGURE[name]} {LABEL[name]} | {PAPER_R[name]:.2f} | "
            f"{fit['pearson_r']:.2f} | "
            f"{_interval_words(fit)} | {fit['spearman_rho']:.2f} | {fit['n']} | "
            f"{r['scale']} |"
        )
        if "identity" in r:
            fit = r["identity"]["agreement"]["controlled"]
            rows.append(
                f"| Fig. 3 {LABEL[name]}, identity | "
                f"{PAPER_R['mnist-identity']:.2f} "
                f"| {fit['pearson_r']:.2f} | {_interval_words(fit)} | "
                f"{fit['spearman_rho']:.2f} | {fit['n']} | {r['scale']} |"
            )
    return "\n".join(rows)


def paper_value(value: float, fmt: str) -> str:
    """The paper's number, or "not reported" for a check it did not make (NaN)."""
    return "not reported" if np.isnan(value) else f"{value:{fmt}}"


def paper_numbers(numbers: Iterable[Any], results_dir: Any) -> str:
    """Every paper number beside ours (``paper_numbers.PAPER_NUMBERS``), read from ``results_dir``."""
    rows = ["| where | what | paper | ours | scale |", "|---|---|---|---|---|"]
    for number in numbers:
        ours = number.ours(results_dir)
        value, scale = (
            (f"{ours[0]:{number.fmt}}", ours[1]) if ours else ("not run yet", "")
        )
        rows.append(
            f"| {number.where} | {number.what} | "
            f"{paper_value(number.paper, number.fmt)} | {value} | {scale} |"
        )
    return "\n".join(rows)


def condition_cell(entry: Mapping[str, Any], key: str) -> str:
    """One cell of section 4.2's table: "mean" (± sd), "difference" from `none`, or "p"."""
    d = entry.get("difference")
    if key == "mean":
        sd = entry["std"]
        spread = f" ± {sd:.2%}" if np.isfinite(sd) else ""
        return f"{entry['mean']:.2%}{spread}"
    if d is None:
        return "—"
    if key == "difference":
        return f"{100 * d['mean']:+.2f} points"
    return f"{d['paired_t_p']:.2f}" if "paired_t_p" in d else "no test (one seed)"


def cleansing(summary: Mapping[str, Any], paper: Mapping[str, float]) -> str:
    """Section 4.2: each condition's accuracy over seeds, its paired difference, the paper's.

    ``paper`` maps a condition to the paper's accuracy; the paper's difference is read
    against its `none`.
    """
    rows = [
        "| condition | seeds | accuracy, mean ± sd | difference from `none`, "
        "paired by seed | paired t-test p | paper's accuracy | paper's difference |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in ("none", "top", "random", "bottom"):
        if kind not in summary:
            continue
        s = summary[kind]
        accuracy = f"{paper[kind]:.2%}" if kind in paper else "—"
        difference = (
            f"{100 * (paper[kind] - paper['none']):+.2f} points"
            if kind in paper and kind != "none" and "none" in paper
            else "—"
        )
        rows.append(
            f"| `{kind}` | {len(s['seeds'])} | {condition_cell(s, 'mean')} | "
            f"{condition_cell(s, 'difference')} | {condition_cell(s, 'p')} | "
            f"{accuracy} | {difference} |"
        )
    return "\n".join(rows)


def class_names(classes: Iterable[int]) -> str:
    """CIFAR-10 class indices as "bird vs. frog"."""
    return " vs. ".join(CIFAR10_CLASSES[c] for c in classes)


def similarity_tasks(tasks_by_scale: Mapping[str, Mapping[str, TransferConfig]]) -> str:
    """Section 4.3's two tasks at each scale, with the fields in which B departs from A."""
    rows = [
        "| scale | task | pretraining | finetuning | CG iterations | fields differing |",
        "|---|---|---|---|---|---|",
    ]
    for scale, tasks in tasks_by_scale.items():
        a = tasks["A"].as_dict()
        for task, c in tasks.items():
            differ = [k for k, v in c.as_dict().items() if v != a[k]]
            rows.append(
                f"| {scale} | {task} | {class_names(c.pretrain_classes)} | "
                f"{class_names(c.finetune_classes)} | {c.cg_iters} | "
                f"{', '.join(f'`{k}`' for k in differ) or 'none (the reference)'} |"
            )
    return "\n".join(rows)


def score_comparison(runs: Mapping[str, Result]) -> str:
    """Section 4.3: the two tasks' |scores| compared, one row a run; paired by example
    (:func:`~experiments.stats.paired_magnitudes`, computed from the run's scores)."""
    rows = [
        "| run | m | n_t | mean \\|score\\| A | mean \\|score\\| B | ratio of means A/B | "
        "median of \\|A(z)\\| / \\|B(z)\\| | share with \\|A(z)\\| > \\|B(z)\\| |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, r in runs.items():
        t = r["tasks"]
        c = paired_magnitudes(t["A"]["scores"], t["B"]["scores"])
        rows.append(
            f"| {label} | {t['A']['m']:,} | {t['A']['n_test']:,} | "
            f"{c['mean_abs'][0]:.4g} | {c['mean_abs'][1]:.4g} | "
            f"{c['ratio_of_means']:.2f} | {c['median_ratio']:.2f} | "
            f"{c['share_larger']:.0%} |"
        )
    return "\n".join(rows)


def finetuning_sizes(models_by_scale: Mapping[str, Mapping[str, TransferConfig]]) -> str:
    """Section 4.4's models C and D at each scale: finetuning size, steps, passes, CG iterations."""
    rows = [
        "| scale | model | finetuning examples | finetuning steps | batch "
        "| passes over the finetuning set | CG iterations a solve |",
        "|---|---|---|---|---|---|---|",
    ]
    for scale, models in models_by_scale.items():
        for name, c in models.items():
            passes = c.finetune_steps * c.batch_size / c.finetune_size
            rows.append(
                f"| {scale} | {name} | {c.finetune_size:,} | {c.finetune_steps:,} "
                f"| {c.batch_size} | {passes:.1f} | {c.cg_iters} |"
            )
    return "\n".join(rows)


def _solve(model: Mapping[str, Any], stage: str) -> str:
    if "solves" not in model:
        return "stored scores"
    s = model["solves"][f"{stage}_solves"][0]
    return f"{s['relative_residual']:.2g} after {s['iterations']} iterations"


def _gradient(model: Mapping[str, Any], stage: str) -> str:
    if "solves" not in model:
        return "stored scores"
    return f"{model['solves'][f'{stage}_gradient_norm']:.2g}"


def _in_k(model: Mapping[str, Any]) -> str:
    n = model["config"]["finetune_hessian_examples"]
    return "all" if n is None else f"{n:,}"


def model_rows(r: Result) -> list[tuple[str, str, str]]:
    """(quantity, model C, model D) for one run of section 4.4."""
    c, d = r["models"]["C"], r["models"]["D"]
    cmp = r["comparison"]

    def both(value: Callable[[Mapping[str, Any]], str]) -> tuple[str, str]:
        return value(c), value(d)

    return [
        ("finetuning examples", *both(lambda m: f"{m['config']['finetune_size']:,}")),
        ("finetuning steps", *both(lambda m: f"{m['config']['finetune_steps']:,}")),
        ("finetuning examples in K's sample", *both(_in_k)),
        (
            "pretraining examples m, test points n_test",
            *both(lambda m: f"{m['m']:,}, {m['n_test']:,}"),
        ),
        ("finetuning test accuracy", *both(lambda m: f"{m['finetune_accuracy']:.1%}")),
        (r"mean \|score\|", *(f"{v:.3g}" for v in cmp["mean_abs"])),
        (r"median \|score\|", *(f"{v:.2g}" for v in cmp["median_abs"])),
        (
            r"$\lVert W^*-\bar W\rVert$ (of $\lVert\bar W\rVert$ = "
            f"{c['w_bar_norm']:.3g})",
            *(f"{m['w_distance']:.3g}" for m in (c, d)),
        ),
        (
            "gradient norm, finetuning (Hessian sample)",
            *both(lambda m: _gradient(m, "finetune")),
        ),
        ("gradient norm, pretraining", *both(lambda m: _gradient(m, "pretrain"))),
        ("finetuning solve: relative residual", *both(lambda m: _solve(m, "finetune"))),
        ("pretraining solve: relative residual", *both(lambda m: _solve(m, "pretrain"))),
    ]


def models_c_and_d(r: Result) -> str:
    """Section 4.4's table of models C and D, from :func:`model_rows`."""
    rows = ["| quantity | model C | model D |", "|---|---|---|"]
    return "\n".join(rows + [f"| {q} | {c} | {d} |" for q, c, d in model_rows(r)])


def language_models(runs: Mapping[str, Result]) -> str:
    """Section 4.5: each run's corpus, perplexity, accuracies against baselines, parameters.

    Beside the classifier (the FFN on the frozen states): a linear probe on the same states,
    bag-of-words on the tweets' own words and on the language model's vocabulary, and the
    majority class.
    """
    rows = [
        "| run | sentences | vocabulary | held-out perplexity | "
        "classifier accuracy | linear probe | bag-of-words | bag of LM words | "
        "majority class | parameters W + U | Theta | all |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, r in runs.items():
        a, n, d = r["accuracy"], r["parameters"], r["data"]
        rows.append(
            f"| {label} | {d['sentences']:,} | {d['vocab']:,} "
            f"| {r['perplexity']['held_out']:.0f} | {a['classifier']:.1%} | "
            f"{a['linear_probe']:.1%} | {a['bag_of_words']:.1%} | "
            f"{a['bag_of_lm_words']:.1%} | {a['majority']:.1%} | "
            f"{n['W'] + n['U']:,} | {n['Theta']:,} | {n['W'] + n['U'] + n['Theta']:,} |"
        )
    return "\n".join(rows)


def cell_text(s: str) -> str:
    """Text safe inside a Markdown table cell: no column bars, no line breaks."""
    return s.replace("|", "/").replace("\n", " ")


def table1(r: Result) -> str:
    """Section 4.5's Table 1: each test tweet's largest and smallest |score| sentence."""
    rows = [
        "| test tweet (label) | largest \\|score\\| | sentence "
        "| smallest \\|score\\| | sentence |",
        "|---|---|---|---|---|",
    ]
    for row in r["table"]["rows"]:
        label = ("positive", "negative")[row["label"] == 0]
        rows.append(
            f"| {cell_text(row['tweet'])} ({label}) | {row['max_score']:.3g} "
            f"| {cell_text(row['max_sentence'])} | "
            f"{row['min_score']:.3g} | {cell_text(row['min_sentence'])} |"
        )
    return "\n".join(rows)


def similarity_replicates(study: Result) -> str:
    """A converged paired study (4.3's A/B, 4.4's C/D): one row a finetuning seed, then the
    spread over seeds."""
    x, y = pair_of(study)
    lam = study["damping"]
    rows = [
        f"| finetuning seed | test accuracy {x}, {y} | \\|\\|u\\|\\| {x}, {y} | "
        f"residual {x}, {y} | ratio of means {x}/{y} | "
        f"median of \\|{x}(z)\\| / \\|{y}(z)\\| | share with \\|{x}(z)\\| > \\|{y}(z)\\| |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in study["replicates"]:
        t, c = r["tasks"], r["comparison"]
        residual = [
            next(
                p["relative_residual"]
                for p in reversed(t[k]["path"])
                if p["damping"] == lam
            )
            for k in (x, y)
        ]
        seed = r["finetune_seed"]
        rows.append(
            f"| {'0 (the default)' if seed is None else seed} | "
            f"{t[x]['finetune_accuracy']:.1%}, {t[y]['finetune_accuracy']:.1%} | "
            f"{t[x]['u_norm']:.3g}, {t[y]['u_norm']:.3g} | "
            f"{residual[0]:.1e}, {residual[1]:.1e} | {c['ratio_of_means']:.2f} | "
            f"{c['median_ratio']:.2f} | {c['share_larger']:.0%} |"
        )
    spread = study["ratio_of_means"]
    rows.append(
        f"| all seeds | | | | {spread['mean']:.2f} [{spread['min']:.2f}, "
        f"{spread['max']:.2f}] | | |"
    )
    return "\n".join(rows)


def converged_ratios(rows: Iterable[tuple[str, str, Result, float]]) -> str:
    """Figs. 5 and 6 from the converged, replicated studies: each study's ratio of means per
    finetuning seed beside the paper's ratio. ``rows``: (figure, study label, study, paper)."""
    out = [
        "| figure | study | converged at damping | ratio of means, per finetuning seed | "
        "paper |",
        "|---|---|---|---|---|",
    ]
    for figure, label, study, paper in rows:
        lam = study["damping"]
        converged = "yes" if study["converged"][f"{lam:.6g}"] else "**no**"
        x, y = pair_of(study)
        per_seed = ", ".join(f"{r:.2f}" for r in study["ratio_of_means"]["per_seed"])
        out.append(
            f"| {figure} ({x}/{y}) | {label} | {converged}, {lam:.3g} | {per_seed} | "
            f"{paper:.2f} |"
        )
    return "\n".join(out)
