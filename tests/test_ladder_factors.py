"""Between rungs 3 and 1, one factor at a time: Appendix B's continued training on rung 3's
optimum, rung 3 under a time budget, and the report that reads them."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from tiny_models import TINY

from experiments import factors_report, ladder_report
from experiments.converged_loo import converged_optimum
from experiments.data import DatasetNotFoundError
from experiments.fit import batch_indices, snapshot
from experiments.ladder_factors import (
    ProtocolConfig,
    burned_in_states,
    coarse_to_fine,
    continued_test_loss,
    decay_factor,
    orders_summary,
    protocol_factor,
)

STEPS = ProtocolConfig(
    converged=TINY,
    pretrain_steps=3,
    finetune_steps=2,
    batch_size=16,
    seeds=(1, 2),
    burn_in=4,
)


@pytest.fixture(scope="module")
def optimum():
    try:
        return converged_optimum(TINY)
    except DatasetNotFoundError as error:
        pytest.skip(f"needs MNIST: {error}")


def test_coarse_to_fine_is_an_order_whose_prefixes_spread():
    order = coarse_to_fine(40)
    assert sorted(order) == list(range(40))
    assert order[:4] == [0, 39, 13, 26]  # the ends, then the thirds
    assert max(order[:8]) - min(order[:8]) == 39
    assert coarse_to_fine(1) == [0] and sorted(coarse_to_fine(5)) == list(range(5))


def test_continued_training_is_controlled_and_leaves_the_optimum_as_it_was(optimum):
    at = snapshot(optimum.pre.params)
    original = optimum.test_loss()
    control = continued_test_loss(optimum, STEPS, seed=1)
    assert continued_test_loss(optimum, STEPS, seed=1) == control  # the same batches
    assert all(torch.equal(a, b) for a, b in zip(at, optimum.pre.params))
    assert optimum.test_loss() == original
    assert control[0] != original  # the steps alone move the test loss
    drawn = torch.cat(list(batch_indices(120, steps=3, batch_size=16, seed=1)))
    never = next(i for i in range(120) if i not in set(drawn.tolist()))
    once = next(i for i in range(120) if (drawn == i).sum() >= 1)
    # a removed example that no batch draws changes nothing: the difference is exactly 0
    assert continued_test_loss(optimum, STEPS, 1, never)[0] == control[0]
    assert continued_test_loss(optimum, STEPS, 1, once)[0] != control[0]
    states = burned_in_states(optimum, STEPS)
    assert all(torch.equal(a, b) for a, b in zip(at, optimum.pre.params))
    assert states[0]["state"][0]["step"] == STEPS.burn_in
    resumed = continued_test_loss(optimum, STEPS, 1, None, states)
    assert resumed[0] != control[0]  # the moments change where the steps go


def test_orders_summary_reads_agreeing_and_noisy_orders():
    predicted = [1.0, 2.0, 3.0, 4.0, 5.0]
    same = orders_summary(predicted, predicted, [predicted, predicted])
    assert same["mean test-retest r"] == pytest.approx(1.0)
    assert same["ceiling"] == pytest.approx(1.0) and same["mean"] == predicted
    noisy = orders_summary(
        predicted, predicted, [[1.0, 3.0, 2.0, 5.0, 4.0], [2.0, 1.0, 4.0, 3.0, 5.0]]
    )
    assert noisy["orders"] == 2 and noisy["ceiling"] < 1
    assert noisy["mean"] == [1.5, 2.0, 3.0, 4.0, 4.5]


def test_protocol_factor_lays_its_measurements_out_as_rung_3():
    try:
        # 8 batches of 16 draw each of the 120 examples at least once
        run = protocol_factor(dataclasses.replace(STEPS, pretrain_steps=8))
    except DatasetNotFoundError as error:
        pytest.skip(f"needs MNIST: {error}")
    assert len(run["indices"]) == len(run["measured"]) == TINY.removals
    assert run["measured"] == run["orders_measured"][0]
    assert all(x != 0 for x in run["measured"])  # every removal was drawn
    assert [c["seed"] for c in run["controls"]] == list(STEPS.seeds)
    assert run["mean_of_orders"]["orders"] == 2
    assert len(run["fresh"]["orders_measured"]) == 1
    assert run["fresh"]["measured"] != run["measured"]  # another start, other steps
    assert run["agreement"]["n"] == TINY.removals


def test_decay_factor_stops_at_its_budget_with_a_spread_of_removals():
    try:
        run = decay_factor(0.03, [5, 6, 7, 8, 9], TINY, budget_minutes=0.0)
    except DatasetNotFoundError as error:
        pytest.skip(f"needs MNIST: {error}")
    # the first removal starts before the budget is looked at; none after it
    assert run["isolated"] and run["completed"]["removals"] == 1
    assert run["completed"]["of"] == 5
    assert run["indices"] == [5] and run["agreement"] is None
    assert "too few" in factors_report.decay_paragraph(run, CONVERGED)


def test_the_networks_are_described_from_their_modules():
    small = factors_report.describe(factors_report.small_mnist(4, 6, (3, 5)).embedding)
    assert small == {
        "input": (14, 14),
        "input_pooling": "average",
        "pooling": "average",
        "channels": [3, 5],
    }
    sentence = factors_report.networks_sentence((4, 8))
    assert "14 x 14" in sentence and "28 x 28" in sentence and "the max" in sentence


CONVERGED = {
    "indices": [10, 11, 12, 13, 14, 15],
    "predicted": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    "measured": [1.0, 2.1, 2.9, 4.0, 5.1, 6.0],
    "agreement": {"pearson_r": 0.999, "spearman_rho": 1.0, "n": 6},
    "identity": {"pearson_r": 0.3, "spearman_rho": 0.2, "n": 6},
    "minutes": 27.0,
}


def protocol_run(measured: list[float]) -> dict:
    fit = {"pearson_r": 0.1, "spearman_rho": 0.1, "n": 6}
    return {
        "config": {
            "converged": {"l2": 0.03},
            "pretrain_steps": 100,
            "finetune_steps": 100,
            "batch_size": 512,
            "lr": 1e-3,
            "burn_in": 100,
        },
        "m": 2000,
        "n_test": 500,
        # the same removals as CONVERGED, in another order
        "indices": [15, 14, 13, 12, 11, 10],
        "predicted": [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
        "identity_predicted": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
        "measured": measured,
        "pushes": [1e-4] * 6,
        "controls": [
            {"drift": -0.5, "gradient_norms": {"pretraining": 1e-2, "finetuning": 1e-3}}
        ],
        "agreement": fit,
        "identity": fit,
        "mean_of_orders": {
            "orders": 3,
            "mean": measured,
            "score": fit,
            "identity": fit,
            "mean test-retest r": 0.5,
            "ceiling": 0.8,
        },
        "fresh": {"agreement": fit},
    }


def test_a_factor_moves_r_only_where_the_paired_interval_excludes_zero():
    noise = protocol_run([0.3, -1.0, 2.0, -0.5, 1.0, 0.2])
    diff = factors_report.against_rung3(noise, CONVERGED)
    assert diff.n == 6 and factors_report.moves(diff)
    assert "moves r" in factors_report.protocol_paragraph(noise, CONVERGED)
    kept = protocol_run([6.1, 4.9, 4.0, 3.0, 2.1, 0.9])
    diff = factors_report.against_rung3(kept, CONVERGED)
    assert not factors_report.moves(diff) and abs(diff.difference) < 0.01
    text = factors_report.protocol_paragraph(kept, CONVERGED)
    assert "does not move r" in text and "100 times the median push" in text


def test_factor_steps_sit_after_rung_3_in_the_ladder():
    fit = {"pearson_r": 0.5, "spearman_rho": 0.5, "n": 6}
    ladder = {"converged": {**CONVERGED, "agreement": fit, "identity": fit}}
    rung1 = {
        "agreement": {"controlled": fit},
        "identity": {"agreement": {"controlled": fit}},
        "validation": {"predicted": [1.0, 2.0, 3.0], "controlled": [1.0, 2.0, 2.0]},
    }
    orders = {"orders": 3, "score": fit, "identity": fit}
    factors = {
        "protocol": protocol_run([1.0, 2.0, 3.0, 4.0, 5.0, 7.0]),
        "decay": {"l2": 1e-4, "isolated": False, "error": "not isolated"},
    }
    rows = ladder_report.rungs(ladder, rung1, orders, factors)
    assert [r["key"] for r in rows] == [
        "converged",
        "protocol",
        "protocol-mean",
        "appendix-mean",
        "appendix",
    ]
    table = ladder_report.table(rows, ladder)
    assert "mean of 3 orders" in table
    assert math.isclose(rows[1]["size_gap"], 9 / math.sqrt(91))
    (decay,) = factors_report.paragraphs({"decay": factors["decay"]}, CONVERGED)
    assert "No isolated minimum" in decay


def test_the_protocol_paragraph_sets_r_beside_rung_1s():
    kept = protocol_run([6.1, 4.9, 4.0, 3.0, 2.1, 0.9])
    kept["agreement"] = {"pearson_r": 0.95, "spearman_rho": 0.9, "n": 40}
    low = {"agreement": {"controlled": {"pearson_r": -0.3, "spearman_rho": 0.1, "n": 90}}}
    assert factors_report.above_rung1(kept, low)
    assert "wholly below" in factors_report.protocol_paragraph(kept, CONVERGED, low)
    close = {
        "agreement": {"controlled": {"pearson_r": 0.9, "spearman_rho": 0.9, "n": 90}}
    }
    assert not factors_report.above_rung1(kept, close)
    assert "overlap" in factors_report.protocol_paragraph(kept, CONVERGED, close)
