"""Rung 3 against the weight decay: the choice of removals, the groups, and the report."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import TINY

from experiments import decay_report
from experiments.decay_sweep import DecayConfig, decay_point, size_ratios, top_and_random


def test_top_and_random_takes_the_largest_magnitudes_then_a_disjoint_draw():
    scores = torch.tensor([0.1, -5.0, 0.2, 3.0, -0.3, 0.05, 0.4, -0.01, 2.0, 0.0])
    chosen = top_and_random(scores, 3, seed=1)
    assert chosen[:3] == [1, 3, 8]  # |-5| > |3| > |2|, negatives included
    assert len(set(chosen)) == 6 and not set(chosen[3:]) & {1, 3, 8}
    assert chosen == top_and_random(scores, 3, seed=1)  # the draw is seeded
    with pytest.raises(ValueError, match="k: expected 3 to 5"):
        top_and_random(scores, 6)


def test_size_ratios_are_one_where_the_prediction_holds():
    assert size_ratios([1.0, -2.0, 0.5], [1.0, -3.0, 0.25]) == [1.0, 1.5, 0.5]
    assert math.isnan(size_ratios([0.0], [1.0])[0])


def test_decay_point_measures_each_group_on_its_own_removals():
    run = decay_point(0.03, DecayConfig(decays=(0.03,), per_group=3, converged=TINY))
    assert run["isolated"] and run["l2"] == 0.03 and len(run["indices"]) == 6
    push = min(run["removed_gradient_norms"]) / run["m"]
    assert max(max(pair) for pair in run["retrained_gradient_norms"]) < 1e-3 * push
    top, random = run["groups"]["top"], run["groups"]["random"]
    assert top["ratios"] == pytest.approx(
        [a / p for p, a in zip(run["predicted"][:3], run["measured"][:3])]
    )
    assert random["agreement"]["n"] == 3
    rows = decay_report.points({"l2=0.03": run})
    assert rows[0]["top"]["median_ratio"] == pytest.approx(sorted(top["ratios"])[1])
    assert "3 drawn at random" in decay_report.table(rows)


def test_report_keeps_a_decay_without_an_isolated_minimum():
    rows = decay_report.points({"l2=0": {"l2": 0.0, "isolated": False, "error": "x"}})
    assert "not positive definite" in decay_report.table(rows)
