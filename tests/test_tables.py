"""The chapters' Markdown tables (experiments.tables, ladder_report, damping_report) hold their results' numbers.

Small hand-made results pin the layout and each cell's wording; the committed results in
book/results/ check that every row a table shows is the stored value, formatted.
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
    tables,
)
from experiments.stats import Agreement, format_r


def body(table: str) -> list[list[str]]:
    """A Markdown table's data rows as lists of stripped cells (header and rule dropped)."""
    rows = table.split("\n")
    assert set(rows[1]) <= set("|-"), "the second line is the header rule"
    return [[c.strip() for c in row.strip("|").split(" | ")] for row in rows[2:]]


def columns(table: str) -> int:
    return table.split("\n")[0].count("|") - 1


def test_every_row_has_as_many_cells_as_the_header():
    experiments = stored("sec41")["experiments"]
    for table in (
        tables.size_and_sign(experiments),
        tables.assumptions(experiments),
        tables.beside_paper(experiments),
    ):
        n = columns(table)
        assert all(len(row) == n for row in body(table))


def test_beside_paper_gives_each_experiment_its_stored_r_and_interval():
    experiments = stored("sec41")["experiments"]
    rows = body(tables.beside_paper(experiments))
    identity = sum("identity" in e for e in experiments.values())
    assert len(rows) == len(experiments) + identity
    named = {row[0]: row for row in rows}
    for name, e in experiments.items():
        fit = e["agreement"]["controlled"]
        row = named[f"{paper_numbers.FIGURE[name]} {tables.LABEL[name]}"]
        low, high = Agreement(**fit).interval()
        assert row[1:5] == [
            f"{paper_numbers.PAPER_R[name]:.2f}",
            f"{fit['pearson_r']:.2f}",
            f"[{low:.2f}, {high:.2f}]",
            f"{fit['spearman_rho']:.2f}",
        ]
        assert row[5:] == [str(fit["n"]), e["scale"]]


def test_size_and_sign_of_a_hand_made_validation():
    predicted = [3.0, -2.0, 1.5, 0.1, -0.05, 0.02]
    measured = [6.0, 4.0, 3.0, 0.2, -0.1, 0.04]  # the second large one has the wrong sign
    r = {
        "validation": {"predicted": predicted, "controlled": measured},
        "agreement": {"controlled": {"pearson_r": 0.5}},
    }
    ((name, n, r_, _, same, ratio, spread),) = body(tables.size_and_sign({"toy": r}))
    assert (name, n, r_) == ("toy", "6", "0.50")
    assert same == "75%" and ratio == "2.0"
    large, small = np.abs(measured[:4]).mean(), np.abs(measured[4:]).mean()
    assert spread == f"{large / small:.1f}"


def test_rescored_is_none_without_a_rescoring_and_shows_before_and_after():
    plain = {"m": 10, "agreement": {"controlled": {"pearson_r": 0.4}}}
    assert tables.rescored({"a": plain}) is None
    rescored = {
        **plain,
        "rescored": {
            "before": {
                "exact zeros": 1200,
                "agreement": {"controlled": {"pearson_r": 0.1}},
            },
            "after": {"exact zeros": 0},
        },
    }
    assert body(tables.rescored({"a": plain, "b": rescored})) == [
        ["b", "10", "1,200", "0", "0.10", "0.40"]
    ]


def test_retest_table_states_the_attainable_r():
    experiments = stored("sec41")["experiments"]
    for name, r in experiments.items():
        if "retest" not in r:
            continue
        ((row_name, retest_r, attainable, _, _),) = body(tables.retest(name, r))
        stored_r = r["retest"]["agreement"]["with the first measurement"]["pearson_r"]
        assert row_name == name and retest_r == f"{stored_r:.2f}"
        assert attainable == f"{np.sqrt(max(stored_r, 0)):.2f}"


def test_cg_words_and_paper_value():
    assert tables.cg_words([]) == "none"
    assert (
        tables.cg_words([{"iterations": 5, "relative_residual": 0.001}] * 2)
        == "5, 1.0e-03; 5, 1.0e-03"
    )
    assert tables.paper_value(float("nan"), ".2f") == "not reported"
    assert tables.paper_value(0.625, ".2f") == "0.62"


def test_config_differences_names_each_departure_from_appendix_b():
    table = tables.config_differences(configs.SECTION_41, configs.PAPER, configs.CPU)
    for name in configs.SECTION_41:
        diff = diagnostics.differences(configs.PAPER[name], configs.CPU[name])
        rows = [row for row in body(table) if row[0] == name]
        if diff:
            assert {row[1].strip("`") for row in rows} == set(diff)
        else:
            assert len(rows) == 1 and rows[0][1] == "none: Appendix B scale"


def test_cleansing_table_pairs_each_condition_with_the_papers():
    summary = {
        "none": {"seeds": [0, 1], "mean": 0.50, "std": 0.01},
        "top": {
            "seeds": [0, 1],
            "mean": 0.51,
            "std": 0.02,
            "difference": {"mean": 0.01, "paired_t_p": 0.3},
        },
        "random": {
            "seeds": [0],
            "mean": 0.49,
            "std": float("nan"),
            "difference": {"mean": -0.01},
        },
    }
    rows = body(tables.cleansing(summary, {"none": 0.5815, "top": 0.5836}))
    assert rows[0] == ["`none`", "2", "50.00% ± 1.00%", "—", "—", "58.15%", "—"]
    assert rows[1] == [
        "`top`",
        "2",
        "51.00% ± 2.00%",
        "+1.00 points",
        "0.30",
        "58.36%",
        "+0.21 points",
    ]
    assert rows[2][2:5] == ["49.00%", "-1.00 points", "no test (one seed)"]


def test_ladder_table_marks_the_targets_met_on_the_stored_ladder():
    ladder = stored("sec41_ladder")["experiments"]
    rung1 = stored("sec41")["experiments"]["mnist-fixed"]
    m1 = {
        "orders": 2,
        "seeds": [1, 7],
        "score": {"pearson_r": 0.2, "spearman_rho": 0.1, "n": 30},
    }
    m1 |= {"identity": {"pearson_r": 0.1, "spearman_rho": 0.1, "n": 30}}
    rungs = ladder_report.rungs(ladder, rung1, m1)
    rows = body(ladder_report.table(rungs, ladder))
    assert len(rows) == len(rungs) and rows[-1][0] == "1: Appendix B, one order"
    by_key = dict(zip((r["key"] for r in rungs), rows))
    assert by_key["converged"][-1] == f"{ladder_report.TARGETS['converged']} (met)"
    for key in ("converged", "proximal"):
        assert by_key[key][6] == f"{diagnostics.size_gap(ladder[key]):.1%}"
        assert by_key[key][4] == format_r(Agreement(**ladder[key]["agreement"]))
    v = rung1["validation"]
    gap = diagnostics.size_gap({"predicted": v["predicted"], "measured": v["controlled"]})
    assert by_key["appendix"][6] == f"{gap:.1%}"
    assert by_key["appendix-mean"][6] == "-"  # no one prediction for a mean of orders


def test_damping_table_has_one_row_a_damping_and_skips_undefined_cells():
    sweep = stored("sec41_damping")
    rows = body(damping_report.table(sweep))
    dampings = sorted({r["damping"] for r in sweep["rows"]})
    assert [row[0] for row in rows] == [f"{d:.0e}" for d in dampings]
    skipped = sum("skipped" in r for r in sweep["rows"])
    assert sum(cell == "skipped" for row in rows for cell in row) == skipped
    row = sweep["rows"][0]
    if "controlled" in row:
        at = dampings.index(row["damping"])
        column = damping_report.COLUMNS.index((row["stage"], row["on"])) + 1
        assert rows[at][
            column
        ] == f"{row['controlled']['pearson_r']:.2f} ({row['iterations']} it.)" + (
            " †" if damping_report.stopped(row) else ""
        )
    marked = sum(cell.endswith("†") for row in rows for cell in row)
    assert marked == sum(
        damping_report.stopped(r) for r in sweep["rows"] if "controlled" in r
    )


def test_section_43_to_45_tables_on_the_stored_runs():
    similarity = stored("sec43")["experiments"]["cifar10-similarity"]
    ((label, m, n_t, mean_a, mean_b, ratio, median, share),) = body(
        tables.score_comparison({"cpu": similarity})
    )
    c = similarity["comparison"]
    assert (mean_a, mean_b, ratio) == (
        f"{c['mean_abs'][0]:.4g}",
        f"{c['mean_abs'][1]:.4g}",
        f"{c['ratio_of_means']:.2f}",
    )
    a, b = (np.abs(similarity["tasks"][t]["scores"]) for t in "AB")
    assert median == f"{np.median(a / b):.2f}" and share == f"{np.mean(a > b):.0%}"
    study = stored("sec43")["experiments"]["cifar10-similarity-converged"]
    rows = body(tables.similarity_replicates(study))
    assert len(rows) == len(study["replicates"]) + 1  # a row a seed, and the spread
    for row, r in zip(rows, study["replicates"]):
        assert row[4] == f"{r['comparison']['ratio_of_means']:.2f}"
    sizes = stored("sec44")["experiments"][sec44.FIRST_RUN]
    rows = dict((q, (a, b)) for q, a, b in tables.model_rows(sizes))
    for k, model in zip("CD", (0, 1)):
        assert (
            rows["finetuning examples"][model]
            == f"{sizes['models'][k]['config']['finetune_size']:,}"
        )
    assert body(tables.models_c_and_d(sizes))[0][0] == "finetuning examples"
    (tweets,) = stored("sec45")["experiments"].values()
    rows = body(tables.table1(tweets))
    assert len(rows) == len(tweets["table"]["rows"])
    assert all(len(row) == 5 for row in rows), "no tweet may break the table with a |"
    assert tables.cell_text("a|b\nc") == "a/b c"


@pytest.mark.parametrize("fraction", [0.01, 0.5])
def test_top_share(fraction):
    scores = [-10.0] + [1.0] * 99
    expected = 10 / 109 if fraction == 0.01 else (10 + 49) / 109
    assert diagnostics.top_share(scores, fraction) == pytest.approx(expected)


def test_converged_ratios_gives_each_seed_and_marks_an_unconverged_study():
    def study(pair, ratios, converged):
        return {
            "pair": pair,
            "damping": 0.5,
            "converged": {"0.5": converged},
            "ratio_of_means": {"per_seed": ratios},
        }

    rows = body(
        tables.converged_ratios(
            [
                ("Fig. 5", "seed 0", study(["A", "B"], [1.13, 1.551], True), 1.87),
                ("Fig. 6", "F the sum", study(["C", "D"], [9.0], False), 1.47),
            ]
        )
    )
    assert rows[0] == ["Fig. 5 (A/B)", "seed 0", "yes, 0.5", "1.13, 1.55", "1.87"]
    assert rows[1] == ["Fig. 6 (C/D)", "F the sum", "**no**, 0.5", "9.00", "1.47"]
