"""Section 4.3's helpers: the step-by-step Algorithm 1 and the cosine.

The magnitude comparison moved to experiments.stats; its tests are in test_stats.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_experiment import TINY, cache, tiny_data  # noqa: F401 (fixtures)

from experiments import scoring, sec43, transfer_training

torch.set_num_threads(1)


def test_cosine():
    a = torch.tensor([1.0, 0.0, 1.0])
    assert sec43._cosine(a, 2 * a) == pytest.approx(1.0)
    assert sec43._cosine(a, -a) == pytest.approx(-1.0)
    assert sec43._cosine(a, torch.tensor([0.0, 5.0, 0.0])) == 0.0
    assert sec43._cosine(a, torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(
        1 / math.sqrt(2)
    )


def test_influence_vectors_give_the_scores_of_transfer_scores(tiny_data, cache):  # noqa: F811
    config = TINY.replace(case="fixed", cg_iters=20)
    trained = transfer_training.train_transfer(config, tiny_data)
    out = sec43.influence_vectors(config, tiny_data, trained)
    scores, _ = scoring.transfer_scores(config, tiny_data, trained)
    assert torch.allclose(
        out["scores"], scores, rtol=1e-5, atol=1e-6 * scores.abs().max()
    )
    assert out["u"].shape == out["v2"].shape
