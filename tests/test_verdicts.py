"""The chapters' sentences (experiments.verdicts, ladder_report, damping_report) say what their numbers say.

Each function is checked on small hand-made results, where the right wording is known, and on the
committed results in book/results/, where every number a sentence states must be the stored one.
"""

from __future__ import annotations

import numpy as np
import pytest
from committed import stored

from experiments import (
    configs,
    damping_report,
    diagnostics,
    ladder_report,
    paper_numbers,
    sec44,
    verdicts,
)
from experiments.stats import Agreement, format_r, paired_magnitudes


def fit(r: float, n: int) -> dict:
    return {"pearson_r": r, "spearman_rho": r, "n": n}


@pytest.mark.parametrize(
    ("r", "n", "paper", "side", "words"),
    [
        (0.9, 200, 0.5, "above", "above the paper's value"),
        (0.1, 200, 0.9, "below", "missed: the interval lies below the paper's value"),
        (0.3, 10, 0.4, "within", "within noise of the paper's value, and of zero"),
        (0.6, 200, 0.62, "within", "within noise of the paper's value, and above zero"),
    ],
)
def test_verdict_reads_the_interval_against_the_paper(r, n, paper, side, words):
    assert verdicts.interval_side(fit(r, n), paper) == side
    assert verdicts.verdict(fit(r, n), paper) == words


def test_verdict_clause_states_the_interval_it_judges_by():
    low, high = Agreement(**fit(0.3, 10)).interval()
    clause = verdicts.verdict_clause(fit(0.3, 10), 0.4)
    assert clause.startswith("is within noise of the paper's 0.40")
    assert f"{low:.2f} to {high:.2f}" in clause and clause.endswith("holds it and zero")
    assert verdicts.verdict_clause(fit(0.1, 200), 0.9).startswith("misses")
    assert verdicts.verdict_clause(fit(0.9, 200), 0.5).startswith(
        "exceeds the paper's 0.50"
    )


def test_solve_words_tell_a_capped_solve_from_a_converged_one():
    capped = {
        "solver": "CG(iters=200, tol=1e-06)",
        "iterations": 200,
        "relative_residual": 0.03,
    }
    done = {
        "solver": "CG(iters=200, tol=1e-06)",
        "iterations": 17,
        "relative_residual": 1e-7,
    }
    assert verdicts.solve_words([capped], "pretraining") == (
        "the pretraining solve stopped at its limit of 200 iterations, "
        "at a relative residual of 3.0e-02"
    )
    assert "solve ran 17 iterations" in verdicts.solve_words([done], "finetuning")
    assert verdicts.solve_words([], "finetuning") == "no finetuning solve"


def test_lever_sentence_says_when_one_removal_sets_the_sign():
    f = {"r": -0.3, "r without lever": 0.1, "lever index": 42, "lever pairs": 2}
    text = verdicts.lever_sentence(f)
    assert "pretraining image 42 (Fig. 4 pairs it with 2 of" in text
    assert "and sets its sign: without it r is 0.10." in text
    same = verdicts.lever_sentence({**f, "r without lever": -0.5, "lever pairs": 0})
    assert "sets its sign" not in same and "Fig. 4" not in same


def test_lever_is_the_removal_that_moves_r_most():
    # one outlier carries the correlation: without it the rest are uncorrelated
    predicted = [0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 10.0]
    measured = [1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 10.0]
    r = {
        "validation": {
            "predicted": predicted,
            "controlled": measured,
            "indices": list(range(100, 107)),
        },
        "agreement": {
            "controlled": fit(float(np.corrcoef(predicted, measured)[0, 1]), 7)
        },
    }
    lever = diagnostics.lever(r)
    assert (
        lever["index"] == 106
        and abs(lever["r without"]) < 0.5 < r["agreement"]["controlled"]["pearson_r"]
    )


def test_size_sentence_and_sizes_on_a_measurement_twice_the_prediction():
    predicted = [3.0, -2.0, 1.5, 0.1, -0.05, 0.02]
    r = {"validation": {"predicted": predicted, "controlled": [2 * p for p in predicted]}}
    s = diagnostics.sizes(r)
    assert s["same sign"] == 1.0 and s["ratio"] == pytest.approx(2.0)
    assert s["magnitude r"] == pytest.approx(1.0)
    text = verdicts.size_sentence(s)
    assert "about 2 times the predicted ones" in text and "for 100% of" in text


def test_in_short_sorts_runs_by_their_test_retest_r():
    facts = {
        "a": {"retest r": 0.05, "magnitude r": 0.1},
        "b": {"retest r": 0.7, "magnitude r": 0.6},
        "c": {"magnitude r": 0.9},  # never retested: named nowhere
    }
    text = verdicts.in_short(facts)
    assert "noise (a: test-retest r 0.05)" in text
    assert "reproducible (b: 0.70), the r between magnitudes (b: 0.60)" in text
    assert "c:" not in text


def test_the_gap_paragraphs_state_the_stored_numbers():
    experiments = stored("sec41")["experiments"]
    facts = {name: diagnostics.facts(name, e) for name, e in experiments.items()}
    for name, f in facts.items():
        e = experiments[name]
        assert f["r"] == e["agreement"]["controlled"]["pearson_r"]
        low, high = Agreement(**e["agreement"]["controlled"]).interval()
        assert (f["low"], f["high"]) == (low, high)
    mnist = verdicts.mnist_gap(facts["mnist-fixed"])
    f = facts["mnist-fixed"]
    assert mnist.startswith(f"**{paper_numbers.FIGURE['mnist-fixed']}, MNIST")
    assert (
        f"Our r is {f['r']:.2f} (95% interval {f['low']:.2f} to {f['high']:.2f}" in mnist
    )
    assert f"against the paper's {paper_numbers.PAPER_R['mnist-fixed']:.2f}" in mnist
    assert verdicts.verdict(f["fit"], f["paper"]) in mnist
    cifar = verdicts.cifar_fixed_gap(
        facts["cifar10-fixed"], configs.PAPER["cifar10-fixed"]
    )
    paper = configs.PAPER["cifar10-fixed"]
    assert (
        f"instead of {paper.retrain_pretrain_steps:,} + {paper.retrain_finetune_steps:,}"
        in cifar
    )
    assert f"{facts['cifar10-fixed']['accuracy']:.1%} test accuracy" in cifar
    updated = verdicts.cifar_updated_gap(facts["cifar10-updated"])
    g = facts["cifar10-updated"]
    assert f"from {g['original loss']:.2f} to {g['control loss']:.2f} nats" in updated
    if "retest r" in f:
        retest = verdicts.mnist_retest(f)
        assert f"test-retest r of {f['retest r']:.2f}" in retest
        assert f"an r of about {np.sqrt(max(f['retest r'], 0)):.1f}" in retest
    identity = verdicts.identity_gap(f, paper_numbers.PAPER_R["mnist-identity"])
    assert f"r = {f['identity r']:.2f} against the paper's" in identity
    assert ("tracks the short continued training better" in identity) == (
        f["identity r"] > f["r"]
    )


def test_the_ladder_paragraphs_state_the_stored_numbers():
    ladder = stored("sec41_ladder")["experiments"]
    rung1 = stored("sec41")["experiments"]["mnist-fixed"]
    m1 = {
        "orders": 2,
        "seeds": [1, 7],
        "score": fit(0.2, 30),
        "mean test-retest r": 0.6,
        "ceiling": 0.87,
    }
    paragraphs = ladder_report.paragraphs(ladder, rung1, m1)
    c = ladder["converged"]
    push, worst = ladder_report.converged_worst(c)
    assert worst < 1e-3 * push
    assert paragraphs[0].startswith("**Rung 3.**")
    assert f"r = {format_r(Agreement(**c['agreement']))}" in paragraphs[0]
    assert f"by {diagnostics.size_gap(c):.1%} in relative norm" in paragraphs[0]
    p = ladder["proximal"]
    (mnist,) = [t for t in paragraphs if t.startswith("**Rung 2, the stored MNIST")]
    assert f"r = {format_r(Agreement(**p['agreement']))}" in mnist
    assert f"by {diagnostics.size_gap(p):.1%} in relative norm" in mnist
    eff = ladder_report.effective(p)
    assert eff["n"] + eff["at_floor"] == p["agreement"]["n"]
    assert f"the effective n is {eff['n']}" in mnist
    assert paragraphs[-1] == ladder_report.rung1_paragraph(rung1, m1)
    assert "mean of 2 batch orders (seeds 1, 7), r = 0.20 (n = 30)" in paragraphs[-1]
    assert ("**Case 2, the first attempt.**" in "".join(paragraphs)) == (
        "proximal-updated-failed" in ladder
    )


def test_stationarity_paragraph_compares_the_gradient_with_the_pushes():
    above = ladder_report.stationarity_paragraph(1e-2, [1.0, 2.0, 3.0], 1000)
    assert "is 5 times the median push" in above and "for 100% of them" in above
    below = ladder_report.stationarity_paragraph(1e-6, [1.0, 2.0, 3.0], 1000)
    assert below.endswith("below the median push 2.0e-03 of the removals.")


def test_damping_paragraph_reads_the_stored_sweep():
    sweep = stored("sec41_damping")
    lam = sweep["appendix_b"]["pretrain"]
    text = damping_report.paragraph(sweep, stored_r=0.123, finetune_residual=3e-3)
    ours = diagnostics.sweep_row(sweep, "pretrain", "H^2", lam)
    assert (
        f"gives back r = {ours['controlled']['pearson_r']:.2f} beside the stored run's 0.12"
        in text
    )
    s = damping_report.summed_reading(sweep)
    assert s["below"] <= s["summed"] <= s["above"]
    assert s["summed"] == pytest.approx(lam / sweep["hessian_examples"] ** 2)
    assert f"{s['summed']:.0e} on the mean $H^2$" in text
    best = max(
        (r for r in sweep["rows"] if "controlled" in r),
        key=lambda r: r["controlled"]["pearson_r"],
    )
    assert damping_report.stopped(best)  # the stored grid's best is a truncated solve
    assert f"the largest on the whole grid, {best['controlled']['pearson_r']:.2f}" in text
    for stage, row in damping_report.best_converged(sweep).items():
        assert not damping_report.stopped(row) and row["stage"] == stage
        assert (
            f"{row['controlled']['pearson_r']:.2f} for {damping_report.STAGES[stage]}"
            in text
        )


def test_magnitude_comparison_states_the_paired_view_of_the_stored_scores():
    run = stored("sec44")["experiments"][sec44.FIRST_RUN]
    text = verdicts.magnitude_comparison(run)
    assert text.startswith(
        f"ratio of means C / D {run['comparison']['ratio_of_means']:.2f}"
    )
    c = paired_magnitudes(run["models"]["C"]["scores"], run["models"]["D"]["scores"])
    assert f"is {c['median_ratio']:.2f}" in text and f"{c['share_larger']:.0%} of" in text
